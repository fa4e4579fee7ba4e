"""Streaming recognition: audio chunks -> frames -> speech segments -> windows -> events.

The streaming state lives here, in one place: the resampler, the feature stream, the
voice-activity gate, and the features of the current speech segment. Offline scoring
(`ser_edge.recognizer.Recognizer`) pushes a whole file through this same path, so a file
scored offline and pushed in arbitrary chunks gives the same windows, events and posteriors.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import numpy.typing as npt

from ser_edge.audio import StreamResampler, to_mono
from ser_edge.features import FeatureConfig, FeatureStream
from ser_edge.model import DECISIONS, OnnxModel

__all__ = ["CONTEXT_S", "DECISIONS", "Event", "StreamRecognizer", "VadConfig", "Window", "speech_segments",
           "speech_windows"]

#: Seconds of audio before and after a segment that its one pass includes (by default).
CONTEXT_S = 0.3


@dataclass(frozen=True)
class VadConfig:
    """Energy voice-activity gate. Levels in dB (relative to full scale where 'dBFS').

    The energy is that of the speech band (`band_hz`, 80-4000 Hz by default: a voice's
    fundamental and formants): speech keeps nearly all of its energy there, while white and
    pink noise spread theirs over the whole spectrum, so the gate finds speech several dB
    deeper in broadband noise than a whole-band energy would. The band's edges are soft
    (Hann window, bins of 31 Hz at 16 kHz); a top edge above the model's Nyquist frequency
    is taken as Nyquist. `band_hz=None` measures the whole band.
    """

    threshold_db: float = 9.0          # speech: this far above the adaptive noise floor
    min_level_dbfs: float = -100.0     # quieter frames are never speech (16-bit noise: about -105 in the band)
    floor_rise_db_per_s: float = 3.0   # the floor falls at once to a quieter frame, rises this slowly
    hangover_s: float = 0.3            # speech continues this long after the last loud frame
    min_speech_s: float = 0.3          # shorter segments are dropped
    max_segment_s: float = 30.0        # a longer segment is closed (bounds memory)
    band_hz: Optional[tuple[float, float]] = (80.0, 4000.0)  # energy of this band (None: whole band)

    def __post_init__(self) -> None:
        if self.band_hz is not None:
            try:
                low, high = (float(v) for v in self.band_hz)
            except (TypeError, ValueError):
                raise ValueError(f"band_hz must be (low, high) in Hz or None, got {self.band_hz!r}") from None
            if not 0 <= low < high:
                raise ValueError(f"band_hz must be 0 <= low < high (Hz), got {self.band_hz!r}")
            object.__setattr__(self, "band_hz", (low, high))


@dataclass
class Window:
    """One analysis window over speech: times in seconds from the start of the stream."""

    start_s: float
    end_s: float
    label: str
    probabilities: dict[str, float]
    attention: npt.NDArray[np.float32] = field(repr=False)


@dataclass
class Event:
    """The decision for one speech segment (`start_s` to `end_s`): with the "segment" decision,
    one pass of the model over the segment and the context around it (`scored_from_s` to
    `scored_to_s`); with "windows", the mean of its windows' probabilities; with "blend",
    the mean of the two."""

    start_s: float
    end_s: float
    label: str
    probabilities: dict[str, float]
    windows: list[Window] = field(repr=False)
    scored_from_s: Optional[float] = None
    scored_to_s: Optional[float] = None
    #: The one pass's own probabilities ("segment" and "blend"; with "blend", `probabilities` is
    #: their mean with the windows').
    pass_probabilities: Optional[dict[str, float]] = field(default=None, repr=False)

    @property
    def weight(self) -> float:
        """This segment's weight in a recording's decision ("segment", "blend"): its duration in seconds."""
        return self.end_s - self.start_s


def as_probabilities(labels: list[str], p: np.ndarray) -> dict[str, float]:
    return {label: float(v) for label, v in zip(labels, p)}


def summarise(windows: list[Window], labels: list[str]) -> tuple[str, dict[str, float]]:
    """The decision over several windows: the label of the mean probabilities, and those."""
    mean = np.mean([[w.probabilities[label] for label in labels] for w in windows], axis=0)
    return labels[int(mean.argmax())], as_probabilities(labels, mean)


class _FrameEnergy:
    """Per-frame energy in dBFS, framed exactly like the features (frame i = [i*hop, i*hop+L)).

    With `band` = (low, high) Hz: the mean square of the frame's content in that band, from
    a Hann-windowed FFT scaled by Parseval's theorem (a full-scale sine in the band reads
    -3 dBFS, as over the whole band); a top edge above Nyquist is taken as Nyquist.
    """

    BLOCK = 1024  # frames per FFT call: bounds memory when a whole file is pushed at once

    def __init__(self, frame_length: int, hop: int, sample_rate: int = 16000,
                 band: Optional[tuple[float, float]] = None) -> None:
        self._L, self._hop = frame_length, hop
        self._held = np.zeros(0, np.float64)
        self._weights: Optional[np.ndarray] = None
        if band is not None:
            low, high = float(band[0]), min(float(band[1]), sample_rate / 2)
            self._n = 1 << int(np.ceil(np.log2(frame_length)))
            k = np.fft.rfftfreq(self._n, 1.0 / sample_rate)
            self._bins = slice(int(np.searchsorted(k, low)), int(np.searchsorted(k, high, side="right")))
            if not 0 <= low < high or self._bins.start >= self._bins.stop:
                raise ValueError(f"band_hz {band} holds no frequency between 0 and {sample_rate / 2:g} Hz at "
                                 f"{sample_rate} Hz (bins every {sample_rate / self._n:g} Hz); widen it")
            self._window = np.hanning(frame_length + 2)[1:-1]  # strictly positive
            # Parseval: interior bins stand for their mirror too; DC and Nyquist do not.
            weights = np.full(len(k), 2.0)
            weights[0] = weights[-1] = 1.0
            self._weights = weights[self._bins] / (self._n * float(np.sum(self._window ** 2)))

    def push(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        buf = np.concatenate([self._held, x.astype(np.float64)])
        if len(buf) < self._L:
            self._held = buf
            return np.zeros(0, np.float64)
        n = 1 + (len(buf) - self._L) // self._hop
        frames = np.lib.stride_tricks.sliding_window_view(buf, self._L)[:: self._hop][:n]
        if self._weights is None:
            energy = np.einsum("ij,ij->i", frames, frames) / self._L
        else:
            energy = np.empty(n)
            for a in range(0, n, self.BLOCK):
                spectrum = np.fft.rfft(frames[a : a + self.BLOCK] * self._window, self._n, axis=1)[:, self._bins]
                energy[a : a + self.BLOCK] = ((spectrum.real ** 2 + spectrum.imag ** 2) * self._weights).sum(axis=1)
        self._held = buf[n * self._hop :]
        return 10.0 * np.log10(energy + 1e-12)


class StreamRecognizer:
    """Classifies the emotion of speech in a live audio stream.

    push() takes chunks of any size at any sample rate (resampled statefully); an energy
    gate with an adaptive noise floor and hang-over finds speech; every `hop_s` seconds of
    speech a `window_s`-second window is scored (a segment shorter than a window is scored
    whole) and passed to `on_window` (live displays). When a segment ends, an Event with
    its decision is passed to `on_event` and returned from push() or close().

    decision="segment": the segment is decided by one pass of the model over it with
    `context_s` seconds of the audio before it (kept in a bounded buffer) and after it
    (taken from the gate's hang-over, which is already buffered, so the decision comes no
    later; the context after is at most `vad.hangover_s`), clipped to the stream; a segment
    cut at `vad.max_segment_s` has no context after it, and the piece that follows has the
    end of the one before as its context before.
    decision="windows": the mean of the segment's windows' probabilities.
    decision="blend": the mean of the two: the one pass's probabilities and the mean of the
    windows'. None (default): what the model asks for (`OnnxModel.decision`: the bundled
    model's is "blend", an adapted model's "windows"; "segment" where its metadata says
    nothing).
    Memory is bounded: at most one segment (max_segment_s) and its context of features are held.
    """

    def __init__(self, model: Optional[OnnxModel | str] = None, on_event: Optional[Callable[[Event], None]] = None,
                 on_window: Optional[Callable[[Window], None]] = None, window_s: Optional[float] = None,
                 hop_s: Optional[float] = None, vad: VadConfig = VadConfig(), provider: str = "cpu",
                 threads: Optional[int] = None, decision: Optional[str] = None,
                 context_s: float = CONTEXT_S) -> None:
        if decision is not None and decision not in DECISIONS:
            raise ValueError(f"decision must be one of {', '.join(DECISIONS)}; got {decision!r}")
        if not 0 <= context_s < float("inf"):
            raise ValueError(f"context_s must be a finite number of seconds >= 0, got {context_s}")
        self.model = (model if isinstance(model, (OnnxModel, _WindowLog))
                      else OnnxModel(model, provider=provider, threads=threads))
        decision = decision or getattr(self.model, "decision", "segment")
        self.on_event, self.on_window, self.vad = on_event, on_window, vad
        self.decision, self.context_s = decision, float(context_s)
        config = self.model.feature_config
        self._rate = config.sample_rate
        self._hop_s = config.hop_s
        self.window_s = float(window_s if window_s is not None else self.model.window_s)
        self.hop_s = float(hop_s if hop_s is not None else self.model.hop_s)
        if not (self.window_s > 0 and self.hop_s > 0):
            raise ValueError(f"window_s and hop_s must be positive seconds, got {self.window_s} and {self.hop_s}")
        frames = lambda s: max(1, int(round(s / self._hop_s)))  # noqa: E731
        self._W, self._H = frames(self.window_s), frames(self.hop_s)
        self._hangover, self._min_speech = frames(vad.hangover_s), frames(vad.min_speech_s)
        self._max_segment = max(frames(vad.max_segment_s), self._W)
        self._context = int(round(self.context_s / self._hop_s)) if decision != "windows" else 0
        self._rise = vad.floor_rise_db_per_s * self._hop_s
        self.reset()

    def reset(self) -> None:
        """Forget the stream so far; the next push starts a new one at time 0."""
        config = self.model.feature_config
        self._features = FeatureStream(config)
        self._energy = _FrameEnergy(config.frame_length, config.hop_length, config.sample_rate, self.vad.band_hz)
        self._resampler: Optional[StreamResampler] = None
        self._frame = 0                # index of the next frame
        self._floor: Optional[float] = None  # set by the first frame: every level is relative (gain-invariant)
        self._last_loud = -(10**9)     # frame index of the last frame above the gate
        self._segment: Optional[list[np.ndarray]] = None
        self._segment_start = 0
        self._recent: deque[np.ndarray] = deque(maxlen=self._context)  # the frames before a segment
        self._before: list[np.ndarray] = []  # the open segment's context before it
        self._next_window = 0          # offset in the segment of the next window's start
        self._windows: list[Window] = []
        self._closed = False

    @property
    def in_speech(self) -> bool:
        """Whether a speech segment is open (for live displays)."""
        return self._segment is not None

    @property
    def seconds(self) -> float:
        """Audio consumed so far, in seconds (at the features' rate)."""
        return self._frame * self._hop_s

    # ---------------------------------------------------------------- input

    def push(self, samples: npt.ArrayLike, sample_rate: int) -> list[Event]:
        """Feed a chunk (1-D mono, or [frames, channels]) at `sample_rate` Hz; returns the events it completed."""
        if self._closed:
            raise RuntimeError("this stream was closed; call reset() to start a new one")
        if self._resampler is None:
            self._resampler = StreamResampler(sample_rate, self._rate)
        elif sample_rate != self._resampler.in_rate:
            raise ValueError(f"sample_rate changed from {self._resampler.in_rate} to {sample_rate} Hz within a "
                             "stream; call reset() first")
        return self._consume(self._resampler.process(to_mono(samples)))

    def close(self) -> list[Event]:
        """Flush: the resampler's tail, then the open segment; returns the last events."""
        if self._closed:
            return []
        events = self._consume(self._resampler.process(np.zeros(0, np.float32), last=True)) if self._resampler else []
        self._closed = True
        if self._segment is not None:
            events += self._end_segment()
        return events

    # ---------------------------------------------------------------- per frame

    def _consume(self, x: npt.NDArray[np.float32]) -> list[Event]:
        feats = self._features.accept(x)
        energies = self._energy.push(x)
        events: list[Event] = []
        for f, e in zip(feats, energies):
            events += self._step(f, float(e))
        return events

    def _step(self, f: np.ndarray, energy_db: float) -> list[Event]:
        i = self._frame
        self._frame += 1
        if self._floor is None:
            self._floor = energy_db
        loud = energy_db > self._floor + self.vad.threshold_db and energy_db > self.vad.min_level_dbfs
        self._floor = min(energy_db, self._floor + self._rise)
        if loud:
            self._last_loud = i
        events: list[Event] = []
        if self._segment is None:
            if not loud:
                self._recent.append(f)
                return events
            self._segment, self._segment_start, self._next_window, self._windows = [], i, 0, []
            self._before = list(self._recent)
        self._segment.append(f)
        self._recent.append(f)
        while len(self._segment) - self._next_window >= self._W:
            self._score(self._next_window, self._next_window + self._W)
            self._next_window += self._H
        if i - self._last_loud >= self._hangover or len(self._segment) >= self._max_segment:
            events += self._end_segment()
        return events

    def _score(self, a: int, b: int) -> Window:
        probs, attention = self.model.score(np.asarray(self._segment[a:b]))
        start = (self._segment_start + a) * self._hop_s
        end = (self._segment_start + b - 1) * self._hop_s + self.model.feature_config.frame_s
        window = Window(start, end, self.model.labels[int(probs.argmax())],
                        as_probabilities(self.model.labels, probs), attention)
        self._windows.append(window)
        if self.on_window:
            self.on_window(window)
        return window

    def _end_segment(self) -> list[Event]:
        # The segment ends with its last loud frame; the hang-over frames after it are not speech.
        end = min(len(self._segment), self._last_loud - self._segment_start + 1)
        segment_len = max(end, 0)
        events: list[Event] = []
        if segment_len >= self._min_speech:
            if not self._windows:
                self._score(0, segment_len)
            start = self._segment_start * self._hop_s
            end = (self._segment_start + segment_len - 1) * self._hop_s + self.model.feature_config.frame_s
            if self.decision == "windows":
                label, probabilities = summarise(self._windows, self.model.labels)
                event = Event(start, end, label, probabilities, self._windows)
            else:
                after = min(len(self._segment), segment_len + self._context)
                one, _ = self.model.score(np.asarray(self._before + self._segment[:after]))
                probs = one
                if self.decision == "blend":
                    _, windows = summarise(self._windows, self.model.labels)
                    probs = (one + np.array([windows[k] for k in self.model.labels])) / 2
                first = self._segment_start - len(self._before)
                event = Event(start, end, self.model.labels[int(probs.argmax())],
                              as_probabilities(self.model.labels, probs), self._windows,
                              first * self._hop_s,
                              (self._segment_start + after - 1) * self._hop_s + self.model.feature_config.frame_s,
                              as_probabilities(self.model.labels, one))
            if self.on_event:
                self.on_event(event)
            events.append(event)
        self._segment, self._windows, self._before = None, [], []
        return events


class _WindowLog:
    """Stands in for a model in a StreamRecognizer that only finds the windows it would score."""

    labels = ["speech"]
    decision = "windows"

    def __init__(self, feature_config: FeatureConfig, window_s: float, hop_s: float) -> None:
        self.feature_config, self.window_s, self.hop_s = feature_config, window_s, hop_s

    def score(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.ones(1, np.float32), np.zeros(len(features), np.float32)


def speech_windows(samples: npt.ArrayLike, feature_config: FeatureConfig, window_s: float, hop_s: float,
                   vad: VadConfig = VadConfig()) -> npt.NDArray[np.int64]:
    """The analysis windows the streaming path scores over a recording (mono, at the features'
    sample rate): [n, 2] frame ranges [start, stop) into its one-shot features
    (`ser_edge.features.extract`), in the order they are scored; shape [0, 2] when the gate finds
    no speech. Training cuts its clips to these so that it sees what the runtime scores."""
    spans: list[tuple[int, int]] = []
    hop, frame = feature_config.hop_s, feature_config.frame_s

    def record(window: Window) -> None:
        spans.append((int(round(window.start_s / hop)), int(round((window.end_s - frame) / hop)) + 1))

    stream = StreamRecognizer(_WindowLog(feature_config, window_s, hop_s), on_window=record, vad=vad,
                              decision="windows")
    stream.push(np.asarray(samples, np.float32), feature_config.sample_rate)
    stream.close()
    return np.array(spans, np.int64).reshape(-1, 2)


def speech_segments(samples: npt.ArrayLike, feature_config: FeatureConfig, context_s: float = CONTEXT_S,
                    vad: VadConfig = VadConfig()) -> npt.NDArray[np.int64]:
    """What the streaming path's "segment" decision scores over a recording (mono, at the
    features' sample rate): [n, 3] rows (start, stop, speech frames) per speech segment, the
    frame range [start, stop) of its one pass (the segment and its context) into the
    recording's one-shot features, and the segment's own length in frames (the weight of its
    decision in the recording's); shape [0, 3] when the gate finds no speech."""
    rows: list[tuple[int, int, int]] = []
    hop, frame = feature_config.hop_s, feature_config.frame_s

    def record(event: Event) -> None:
        rows.append((int(round(event.scored_from_s / hop)), int(round((event.scored_to_s - frame) / hop)) + 1,
                     int(round((event.weight - frame) / hop)) + 1))

    # The stand-in's windows are not used; their length only bounds a segment from below, as the model's would.
    stream = StreamRecognizer(_WindowLog(feature_config, 2.0, 0.5), on_event=record, vad=vad, decision="segment",
                              context_s=context_s)
    stream.push(np.asarray(samples, np.float32), feature_config.sample_rate)
    stream.close()
    return np.array(rows, np.int64).reshape(-1, 3)
