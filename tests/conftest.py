"""Shared fixtures: the emotional-speech corpora in ../shared/data, when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

def pytest_configure(config) -> None:
    """One thread for PyTorch and ONNX Runtime sessions made by the tests: the suite runs on
    small, often shared machines, where more threads than free cores make it many times slower."""
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(1)


def session(path):
    """An ONNX Runtime CPU session with one thread."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


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
