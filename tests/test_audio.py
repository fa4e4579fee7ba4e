"""Tests for ser_edge.audio: reading, mixing to mono, resampling, chunked reading, errors."""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ser_edge.audio import DEFAULT_RATE, AudioError, StreamResampler, iter_chunks, load, to_mono

TONE_HZ = 440.0
# Not a whole number of seconds or blocks, so rounding at the ends is exercised.
DURATION_S = 1.3


def _shared_data() -> Path:
    """The shared corpora: $SER_EDGE_DATA, else ../shared/data next to the project root."""
    env = os.environ.get("SER_EDGE_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _tone(rate: int, channels: int) -> np.ndarray:
    t = np.arange(round(DURATION_S * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * TONE_HZ * t)
    # Channels differ in level only, so their average is still a pure 440 Hz tone.
    return np.stack([tone * (1 - 0.3 * c) for c in range(channels)], axis=1)


# name: (file name, rate in Hz, channels, soundfile format, subtype)
FILES = {
    "wav-44k-stereo-int16": ("tone.wav", 44100, 2, "WAV", "PCM_16"),
    "flac-44k-stereo": ("tone.flac", 44100, 2, "FLAC", "PCM_16"),
    "ogg-vorbis-48k-stereo": ("tone.ogg", 48000, 2, "OGG", "VORBIS"),
    "wav-16k-mono-int16": ("tone16k.wav", 16000, 1, "WAV", "PCM_16"),
}


@pytest.fixture(params=sorted(FILES))
def tone_file(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    name, rate, channels, fmt, subtype = FILES[request.param]
    path = tmp_path / name
    sf.write(path, _tone(rate, channels), rate, format=fmt, subtype=subtype)
    return path


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_default_rate_is_the_feature_rate() -> None:
    from ser_edge.features import FeatureConfig

    assert DEFAULT_RATE == FeatureConfig().sample_rate == 16000


def test_load_returns_16k_mono_float32_of_the_right_length_and_pitch(tone_file: Path) -> None:
    frames, file_rate = sf.info(str(tone_file)).frames, sf.info(str(tone_file)).samplerate
    samples = load(tone_file)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) - frames * 16000 / file_rate) <= 2
    assert abs(_peak_hz(samples, 16000) - TONE_HZ) <= 1.0


def test_load_honours_another_target_rate(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    sf.write(path, _tone(44100, 1), 44100, subtype="PCM_16")
    samples = load(path, rate=8000)
    assert len(samples) == round(DURATION_S * 8000)
    assert abs(_peak_hz(samples, 8000) - TONE_HZ) <= 1.0


def test_load_averages_stereo_channels(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    stereo = (0.3 * rng.standard_normal((4000, 2))).astype(np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, stereo, 16000, subtype="FLOAT")
    # Same rate, so no resampling: the result is exactly the channel average.
    expected = (stereo[:, 0] + stereo[:, 1]) / np.float32(2)
    np.testing.assert_array_equal(load(path), expected)


def test_to_mono_averages_frames_by_channels_layout() -> None:
    stereo = np.array([[1.0, 0.0], [0.5, -0.5], [0.25, 0.75]])
    mono = to_mono(stereo)
    assert mono.dtype == np.float32
    np.testing.assert_array_equal(mono, [0.5, 0.0, 0.5])
    np.testing.assert_array_equal(to_mono(np.array([0.1, 0.2])), np.float32([0.1, 0.2]))


@pytest.mark.parametrize(
    "shape", [(), (2, 3, 4), (10, 0)], ids=["scalar", "3-d", "no-channels"]
)
def test_to_mono_rejects_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="frames, channels"):
        to_mono(np.zeros(shape, dtype=np.float32))


def test_to_mono_rejects_unsupported_dtypes() -> None:
    with pytest.raises(TypeError, match="float32, float64 or int16"):
        to_mono(np.zeros(10, dtype=np.int32))


RATE_PAIRS = [(44100, 16000), (48000, 16000), (8000, 16000)]
SIGNAL_LEN = 2500


def _signal(n: int = SIGNAL_LEN) -> np.ndarray:
    rng = np.random.default_rng(42)
    t = np.arange(n) / 8000
    return (0.4 * np.sin(2 * np.pi * 300 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


@functools.cache
def _one_shot(in_rate: int, out_rate: int) -> np.ndarray:
    return StreamResampler(in_rate, out_rate).process(_signal(), last=True)


@pytest.mark.parametrize(("in_rate", "out_rate"), RATE_PAIRS)
@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(0, SIGNAL_LEN), max_size=40))
@example(cuts=list(range(SIGNAL_LEN + 1)))  # 1-sample chunks, then an empty last one
@example(cuts=[0, 0, 1, 1, 1, 2, SIGNAL_LEN - 1])  # empty chunks among 1-sample ones
@example(cuts=[])  # the whole signal in one call
def test_chunked_resampling_equals_one_shot_for_any_chunking(
    in_rate: int, out_rate: int, cuts: list[int]
) -> None:
    x = _signal()
    bounds = [0, *sorted(cuts), SIGNAL_LEN]
    resampler = StreamResampler(in_rate, out_rate)
    pieces = [
        resampler.process(x[a:b], last=i == len(bounds) - 2)
        for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
    ]
    chunked = np.concatenate(pieces)
    assert chunked.dtype == np.float32
    np.testing.assert_array_equal(chunked, _one_shot(in_rate, out_rate))


@pytest.mark.parametrize(("in_rate", "out_rate"), [*RATE_PAIRS, (22050, 16000), (16000, 8000)])
def test_one_shot_stream_equals_soxr_resample_with_the_rounded_length(
    in_rate: int, out_rate: int
) -> None:
    x = _signal()
    out = StreamResampler(in_rate, out_rate).process(x, last=True)
    np.testing.assert_array_equal(out, soxr.resample(x, in_rate, out_rate, quality="HQ"))
    assert len(out) == round(SIGNAL_LEN * out_rate / in_rate)


def test_same_rate_is_an_exact_pass_through() -> None:
    x = _signal()
    resampler = StreamResampler(16000, 16000)
    first = resampler.process(x[:1000])
    rest = resampler.process(x[1000:], last=True)
    np.testing.assert_array_equal(np.concatenate([first, rest]), x)
    assert not np.shares_memory(first, x)


def test_int16_chunks_are_scaled_by_1_over_32768() -> None:
    pcm = np.array([-32768, -1, 0, 1, 16384, 32767], dtype=np.int16)
    scaled = pcm.astype(np.float32) / np.float32(32768)
    np.testing.assert_array_equal(StreamResampler(16000, 16000).process(pcm), scaled)
    np.testing.assert_array_equal(
        StreamResampler(44100, 16000).process(np.tile(pcm, 100), last=True),
        StreamResampler(44100, 16000).process(np.tile(scaled, 100), last=True),
    )


def test_float64_chunks_are_resampled_as_float32() -> None:
    x = _signal()
    np.testing.assert_array_equal(
        StreamResampler(44100, 16000).process(x.astype(np.float64), last=True),
        _one_shot(44100, 16000),
    )


@pytest.mark.parametrize("in_rate", [44100, 16000])
def test_process_after_last_needs_reset_which_starts_afresh(in_rate: int) -> None:
    x = _signal()
    resampler = StreamResampler(in_rate, 16000)
    first = resampler.process(x, last=True)
    with pytest.raises(RuntimeError, match="reset"):
        resampler.process(x)
    resampler.reset()
    np.testing.assert_array_equal(resampler.process(x, last=True), first)


def test_resampler_exposes_its_rates() -> None:
    resampler = StreamResampler(np.int64(44100))
    assert (resampler.in_rate, resampler.out_rate) == (44100, 16000)
    assert type(resampler.in_rate) is int


@pytest.mark.parametrize(
    ("rate", "error"),
    [(0, ValueError), (-16000, ValueError), (16000.0, TypeError), (True, TypeError)],
)
def test_invalid_rates_are_rejected(rate: object, error: type[Exception]) -> None:
    with pytest.raises(error, match="in_rate"):
        StreamResampler(rate, 16000)  # type: ignore[arg-type]
    with pytest.raises(error, match="out_rate"):
        StreamResampler(16000, rate)  # type: ignore[arg-type]
    with pytest.raises(error, match="rate"):
        load("never-opened.wav", rate=rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(10, 2), ()], ids=["2-d", "scalar"])
def test_process_rejects_chunks_that_are_not_1d(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="1-D"):
        StreamResampler(44100).process(np.zeros(shape, dtype=np.float32))


@pytest.mark.parametrize("chunk_s", [0.01, 0.5, 10.0])
def test_iter_chunks_concatenated_equals_load(tone_file: Path, chunk_s: float) -> None:
    chunks = list(iter_chunks(tone_file, chunk_s=chunk_s))
    assert all(c.dtype == np.float32 and c.ndim == 1 and c.size for c in chunks)
    np.testing.assert_array_equal(np.concatenate(chunks), load(tone_file))
    if chunk_s < DURATION_S:
        assert len(chunks) > 1
        # Bounded by the block size plus one of the blocks soxr releases output in (a few
        # hundred samples), whatever the file's length.
        assert max(map(len, chunks)) <= math.ceil(chunk_s * 16000) + 2048


@pytest.mark.parametrize("chunk_s", [0, -0.5, math.nan, math.inf])
def test_iter_chunks_rejects_non_positive_chunk_size_when_called(chunk_s: float) -> None:
    with pytest.raises(ValueError, match="chunk_s"):
        iter_chunks("never-opened.wav", chunk_s=chunk_s)


def _make_corrupt(path: Path) -> None:
    path.write_bytes(np.random.default_rng(7).bytes(4096))


def _make_empty(path: Path) -> None:
    path.write_bytes(b"")


def _make_text(path: Path) -> None:
    path.write_text("this is not audio\n" * 50)


def _make_directory(path: Path) -> None:
    path.mkdir()


def _make_nothing(path: Path) -> None:
    pass


def _make_zero_frames(path: Path) -> None:
    sf.write(path, np.zeros((0, 1), dtype=np.float32), 16000, subtype="PCM_16")


def _make_truncated_header(path: Path) -> None:
    sf.write(path, _tone(16000, 1), 16000, subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:30])


# name: (file name, how to make it, words the message must contain)
BAD_FILES = {
    "corrupt": ("noise.wav", _make_corrupt, "supported: WAV, FLAC, OGG"),
    "empty": ("empty.wav", _make_empty, "empty (0 bytes)"),
    "text": ("notes.txt", _make_text, "convert it to WAV"),
    "directory": ("clips", _make_directory, "directory"),
    "missing": ("missing.wav", _make_nothing, "no such file"),
    "no-frames": ("silence.wav", _make_zero_frames, "no audio samples"),
    "truncated-header": ("cut.wav", _make_truncated_header, "truncated or corrupt"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("reader", [load, lambda p: list(iter_chunks(p))], ids=["load", "iter"])
def test_unreadable_files_raise_audio_error_naming_the_file(
    tmp_path: Path, kind: str, reader: object
) -> None:
    name, make, reason = BAD_FILES[kind]
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as info:
        reader(path)  # type: ignore[operator]
    message = str(info.value)
    assert name in message and reason in message


# corpus: (glob under the shared data folder, the clips' rate in Hz)
CORPORA = {"urdu": ("urdu/*/*.wav", 44100), "emodb-2s": ("emodb-2s/wav/*.wav", 22050)}


@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_real_clips_load_at_16k_with_their_duration(corpus: str) -> None:
    pattern, rate = CORPORA[corpus]
    root = _shared_data()
    clips = sorted(root.glob(pattern))
    if not clips:
        pytest.skip(f"shared data absent: no {pattern} under {root} (set SER_EDGE_DATA)")
    clip = clips[0]
    header = sf.info(str(clip))
    assert header.samplerate == rate
    samples = load(clip)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert abs(len(samples) / 16000 - header.frames / header.samplerate) <= 1e-3
    np.testing.assert_array_equal(np.concatenate(list(iter_chunks(clip, chunk_s=0.25))), samples)


def test_importing_audio_loads_no_training_frameworks() -> None:
    code = (
        "import sys, ser_edge.audio; "
        "print(sorted({'torch', 'librosa', 'onnx', 'onnxruntime'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_a_wav_cut_short_inside_its_data_is_reported_as_damaged(tmp_path):
    import numpy as np
    import soundfile as sf

    from ser_edge.audio import AudioError, load

    whole = tmp_path / "whole.wav"
    sf.write(whole, 0.1 * np.sin(np.arange(32000) / 7.0), 16000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[:20000])  # the header still promises 64000 bytes
    with pytest.raises(AudioError, match="damaged"):
        load(cut)
    assert len(load(whole)) == 32000  # an intact file reads as before
    odd = tmp_path / "odd.wav"  # an extra chunk before the data, odd-sized, is walked over
    data = whole.read_bytes()
    odd.write_bytes(data[:12] + b"LIST" + (3).to_bytes(4, "little") + b"abc\x00" + data[12:])
    riff = len(odd.read_bytes()) - 8
    odd.write_bytes(odd.read_bytes()[:4] + riff.to_bytes(4, "little") + odd.read_bytes()[8:])
    assert len(load(odd)) == 32000
