"""FeatureStream: any chunking gives the one-shot frames bit for bit, with bounded memory."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ser_edge import FeatureConfig, FeatureStream, extract

CONFIG = FeatureConfig(blocks=["spectrogram", "logmel", "mfcc", "prosody"])
SIGNAL = (0.2 * np.random.default_rng(7).standard_normal(16000)).astype(np.float32)
ONE_SHOT = extract(SIGNAL, CONFIG)


def stream_in_chunks(signal: np.ndarray, sizes, config: FeatureConfig = CONFIG) -> np.ndarray:
    stream = FeatureStream(config)
    out, at, i = [], 0, 0
    while at < len(signal):
        n = sizes[i % len(sizes)]
        out.append(stream.accept(signal[at : at + n]))
        at += n
        i += 1
    return np.concatenate(out) if out else np.zeros((0, config.dim), np.float32)


@pytest.mark.parametrize("size", [1, 7, 160, 399, 400, 401, 4000, 100_000])
def test_stream_equals_one_shot_for_fixed_chunk_sizes(size):
    np.testing.assert_array_equal(stream_in_chunks(SIGNAL, [size]), ONE_SHOT)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=3000), min_size=1, max_size=40).filter(any))
def test_stream_equals_one_shot_for_any_chunking(sizes):
    np.testing.assert_array_equal(stream_in_chunks(SIGNAL, sizes), ONE_SHOT)


def test_one_sample_chunks_emit_each_frame_when_its_last_sample_arrives():
    stream = FeatureStream(CONFIG)
    for i in range(1200):
        frames = stream.accept(SIGNAL[i : i + 1])
        n = i + 1
        completes = n >= 400 and (n - 400) % 160 == 0
        assert len(frames) == (1 if completes else 0)
        if completes:
            np.testing.assert_array_equal(frames[0], ONE_SHOT[(n - 400) // 160])
    assert stream.frames_emitted == CONFIG.num_frames(1200)
    assert stream.samples_accepted == 1200


@pytest.mark.parametrize("n", [0, 1, 200, 399])
def test_empty_and_shorter_than_a_frame_give_no_frames(n):
    x = SIGNAL[:n]
    assert extract(x, CONFIG).shape == (0, CONFIG.dim)
    stream = FeatureStream(CONFIG)
    assert stream.accept(x).shape == (0, CONFIG.dim)
    assert stream.buffered_samples == n


def test_reset_starts_a_new_stream():
    stream = FeatureStream(CONFIG)
    stream.accept(SIGNAL[:1000])
    stream.reset()
    assert stream.buffered_samples == 0 and stream.frames_emitted == 0
    np.testing.assert_array_equal(stream.accept(SIGNAL), ONE_SHOT)


def test_memory_stays_bounded_for_an_hour_of_audio_in_10ms_chunks():
    config = FeatureConfig()
    stream = FeatureStream(config)
    chunk = 160
    block = (0.1 * np.random.default_rng(3).standard_normal(100 * chunk)).astype(np.float32)
    chunks = [block[i : i + chunk] for i in range(0, len(block), chunk)]
    largest = 0
    for i in range(3600 * 100):
        stream.accept(chunks[i % len(chunks)])
        largest = max(largest, stream.buffered_samples)
    assert largest < config.frame_length + chunk
    assert largest < config.frame_length  # tighter: only what the next frame needs is kept
    assert stream.frames_emitted == config.num_frames(3600 * 16000)


def test_two_streams_in_two_threads_equal_the_same_streams_run_in_turn():
    signals = [SIGNAL, (0.5 * np.sin(np.linspace(0, 3000, 16000))).astype(np.float32)]
    sizes = [[160], [37, 1000, 3]]
    expected = [stream_in_chunks(s, z) for s, z in zip(signals, sizes)]
    results: list = [None, None]

    def work(k: int) -> None:
        parts = []
        for _ in range(20):
            parts.append(stream_in_chunks(signals[k], sizes[k]))
        results[k] = parts

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in range(2):
        for part in results[k]:
            np.testing.assert_array_equal(part, expected[k])


def test_float64_and_int16_input_are_converted():
    np.testing.assert_array_equal(extract(SIGNAL.astype(np.float64), CONFIG), ONE_SHOT)
    pcm = (np.clip(SIGNAL, -1, 1) * 32767).astype(np.int16)
    np.testing.assert_array_equal(extract(pcm, CONFIG), extract(pcm.astype(np.float32) / 32768.0, CONFIG))
    stream = FeatureStream(CONFIG)
    np.testing.assert_array_equal(stream.accept(pcm), extract(pcm, CONFIG))


def test_non_contiguous_float32_input_is_accepted():
    wide = np.repeat(SIGNAL, 2)
    np.testing.assert_array_equal(extract(wide[::2], CONFIG), ONE_SHOT)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((2, 800), np.float32), "must be 1-D"),
        (np.zeros(800, np.int32), "dtype float32, float64 or int16"),
        (np.zeros(800, np.complex64), "dtype float32, float64 or int16"),
        ("not audio", "numpy array of audio samples, got str"),
    ],
)
def test_wrong_shape_or_dtype_raises_type_error(bad, message):
    with pytest.raises(TypeError, match=message):
        extract(bad, CONFIG)
    with pytest.raises(TypeError, match=message):
        FeatureStream(CONFIG).accept(bad)


@pytest.mark.parametrize("value, name", [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
def test_non_finite_samples_raise_value_error_naming_the_first_index(value, name):
    x = SIGNAL.copy()
    x[1234] = value
    x[5000] = value
    with pytest.raises(ValueError, match=rf"non-finite value \({name}\) at index 1234"):
        extract(x, CONFIG)
    stream = FeatureStream(CONFIG)
    stream.accept(SIGNAL[:100])
    with pytest.raises(ValueError, match=r"at index 1234"):
        stream.accept(x)
    # A rejected chunk leaves the stream as it was.
    assert stream.samples_accepted == 100
    np.testing.assert_array_equal(stream.accept(SIGNAL[100:]), ONE_SHOT)


@pytest.mark.parametrize(
    "fields",
    [{"hop_length": 400}, {"hop_length": 1}, {"n_fft": 1024, "frame_length": 1024, "hop_length": 333}],
    ids=["hop_equals_frame", "hop_of_one_sample", "long_odd_hop"],
)
def test_stream_equals_one_shot_for_other_framings(fields):
    config = CONFIG.replace(**fields)
    x = SIGNAL[:6000]
    expected = extract(x, config)
    assert len(expected) == config.num_frames(len(x))
    for sizes in ([1], [7], [160, 3, 1001]):
        np.testing.assert_array_equal(stream_in_chunks(x, sizes, config), expected)
