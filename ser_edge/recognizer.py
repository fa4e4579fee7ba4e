"""Offline recognition of arrays and files, through the same path as the stream."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import numpy.typing as npt

from ser_edge.audio import read
from ser_edge.model import OnnxModel
from ser_edge.stream import CONTEXT_S, Event, StreamRecognizer, VadConfig, Window, as_probabilities, summarise

__all__ = ["Prediction", "Recognizer"]


@dataclass
class Prediction:
    """A recording's label (None when no speech was found) and probabilities: its speech
    segments' decisions averaged, weighted by their durations (with decision="windows", the
    mean of all its speech windows); the windows themselves and the segments (events)."""

    label: Optional[str]
    probabilities: dict[str, float]
    duration_s: float
    windows: list[Window] = field(repr=False)
    events: list[Event] = field(repr=False)


class Recognizer:
    """Scores whole recordings with a ser-edge model (the bundled default when none is given).

    provider: "cpu", "cuda" or "auto"; threads: CPU threads for ONNX Runtime.
    window_s / hop_s: analysis windows in seconds (default: the model's).
    decision / context_s: how each speech segment is decided (see `StreamRecognizer`).
    on_window: called with each analysis window as it is scored.
    """

    def __init__(self, model: Optional[OnnxModel | str | os.PathLike[str]] = None, provider: str = "cpu",
                 threads: Optional[int] = None, window_s: Optional[float] = None, hop_s: Optional[float] = None,
                 vad: VadConfig = VadConfig(), decision: Optional[str] = None, context_s: float = CONTEXT_S,
                 on_window: Optional[Callable[[Window], None]] = None) -> None:
        self.model = model if isinstance(model, OnnxModel) else OnnxModel(model, provider=provider, threads=threads)
        self._stream = StreamRecognizer(self.model, window_s=window_s, hop_s=hop_s, vad=vad, decision=decision,
                                        context_s=context_s, on_window=on_window)
        self.decision = self._stream.decision

    @property
    def info(self) -> dict:
        return self.model.info

    def predict(self, samples: npt.ArrayLike, sample_rate: int) -> Prediction:
        """Label a recording given as samples (1-D, or [frames, channels]) at `sample_rate` Hz."""
        self._stream.reset()
        events = self._stream.push(samples, sample_rate) + self._stream.close()  # push mixes to mono
        duration_s = np.shape(samples)[0] / sample_rate
        windows = [w for e in events for w in e.windows]
        if not events:
            return Prediction(None, {}, duration_s, [], events)
        if self.decision == "windows":
            label, probabilities = summarise(windows, self.model.labels)
        else:
            labels = self.model.labels
            p = np.average([[e.probabilities[k] for k in labels] for e in events], axis=0,
                           weights=[e.weight for e in events])
            label, probabilities = labels[int(p.argmax())], as_probabilities(labels, p)
        return Prediction(label, probabilities, duration_s, windows, events)

    def predict_file(self, path: str | os.PathLike[str]) -> Prediction:
        """Label an audio file (any format libsndfile reads); raises AudioError if it cannot be read."""
        samples, rate = read(path)
        return self.predict(samples, rate)
