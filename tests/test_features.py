"""The C++ feature core against a float64 reference of its definition (DESIGN.md)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

import ser_edge
from ser_edge import FeatureConfig, extract
from ser_edge import _core
from ser_edge.audio import load

from reference import blocks, mel_matrix

ALL_BLOCKS = FeatureConfig(blocks=["spectrogram", "logmel", "mfcc"])
SR = 16000

# Tolerances. The core computes in float32; the reference in float64.
# - spectrogram: float32 FFT rounding is ~1e-7 of a frame's peak magnitude, so bins far below
#   the peak carry more relative error. Bins within 60 dB of their frame's peak must agree to
#   2e-3 dB; every bin must agree in linear power to 1e-5 of the frame's peak power
#   (measured: about 1.5e-6 at worst, on a full-scale square wave).
# - logmel (ln) and MFCC: absolute 1e-3 (a mel band gathers many bins, so it is far more exact).
SPEC_DB_TOL = 2e-3
SPEC_LINEAR_TOL = 1e-5
LOG_TOL = 1e-3


def _signals() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261121)
    t = np.arange(2 * SR) / SR
    return {
        "white_noise": 0.1 * rng.standard_normal(2 * SR),
        "tone_440hz": 0.5 * np.sin(2 * np.pi * 440 * t),
        "tone_at_nyquist_edge": 0.5 * np.sin(2 * np.pi * 7990 * t),
        "chirp_100_to_7900hz": scipy.signal.chirp(t, 100, t[-1], 7900) * 0.5,
        "full_scale_square": np.sign(np.sin(2 * np.pi * 200 * t)),
        "silence": np.zeros(2 * SR),
        "noise_at_minus_80_dbfs": 1e-4 * rng.standard_normal(2 * SR),
        "silence_then_tone": np.concatenate([np.zeros(SR), 0.3 * np.sin(2 * np.pi * 1000 * t[:SR])]),
    }


SIGNALS = _signals()


def assert_blocks_match(x: np.ndarray, config: FeatureConfig) -> None:
    x = np.asarray(x, dtype=np.float32)
    got = extract(x, config)
    ref = blocks(x, config)
    assert got.shape == (config.num_frames(len(x)), config.dim)
    for name, where in config.block_slices().items():
        g = got[:, where].astype(np.float64)
        r = ref[name]
        if name == "spectrogram":
            P = ref["power"]
            peak = P.max(axis=1, keepdims=True)
            near_peak = P >= 1e-6 * peak
            assert np.abs(g - r)[near_peak].max(initial=0.0) <= SPEC_DB_TOL, name
            linear = 10.0 ** (g / 10.0)
            ok = np.abs(linear - np.maximum(P, config.power_floor)) <= SPEC_LINEAR_TOL * np.maximum(peak, config.power_floor)
            assert ok.all(), f"{name}: {np.count_nonzero(~ok)} bins off"
        else:
            np.testing.assert_allclose(g, r, rtol=0, atol=LOG_TOL, err_msg=name)


@pytest.mark.parametrize("name", sorted(SIGNALS))
def test_every_block_matches_float64_reference_on_synthetic_signals(name):
    assert_blocks_match(SIGNALS[name], ALL_BLOCKS)


def test_every_block_matches_float64_reference_on_real_clips(real_clips):
    for path in real_clips:
        assert_blocks_match(load(path, SR), ALL_BLOCKS)


@pytest.mark.parametrize(
    "fields",
    [
        {"mel_scale": "slaney", "mel_norm": "slaney"},
        {"n_fft": 1024, "frame_length": 1024, "hop_length": 256, "n_mels": 64, "n_mfcc": 20},
        {"window": "hann", "fmin": 60.0, "fmax": 7600.0, "mfcc_include_c0": True},
        {"sample_rate": 8000, "fmax": 4000.0, "n_fft": 256, "frame_length": 200, "hop_length": 80, "n_mels": 23},
        {"n_fft": 64, "frame_length": 63, "hop_length": 63, "n_mels": 8, "n_mfcc": 5},
        {"frame_length": 401 - 2, "hop_length": 399, "blocks": ["mfcc", "spectrogram", "logmel"]},
    ],
    ids=["slaney", "long_frames", "hann_band_limited_c0", "narrowband", "tiny_fft_odd_frame", "hop_is_frame_reordered"],
)
def test_options_match_reference(fields):
    config = ALL_BLOCKS.replace(**fields)
    x = SIGNALS["chirp_100_to_7900hz"]
    assert_blocks_match(x * 0.5 + 0.01 * SIGNALS["white_noise"], config)


@pytest.mark.parametrize("scale", [1e6, 1e18, 3e38])
def test_huge_finite_input_gives_finite_features(scale):
    x = (np.random.default_rng(1).uniform(-1.0, 1.0, 1600) * scale).astype(np.float32)
    feats = extract(x, ALL_BLOCKS)
    assert np.isfinite(feats).all()
    s = ALL_BLOCKS.block_slices()
    assert (feats[:, s["spectrogram"]] <= 10 * np.log10(np.finfo(np.float32).max) + 1e-3).all()


def test_silence_hits_the_floors_exactly_as_defined():
    feats = extract(np.zeros(SR, np.float32), ALL_BLOCKS)
    s = ALL_BLOCKS.block_slices()
    np.testing.assert_allclose(feats[:, s["spectrogram"]], -100.0, atol=1e-4)
    np.testing.assert_allclose(feats[:, s["logmel"]], np.log(1e-10), atol=1e-5)
    np.testing.assert_allclose(feats[:, s["mfcc"]], 0.0, atol=1e-5)


@pytest.mark.parametrize(
    "fields",
    [{"mel_scale": "htk", "mel_norm": "none"}, {"mel_scale": "slaney", "mel_norm": "slaney"}, {"n_mels": 80, "fmin": 20.0}],
)
def test_mel_filters_equal_librosa(fields):
    config = FeatureConfig(**fields)
    ref = mel_matrix(config)
    np.testing.assert_allclose(ser_edge.features.mel_filters(config), ref, rtol=1e-6, atol=1e-7 * ref.max())


@pytest.mark.parametrize("window", ["hamming", "hann"])
def test_analysis_window_is_symmetric(window):
    config = FeatureConfig(window=window)
    w = ser_edge.features.analysis_window(config)
    np.testing.assert_allclose(w, scipy.signal.get_window(window, 400, fftbins=False), atol=1e-7)
    np.testing.assert_array_equal(w, w[::-1])


@pytest.mark.parametrize("n", [2**k for k in range(4, 17)])
def test_real_fft_matches_numpy_for_every_supported_size(n):
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    ref = np.fft.rfft(x.astype(np.float64))
    got = _core.rfft(x)
    assert got.dtype == np.complex64 and got.shape == ref.shape
    # Measured: at most 1.8e-7 of the largest bin for every size.
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()


def test_real_fft_rejects_unsupported_sizes():
    with pytest.raises(ValueError, match="power of two"):
        _core.rfft(np.zeros(400, np.float32))

