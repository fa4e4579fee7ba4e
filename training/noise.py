"""Additive noise for robustness tests: white, pink and babble, mixed at a given SNR."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["NOISE_KINDS", "active_power", "babble", "make_noise", "mix_at_snr", "pink", "white"]

NOISE_KINDS = ("white", "pink", "babble")


def white(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.standard_normal(n).astype(np.float32)


def pink(n: int, rng: np.random.Generator) -> np.ndarray:
    """1/f power spectrum: white noise shaped by 1/sqrt(f) in the frequency domain."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.arange(len(spectrum), dtype=np.float64)
    f[0] = 1.0  # keep DC finite; it is removed below
    spectrum /= np.sqrt(f)
    spectrum[0] = 0.0
    return np.fft.irfft(spectrum, n).astype(np.float32)


def babble(n: int, rng: np.random.Generator, talkers: Sequence[np.ndarray], count: int = 5) -> np.ndarray:
    """Sum of `count` other speakers' recordings (looped, at random offsets, equal power)."""
    if not talkers:
        raise ValueError("babble needs recordings of other speakers")
    out = np.zeros(n, np.float64)
    for i in rng.choice(len(talkers), size=min(count, len(talkers)), replace=False):
        x = np.asarray(talkers[i], dtype=np.float64)
        x = x / (np.sqrt(np.mean(x**2)) + 1e-12)
        start = int(rng.integers(len(x)))
        out += np.resize(np.roll(x, -start), n)
    return out.astype(np.float32)


def active_power(signal: np.ndarray, sample_rate: int = 16000, block_s: float = 0.01,
                 floor_db: float = 40.0) -> float:
    """Mean power of the active part of `signal`: the 10 ms blocks within `floor_db` of the
    loudest block (a simple active speech level), so that silence and zero padding do not
    lower the level a noise is set against."""
    x = np.asarray(signal, np.float64)
    block = max(1, int(round(block_s * sample_rate)))
    n = len(x) // block
    if n == 0:
        return float(np.mean(x**2)) if len(x) else 0.0
    powers = np.mean(x[: n * block].reshape(n, block) ** 2, axis=1)
    peak = float(powers.max())
    if peak == 0.0:
        return 0.0
    return float(powers[powers >= peak * 10.0 ** (-floor_db / 10.0)].mean())


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float, sample_rate: int = 16000) -> np.ndarray:
    """signal + noise scaled so that the ratio of the signal's active power (see
    `active_power`: speech, not its pauses or padding) to the noise's mean power is `snr_db`."""
    p_signal = active_power(signal, sample_rate)
    p_noise = float(np.mean(np.asarray(noise, np.float64) ** 2))
    if p_noise == 0.0 or p_signal == 0.0:
        return np.asarray(signal, np.float32).copy()
    gain = np.sqrt(p_signal / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (signal + gain * noise).astype(np.float32)


def make_noise(kind: str, n: int, rng: np.random.Generator, talkers: Sequence[np.ndarray] = ()) -> np.ndarray:
    if kind == "white":
        return white(n, rng)
    if kind == "pink":
        return pink(n, rng)
    if kind == "babble":
        return babble(n, rng, talkers)
    raise ValueError(f"unknown noise kind {kind!r}; choose from {', '.join(NOISE_KINDS)}")
