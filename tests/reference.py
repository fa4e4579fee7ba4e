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
