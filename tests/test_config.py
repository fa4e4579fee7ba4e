"""FeatureConfig: the defaults of DESIGN.md, validation, and serialisation."""

from __future__ import annotations

import json
import pickle

import pytest

from ser_edge import FeatureConfig


def test_defaults_are_the_design_values():
    c = FeatureConfig()
    assert (c.sample_rate, c.frame_length, c.hop_length, c.n_fft) == (16000, 400, 160, 512)
    assert (c.window, c.n_mels, c.fmin, c.fmax, c.mel_scale, c.mel_norm) == ("hamming", 40, 0.0, 8000.0, "htk", "none")
    assert (c.n_mfcc, c.mfcc_include_c0, c.power_floor, c.log_floor) == (13, False, 1e-10, 1e-10)
    assert (c.f0_min, c.f0_max) == (80.0, 400.0)
    assert c.blocks == ("spectrogram", "mfcc")
    assert c.dim == 270 and c.n_bins == 257
    assert c.frame_s == pytest.approx(0.025) and c.hop_s == pytest.approx(0.010)
    assert c.block_slices() == {"spectrogram": slice(0, 257, 1), "mfcc": slice(257, 270, 1)}


def test_presets():
    assert FeatureConfig.preset("seed") == FeatureConfig()
    assert FeatureConfig.preset("logmel").dim == 40
    assert FeatureConfig.preset("mfcc").dim == 13
    with pytest.raises(ValueError, match="unknown FeatureConfig preset 'nope'"):
        FeatureConfig.preset("nope")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"hop_length": 0}, "hop_length"),
        ({"hop_length": -160}, "hop_length"),
        ({"hop_length": 401}, "hop_length"),
        ({"frame_length": 0}, "frame_length"),
        ({"frame_length": 600}, "frame_length"),
        ({"n_fft": 500}, "n_fft"),
        ({"n_fft": 8}, "n_fft"),
        ({"sample_rate": 0}, "sample_rate"),
        ({"fmax": 9000.0}, "fmax"),
        ({"fmin": 8000.0}, "fmax"),
        ({"fmin": -1.0}, "fmin"),
        ({"blocks": []}, "blocks"),
        ({"blocks": ["mfcc", "mfcc"]}, "blocks"),
        ({"blocks": ["pitch"]}, "blocks"),
        ({"window": "kaiser"}, "window"),
        ({"mel_scale": "bark"}, "mel_scale"),
        ({"mel_norm": "area"}, "mel_norm"),
        ({"n_mels": 0}, "n_mels"),
        ({"n_mfcc": 40}, "n_mfcc"),
        ({"n_mfcc": 0}, "n_mfcc"),
        ({"power_floor": 0.0}, "power_floor"),
        ({"power_floor": 1e-39}, "power_floor"),
        ({"power_floor": float("inf")}, "power_floor"),
        ({"log_floor": -1.0}, "log_floor"),
        ({"log_floor": 1e-44}, "log_floor"),
        ({"n_mels": -1, "blocks": ["spectrogram"]}, "n_mels"),
        ({"n_mels": 2**31 - 1, "blocks": ["spectrogram"]}, "n_mels"),
        ({"n_mels": 1}, "n_mels"),
        ({"f0_min": 0.0}, "f0_min"),
        ({"f0_min": float("nan")}, "f0_min"),
        ({"f0_max": 80.0}, "f0_max"),
        ({"f0_min": 300.0, "f0_max": 200.0}, "f0_max"),
        ({"f0_max": 8000.5}, "f0_max"),
        ({"f0_min": 79.9, "blocks": ["prosody"]}, "f0_min"),
        ({"frame_length": 399, "blocks": ["mfcc", "prosody"]}, "f0_min"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(fields, field):
    with pytest.raises(ValueError, match=rf"^FeatureConfig\.{field}: "):
        FeatureConfig(**fields)


def test_prosody_block_adds_three_values_in_any_order():
    c = FeatureConfig(blocks=["spectrogram", "prosody", "mfcc"])
    assert c.dim == FeatureConfig().dim + 3
    assert c.block_slices() == {"spectrogram": slice(0, 257, 1), "prosody": slice(257, 260, 1), "mfcc": slice(260, 273, 1)}
    assert FeatureConfig(blocks=["prosody"]).dim == 3


def test_prosody_frame_constraint_names_the_fix():
    with pytest.raises(ValueError, match=r"^FeatureConfig\.f0_min: must be >= 80 Hz .*frame_length >= 534, got 60$"):
        FeatureConfig(f0_min=60.0, blocks=["prosody"])
    # Without the prosody block the F0 range is not tied to the frame.
    assert FeatureConfig(f0_min=60.0).f0_min == 60.0
    assert FeatureConfig(f0_min=60.0, frame_length=534, n_fft=1024, blocks=["prosody"]).dim == 3


def test_json_without_the_prosody_fields_loads_with_their_defaults():
    fields = FeatureConfig(blocks=["logmel"]).to_dict()
    del fields["f0_min"], fields["f0_max"]
    assert FeatureConfig.from_json(json.dumps(fields)) == FeatureConfig(blocks=["logmel"])


def test_unknown_and_mistyped_fields_are_rejected():
    with pytest.raises(TypeError, match="unknown field.*hop_size"):
        FeatureConfig(hop_size=160)
    with pytest.raises(TypeError, match="FeatureConfig.n_fft"):
        FeatureConfig(n_fft="big")
    with pytest.raises(TypeError, match="list of block names"):
        FeatureConfig(blocks="mfcc")
    with pytest.raises(TypeError, match="mfcc_include_c0"):
        FeatureConfig(mfcc_include_c0=0.5)
    with pytest.raises(TypeError, match="FeatureConfig.window"):
        FeatureConfig(window=b"hann")
    with pytest.raises(TypeError, match="FeatureConfig.f0_min"):
        FeatureConfig(f0_min="low")


def test_error_messages_print_numbers_plainly():
    with pytest.raises(ValueError, match=r"must be <= sample_rate / 2 \(4000 Hz\), got 5000$"):
        FeatureConfig(sample_rate=8000, fmax=5000.0)


def test_negative_zero_is_the_same_config_everywhere():
    a, b = FeatureConfig(fmin=-0.0), FeatureConfig()
    assert a == b and hash(a) == hash(b) and a.to_json() == b.to_json()


def test_from_dict_takes_any_mapping():
    import types

    c = FeatureConfig(n_mels=64)
    assert FeatureConfig.from_dict(types.MappingProxyType(c.to_dict())) == c


def test_round_trips_through_dict_json_and_pickle():
    c = FeatureConfig(n_mels=64, n_mfcc=20, blocks=["logmel", "prosody", "mfcc"], mel_scale="slaney", fmin=20.0,
                      f0_min=90.0, f0_max=500.0)
    assert FeatureConfig.from_dict(c.to_dict()) == c
    assert FeatureConfig.from_json(c.to_json()) == c
    assert pickle.loads(pickle.dumps(c)) == c
    assert json.loads(c.to_json())["blocks"] == ["logmel", "prosody", "mfcc"]
    assert (json.loads(c.to_json())["f0_min"], json.loads(c.to_json())["f0_max"]) == (90.0, 500.0)
    assert hash(FeatureConfig.from_json(c.to_json())) == hash(c)
    assert c != FeatureConfig()
    assert c.replace(f0_max=400.0) != c and hash(c.replace(f0_max=500.0)) == hash(c)


def test_replace_makes_a_validated_copy():
    c = FeatureConfig()
    d = c.replace(hop_length=80)
    assert d.hop_length == 80 and c.hop_length == 160
    e = c.replace(f0_min=100.0, f0_max=300.0)
    assert (e.f0_min, e.f0_max) == (100.0, 300.0) and (c.f0_min, c.f0_max) == (80.0, 400.0)
    with pytest.raises(ValueError, match="hop_length"):
        c.replace(hop_length=0)


def test_config_is_immutable():
    with pytest.raises(AttributeError):
        FeatureConfig().hop_length = 80


def test_repr_shows_every_field():
    r = repr(FeatureConfig())
    for key in FeatureConfig().to_dict():
        assert f"{key}=" in r


@pytest.mark.parametrize("n", [0, 1, 399, 400, 401, 559, 560, 561, 16000, 123457])
def test_frame_count_formula(n):
    assert FeatureConfig().num_frames(n) == max(0, 1 + (n - 400) // 160)
