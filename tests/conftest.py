"""Shared fixtures: the emotional-speech corpora in ../shared/data, when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_DIR = Path(os.environ.get("SER_EDGE_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def corpus_clips(corpus: str) -> list[Path]:
    """WAV clips of one corpus ('urdu' or 'emodb-2s'), sorted; empty when the data is absent."""
    return sorted((DATA_DIR / corpus).rglob("*.wav")) if (DATA_DIR / corpus).is_dir() else []


@pytest.fixture(scope="session")
def real_clips() -> list[Path]:
    """A few real clips from each corpus; skips when ../shared/data is absent."""
    urdu, emodb = corpus_clips("urdu"), corpus_clips("emodb-2s")
    if not urdu or not emodb:
        pytest.skip(f"corpora not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding urdu/ and emodb-2s/)")
    return urdu[::97][:4] + emodb[::131][:4]
