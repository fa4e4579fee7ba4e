"""Shared fixtures: the emotional-speech corpora in ../shared/data, when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
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


def voiced(seconds: float, f0: float = 150.0, seed: int = 0, rate: int = 16000) -> np.ndarray:
    """A voiced sound: harmonics of f0 under a slow tremolo, plus a faint noise floor."""
    t = np.arange(int(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    return (0.1 * x + 1e-4 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


def quiet(seconds: float, seed: int = 1, rate: int = 16000) -> np.ndarray:
    """A faint noise floor (-80 dBFS), no speech."""
    return (1e-4 * np.random.default_rng(seed).standard_normal(int(seconds * rate))).astype(np.float32)


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
