"""Float64 reference of the feature definition in DESIGN.md, built from numpy/scipy/librosa."""

from __future__ import annotations

import librosa
import numpy as np
import scipy.fft
import scipy.signal

from ser_edge import FeatureConfig


def frames(x: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """[n_frames, frame_length] float64 frames, frame i = x[i*hop : i*hop + frame_length]."""
    n = config.num_frames(len(x))
    idx = np.arange(config.frame_length)[None, :] + config.hop_length * np.arange(n)[:, None]
    return np.asarray(x, dtype=np.float64)[idx]


def power_spectrum(x: np.ndarray, config: FeatureConfig) -> np.ndarray:
    window = scipy.signal.get_window(config.window, config.frame_length, fftbins=False)  # symmetric
    return np.abs(np.fft.rfft(frames(x, config) * window, n=config.n_fft)) ** 2


def mel_matrix(config: FeatureConfig) -> np.ndarray:
    return librosa.filters.mel(
        sr=config.sample_rate,
        n_fft=config.n_fft,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
        htk=config.mel_scale == "htk",
        norm=None if config.mel_norm == "none" else "slaney",
        dtype=np.float64,
    )


def blocks(x: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Every block of the definition, float64: spectrogram (dB), logmel (ln), mfcc, and power P."""
    P = power_spectrum(x, config)
    logmel = np.log(np.maximum(P @ mel_matrix(config).T, config.log_floor))
    first = 0 if config.mfcc_include_c0 else 1
    mfcc = scipy.fft.dct(logmel, type=2, norm="ortho", axis=-1)[:, first : first + config.n_mfcc]
    return {
        "power": P,
        "spectrogram": 10.0 * np.log10(np.maximum(P, config.power_floor)),
        "logmel": logmel,
        "mfcc": mfcc,
    }


YIN_THRESHOLD = 0.1


def yin_cmnd(x: np.ndarray, config: FeatureConfig) -> tuple[np.ndarray, int, int]:
    """YIN's cumulative-mean-normalised difference d'[frame, tau] (float64) and the lag range.

    d(tau) = sum_{j < W} (x[j] - x[j + tau])^2 with W = frame_length - tau_max;
    d'(tau) = d(tau) * tau / sum_{k=1..tau} d(k), and 1 where that sum is 0. Column tau of
    the result is d'(tau); column 0 is unused.
    """
    F = frames(x, config)
    sr, L = config.sample_rate, config.frame_length
    tau_min, tau_max = int(np.floor(sr / config.f0_max)), int(np.ceil(sr / config.f0_min))
    W = L - tau_max
    d = np.zeros((len(F), tau_max + 1))
    for tau in range(1, tau_max + 1):
        d[:, tau] = np.sum((F[:, :W] - F[:, tau : tau + W]) ** 2, axis=1)
    running = np.cumsum(d, axis=1)
    cmnd = np.ones_like(d)
    positive = running > 0
    cmnd[positive] = (d * np.arange(tau_max + 1))[positive] / running[positive]
    return cmnd, tau_min, tau_max


def prosody(x: np.ndarray, config: FeatureConfig, ambiguity: float = 1e-4) -> dict[str, np.ndarray]:
    """The prosody block in float64: log_f0, voicing, log_energy, plus per frame `voiced`,
    `lag` (the chosen integer lag) and `ambiguous`: a float32 computation could decide
    differently (some d' within `ambiguity` of the threshold, or, unvoiced, another local
    minimum within `ambiguity` of the global one)."""
    cmnd, tau_min, tau_max = yin_cmnd(x, config)
    n = len(cmnd)
    out = {k: np.zeros(n) for k in ("log_f0", "voicing", "log_energy")}
    voiced, lag, ambiguous = np.zeros(n, bool), np.zeros(n, int), np.zeros(n, bool)
    for i, c in enumerate(cmnd):
        search = c[tau_min : tau_max + 1]
        below = np.flatnonzero(search < YIN_THRESHOLD)
        ambiguous[i] = bool(np.any(np.abs(search - YIN_THRESHOLD) < ambiguity))
        if below.size:
            tau = tau_min + below[0]
            while tau < tau_max and c[tau + 1] < c[tau]:
                tau += 1
            voiced[i] = True
        else:
            tau = tau_min + int(np.argmin(search))
            inner = search[1:-1]
            is_min = (inner <= search[:-2]) & (inner <= search[2:])
            others = tau_min + 1 + np.flatnonzero(is_min)
            others = others[np.abs(others - tau) > 1]
            ambiguous[i] |= bool(np.any(c[others] - c[tau] < ambiguity))
        shift = 0.0
        if tau_min < tau < tau_max:
            a = c[tau + 1] + c[tau - 1] - 2.0 * c[tau]
            b = 0.5 * (c[tau + 1] - c[tau - 1])
            if abs(b) < abs(a):
                shift = -b / a
        lag[i] = tau
        f0 = config.sample_rate / (tau + shift) if voiced[i] else config.f0_min
        out["log_f0"][i] = np.log(f0)
        out["voicing"][i] = np.clip(1.0 - c[tau], 0.0, 1.0)
    out["log_energy"] = np.log(np.maximum(np.mean(frames(x, config) ** 2, axis=1), config.log_floor))
    return {**out, "voiced": voiced, "lag": lag, "ambiguous": ambiguous}
