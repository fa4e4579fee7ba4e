"""Audio input: read a file, mix it to mono and resample it to the features' rate.

`load` reads a whole file; `iter_chunks` reads the same file block by block (memory bounded
for long recordings) and yields exactly the same samples. `StreamResampler` is the chunked
resampler both use, also usable on live input. Rates are in Hz, durations in seconds.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from typing import Optional

import numpy as np
import numpy.typing as npt
import soundfile as sf
import soxr

from ser_edge.features import FeatureConfig

__all__ = ["DEFAULT_RATE", "AudioError", "StreamResampler", "iter_chunks", "load", "read", "to_mono"]

#: Rate in Hz that audio is delivered at unless asked otherwise: the rate the features
#: are defined at, so that `load(path)` feeds `ser_edge.features.extract` directly.
DEFAULT_RATE: int = FeatureConfig().sample_rate

# libsndfile's SF_ERR_UNRECOGNISED_FORMAT (sndfile.h): the bytes are not a format it reads.
_SF_ERR_UNRECOGNISED_FORMAT = 1

# libsndfile scales 16-bit PCM by 2**15 when it reads floats; int16 chunks use the same
# scale so that live int16 input and file input give the same samples.
_INT16_SCALE = np.float32(32768)

Samples = npt.NDArray[np.float32]


class AudioError(Exception):
    """A file cannot be used as audio: missing, a directory, empty, corrupt or unsupported.

    Deliberately neither `OSError` nor `ValueError`: these failures span both kinds (a
    missing path is an I/O error, a corrupt header is bad data), and callers such as a
    command line want one clause that means "skip or report this file". The message names
    the file and what to do; the original exception is chained as ``__cause__``.
    """


def _as_float32(samples: npt.ArrayLike) -> Samples:
    x = np.asarray(samples)
    if x.dtype == np.int16:
        return x.astype(np.float32) / _INT16_SCALE
    if x.dtype in (np.float32, np.float64):
        return np.asarray(x, dtype=np.float32, order="C")
    raise TypeError(
        f"audio samples must be float32, float64 or int16, got {x.dtype}; "
        "convert them first, e.g. samples.astype(np.float32)"
    )


def to_mono(samples: npt.ArrayLike) -> Samples:
    """Return `samples` as a new 1-D float32 array, averaging channels if there are several.

    Accepts 1-D samples, or 2-D ``[frames, channels]`` (soundfile's layout); float32,
    float64 or int16 (scaled by 1/32768). Raises ValueError for any other shape.
    """
    x = _as_float32(samples)
    if x.ndim == 1:
        return x.copy()
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(
            f"expected samples shaped [frames] or [frames, channels], got shape {x.shape}; "
            "transpose [channels, frames] input with samples.T"
        )
    # An explicit left-to-right sum makes each frame's mix depend on that frame alone, so
    # mixing block by block (iter_chunks) equals mixing the whole file (load) bit for bit;
    # np.mean's summation order may change with the array's shape.
    mono = x[:, 0].copy()
    for channel in range(1, x.shape[1]):
        mono += x[:, channel]
    mono /= np.float32(x.shape[1])
    return mono


def _check_rate(name: str, rate: int) -> int:
    if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
        raise TypeError(f"{name} must be a whole number of Hz, got {rate!r}")
    if rate <= 0:
        raise ValueError(f"{name} must be a positive number of Hz, got {rate}")
    return int(rate)


class StreamResampler:
    """Resamples a mono stream chunk by chunk, as if the whole signal were given at once.

    soxr's stream (quality 'HQ') carries its filter state from call to call, so how a
    signal is cut into chunks (even 1-sample or empty chunks) changes no output sample: the
    concatenated output of `process` equals a single ``process(signal, last=True)`` bit for
    bit, and that also equals ``soxr.resample(signal, in_rate, out_rate, quality='HQ')``
    (both pinned by tests/test_audio.py). Output lags input by the filter's delay: early
    chunks return fewer samples, and the call with ``last=True`` flushes the rest, for a
    total of ``n * out_rate / in_rate`` rounded to a whole sample.

    When ``in_rate == out_rate`` the samples pass through unchanged (only converted to
    float32), without soxr.
    """

    def __init__(self, in_rate: int, out_rate: int = DEFAULT_RATE) -> None:
        """Resample from `in_rate` to `out_rate`, both positive integers in Hz."""
        self._in_rate = _check_rate("in_rate", in_rate)
        self._out_rate = _check_rate("out_rate", out_rate)
        self.reset()

    @property
    def in_rate(self) -> int:
        """Rate of the input chunks, in Hz."""
        return self._in_rate

    @property
    def out_rate(self) -> int:
        """Rate of the returned samples, in Hz."""
        return self._out_rate

    def reset(self) -> None:
        """Forget all input so far, ready for a new, unrelated signal."""
        self._finished = False
        self._stream = (
            None
            if self._in_rate == self._out_rate
            else soxr.ResampleStream(
                self._in_rate, self._out_rate, 1, dtype="float32", quality="HQ"
            )
        )

    def process(self, chunk: npt.ArrayLike, last: bool = False) -> Samples:
        """Resample the next 1-D `chunk` (float32, float64 or int16; may be empty).

        Pass ``last=True`` with the final chunk (or an empty one) to flush the samples still
        held in the filter; after that, call `reset` before feeding another signal.
        Returns a new float32 array at `out_rate`, possibly empty.
        """
        if self._finished:
            raise RuntimeError(
                "this stream already ended with last=True; call reset() before feeding "
                "a new signal"
            )
        x = _as_float32(chunk)
        if x.ndim != 1:
            raise ValueError(
                f"chunk must be 1-D mono samples, got shape {x.shape}; mix channels with "
                "to_mono() first"
            )
        self._finished = last
        if self._stream is None:
            # A copy, as soxr returns: callers may reuse their input buffer for the next
            # chunk, and the output must not change under them.
            return x.copy()
        return self._stream.resample_chunk(x, last=last)


def _os_reason(err: OSError) -> str:
    if isinstance(err, FileNotFoundError):
        return "no such file; check the path"
    if isinstance(err, IsADirectoryError):
        return "it is a directory; pass one audio file"
    if isinstance(err, PermissionError):
        return "permission denied; check the file's permissions"
    return str(err.strerror or err)


def _libsndfile_reason(err: sf.LibsndfileError) -> str:
    reason = err.error_string.rstrip(".")
    if err.code != _SF_ERR_UNRECOGNISED_FORMAT:
        return f"{reason}; the file may be truncated or corrupt, re-export it"
    available = sf.available_formats()
    known = [name for name in ("WAV", "FLAC", "OGG", "MP3", "AIFF") if name in available]
    return (
        f"{reason} (supported: {', '.join(known)} and the rest of "
        "soundfile.available_formats(), via libsndfile); convert it to WAV first, "
        "e.g. with ffmpeg"
    )


def _truncated_wav(file) -> Optional[tuple[int, int]]:
    """(bytes the data chunk declares, bytes present) when a RIFF/WAVE file is cut short inside
    its data chunk (libsndfile then reads what is there and says nothing), else None."""
    position = file.tell()
    try:
        file.seek(0)
        head = file.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        size = os.fstat(file.fileno()).st_size
        offset = 12
        while offset + 8 <= size:
            file.seek(offset)
            chunk = file.read(8)
            declared = int.from_bytes(chunk[4:8], "little")
            if chunk[:4] == b"data":
                present = size - offset - 8
                # 0xFFFFFFFF and 0 are placeholders of streamed writers, not a promise.
                return (declared, present) if 0 < declared < 0xFFFFFFFF and present < declared else None
            offset += 8 + declared + (declared & 1)
        return None
    finally:
        file.seek(position)


@contextlib.contextmanager
def _opened(path: str | os.PathLike[str]) -> Iterator[sf.SoundFile]:
    """Open `path` for reading; every failure, at open or while reading, is an AudioError."""
    name = os.fspath(path)
    try:
        # Opened by Python rather than by libsndfile, whose only word for a missing file,
        # a directory or a permission problem is "System error".
        with open(path, "rb") as file, sf.SoundFile(file) as sound:
            if sound.frames == 0:
                raise AudioError(f"cannot read {name!r}: it contains no audio samples")
            short = _truncated_wav(file)
            if short is not None:
                raise AudioError(f"cannot read {name!r}: the file is damaged (cut short): its header promises "
                                 f"{short[0]} bytes of audio but only {short[1]} follow; re-copy or re-export it")
            yield sound
    except OSError as err:
        raise AudioError(f"cannot read {name!r}: {_os_reason(err)}") from err
    except sf.LibsndfileError as err:
        if os.path.getsize(path) == 0:
            raise AudioError(f"cannot read {name!r}: the file is empty (0 bytes)") from err
        raise AudioError(f"cannot read {name!r}: {_libsndfile_reason(err)}") from err


def read(path: str | os.PathLike[str]) -> tuple[npt.NDArray[np.float32], int]:
    """A file's samples as float32 [frames, channels] at its own rate, and that rate in Hz.

    Raises AudioError if the file is missing, empty, corrupt or in an unsupported format.
    """
    with _opened(path) as sound:
        return sound.read(dtype="float32", always_2d=True), sound.samplerate


def load(path: str | os.PathLike[str], rate: int = DEFAULT_RATE) -> Samples:
    """Read a whole audio file as mono float32 samples at `rate` Hz.

    Channels are averaged; any format libsndfile reads (WAV, FLAC, OGG, ...) is accepted.
    The result has about ``duration_s * rate`` samples. Raises AudioError if the file is
    missing, empty, corrupt or in an unsupported format.
    """
    rate = _check_rate("rate", rate)
    samples, in_rate = read(path)
    return StreamResampler(in_rate, rate).process(to_mono(samples), last=True)


def iter_chunks(
    path: str | os.PathLike[str], chunk_s: float = 0.5, rate: int = DEFAULT_RATE
) -> Iterator[Samples]:
    """Yield a file's mono float32 samples at `rate` Hz, reading `chunk_s` seconds at a time.

    Memory stays bounded by the chunk size whatever the file's length. The chunks
    concatenated equal ``load(path, rate)`` exactly. Their lengths only approximate
    ``chunk_s * rate``: the resampler releases output in blocks of a few hundred samples,
    so very short chunks are merged, and the first is shorter by the resampler's delay.
    The arguments are checked at once; AudioError is raised on iteration, as the file is read.
    """
    if not (math.isfinite(chunk_s) and chunk_s > 0):
        raise ValueError(f"chunk_s must be a positive number of seconds, got {chunk_s!r}")
    return _chunks(path, chunk_s, _check_rate("rate", rate))


def _chunks(path: str | os.PathLike[str], chunk_s: float, rate: int) -> Iterator[Samples]:
    with _opened(path) as sound:
        resampler = StreamResampler(sound.samplerate, rate)
        blocksize = max(1, round(chunk_s * sound.samplerate))
        for block in sound.blocks(blocksize, dtype="float32", always_2d=True):
            out = resampler.process(to_mono(block))
            if out.size:
                yield out
    tail = resampler.process(np.zeros(0, dtype=np.float32), last=True)
    if tail.size:
        yield tail
