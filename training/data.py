"""Clips to feature matrices, computed by the C++ core and cached on disk.

Features come from `ser_edge.features.extract` with the model's FeatureConfig: the same
code the runtime runs, never a second implementation. The cache key covers the config,
the file's bytes and any noise applied, so a changed file or config is never served stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ser_edge.audio import AudioError, load
from ser_edge.features import FeatureConfig, extract
from ser_edge.training.corpora import Clip
from ser_edge.training.noise import make_noise, mix_at_snr

__all__ = ["Augmenter", "Example", "FeatureCache", "NoiseSpec", "Source", "babble_talkers", "load_examples",
           "speaker_normalise", "with_speech_segments", "with_speech_windows"]

#: Clips shorter than this many frames (0.25 s at the default hop) are skipped.
MIN_FRAMES = 25


@dataclass(frozen=True)
class NoiseSpec:
    """Noise to mix into every clip: kind ('white', 'pink', 'babble'), SNR in dB, seed."""

    kind: str
    snr_db: float
    seed: int = 0

    def key(self) -> str:
        return f"{self.kind}@{self.snr_db:g}dB#{self.seed}"


@dataclass
class Example:
    """One clip's features [frames, dim] with its class index and speaker group."""

    features: np.ndarray
    label: int
    group: str
    path: Path
    #: Training-time targets from a teacher (see training/teacher.py), or None: its class
    #: probabilities at the distillation temperature, and its pooled embedding.
    soft: Optional[np.ndarray] = None
    target_embedding: Optional[np.ndarray] = None
    #: The clip's label among every label of its corpus ("emodb:boredom"), for the training-only
    #: head of TrainConfig.own_labels; "" when unknown. A clip outside the task's classes has
    #: label -1 and trains only that head.
    own: str = ""
    #: The teacher's encoder frames [frames, width] (standardised), for TrainConfig.frame_distill.
    teacher_frames: Optional[np.ndarray] = None
    #: How the features were made from the file (to find its speech windows), or None.
    source: Optional["Source"] = None
    #: What the runtime scores over the clip, [n, 2] frame ranges: its analysis windows
    #: (TrainConfig.windows) or its speech segments with their context (TrainConfig.segments).
    windows: Optional[np.ndarray] = None
    #: The weight of each of those in the clip's decision (the segments' durations), or None: equal.
    window_weights: Optional[np.ndarray] = None
    #: What `windows` holds ("windows 2.0 0.5", "segments 0.3"; "" when set by hand).
    spans_of: str = ""


@dataclass(frozen=True)
class Source:
    """How an example's audio was made from its file: the cache whose config computed its
    features, the noise mixed in (babble of `talkers`) and the speed; enough to make the same
    audio again and find its speech windows (`with_speech_windows`)."""

    cache: "FeatureCache"
    noise: Optional[NoiseSpec] = None
    talkers: tuple[Path, ...] = ()
    speed: float = 1.0
    floor: bool = False  # a faint floor that stands in for the clean clip (Augmenter "floor")


def core_key() -> str:
    """A digest of the compiled feature core (the extension's bytes): features cached by one
    build are never served to another, so a change to the C++ code recomputes them."""
    global _CORE_KEY
    if _CORE_KEY is None:
        from ser_edge import _core

        _CORE_KEY = hashlib.sha1(Path(_core.__file__).read_bytes()).hexdigest()
    return _CORE_KEY


_CORE_KEY: Optional[str] = None


def _default_root() -> Path:
    return Path(os.environ.get("SER_EDGE_CACHE", Path.home() / ".cache" / "ser-edge" / "features"))


class FeatureCache:
    """On-disk cache of feature matrices keyed by (feature core build, config, file content,
    noise, speed)."""

    def __init__(self, config: FeatureConfig, root: Optional[Path] = None) -> None:
        self.config = config
        self.root = Path(root) if root is not None else _default_root()
        self._config_key = hashlib.sha1(config.to_json().encode()).hexdigest()

    def _key(self, path: Path, noise: Optional[NoiseSpec], talkers: Sequence[Path], speed: float = 1.0) -> Path:
        h = hashlib.sha1(f"{core_key()}|{self._config_key}".encode())
        if speed != 1.0:
            h.update(f"speed={speed!r}".encode())
        h.update(Path(path).read_bytes())
        if noise is not None:
            h.update(noise.key().encode())
            for talker in talkers:  # their content: a same-named file elsewhere is another voice
                h.update(Path(talker).read_bytes())
        digest = h.hexdigest()
        return self.root / digest[:2] / f"{digest}.npy"

    def features(self, path: Path, noise: Optional[NoiseSpec] = None,
                 talkers: Sequence[Path] = (), speed: float = 1.0) -> np.ndarray:
        """Features of one file, with `noise` mixed in if given (raises AudioError when it
        cannot be read). Babble is made of the `talkers` recordings. `speed` != 1 plays the
        file faster or slower first (tempo and pitch together, by resampling)."""
        try:
            target = self._key(path, noise, talkers, speed)
        except OSError as err:
            raise AudioError(f"cannot read {str(path)!r}: {err.strerror or err}") from err
        if target.exists():
            return np.load(target)
        feats = extract(self._samples(path, noise, talkers, speed), self.config)
        _save(target, feats)
        return feats

    def speech_windows(self, path: Path, window_s: float, hop_s: float, noise: Optional[NoiseSpec] = None,
                       talkers: Sequence[Path] = (), speed: float = 1.0) -> np.ndarray:
        """The runtime's analysis windows (`ser_edge.stream.speech_windows`, the default
        voice-activity gate) over the audio that `features` computes with the same arguments:
        [n, 2] frame ranges into those features."""
        from ser_edge.stream import VadConfig, speech_windows

        vad = VadConfig()
        return self._spans(path, noise, talkers, speed, f"{window_s!r}|{hop_s!r}|{vad!r}", "windows",
                           lambda x: speech_windows(x, self.config, window_s, hop_s, vad))

    def speech_segments(self, path: Path, context_s: float, noise: Optional[NoiseSpec] = None,
                        talkers: Sequence[Path] = (), speed: float = 1.0) -> np.ndarray:
        """What the runtime's "segment" decision scores (`ser_edge.stream.speech_segments`, the
        default voice-activity gate) over the audio that `features` computes with the same
        arguments: [n, 3] rows (start, stop, speech frames) into those features."""
        from ser_edge.stream import VadConfig, speech_segments

        vad = VadConfig()
        return self._spans(path, noise, talkers, speed, f"segments|{context_s!r}|{vad!r}", "segments",
                           lambda x: speech_segments(x, self.config, context_s, vad))

    def _spans(self, path: Path, noise: Optional[NoiseSpec], talkers: Sequence[Path], speed: float, what: str,
               suffix: str, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        """Frame ranges found on the audio of `features` (same arguments), cached beside them."""
        try:
            feature_file = self._key(path, noise, talkers, speed)
        except OSError as err:
            raise AudioError(f"cannot read {str(path)!r}: {err.strerror or err}") from err
        digest = hashlib.sha1(f"{feature_file.stem}|{what}".encode()).hexdigest()
        target = self.root / digest[:2] / f"{digest}.{suffix}.npy"
        if target.exists():
            return np.load(target)
        spans = compute(self._samples(path, noise, talkers, speed))
        _save(target, spans)
        return spans

    def _samples(self, path: Path, noise: Optional[NoiseSpec], talkers: Sequence[Path], speed: float) -> np.ndarray:
        samples = load(path, self.config.sample_rate)
        if speed != 1.0:
            import soxr

            samples = soxr.resample(samples, self.config.sample_rate * speed, self.config.sample_rate)
        if noise is not None:
            samples = noisy(samples, path, noise, talkers, self.config.sample_rate)
        return samples


def _save(target: Path, array: np.ndarray) -> None:
    """Write an array into the cache atomically (readers never see a partial file)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, target)


def with_speech_windows(examples: Sequence[Example], window_s: float, hop_s: float) -> list[Example]:
    """Copies of `examples` with their `windows` set: the analysis windows the runtime scores
    over each clip's audio (its noisy or speed-changed copy's own), every `hop_s` seconds of
    speech a `window_s`-second window. Examples that have them already are kept as they are."""
    def find(e: Example, s: Source) -> Example:
        return replace(e, windows=s.cache.speech_windows(e.path, window_s, hop_s, s.noise, s.talkers, s.speed),
                       window_weights=None)

    return _with_spans(examples, find, "speech windows", f"windows {window_s!r} {hop_s!r}")


def with_speech_segments(examples: Sequence[Example], context_s: float) -> list[Example]:
    """Copies of `examples` with `windows` set to what the runtime's "segment" decision scores
    over each clip's audio (its noisy or speed-changed copy's own): each speech segment with
    `context_s` seconds either side, weighted (`window_weights`) by the segment's duration as
    `Recognizer` weighs it (`Event.weight`, its duration: the frame count back in seconds)."""
    def find(e: Example, s: Source) -> Example:
        rows = s.cache.speech_segments(e.path, context_s, s.noise, s.talkers, s.speed)
        config = s.cache.config
        return replace(e, windows=rows[:, :2], window_weights=(rows[:, 2] - 1) * config.hop_s + config.frame_s)

    return _with_spans(examples, find, "speech segments", f"segments {context_s!r}")


def _with_spans(examples: Sequence[Example], find: Callable[[Example, "Source"], Example], what: str,
                kind: str) -> list[Example]:
    """The examples with `windows` of this `kind`: kept where they have them already, found otherwise."""
    out = []
    for e in examples:
        if e.windows is None or e.spans_of != kind:
            if e.source is None:
                raise ValueError(f"{e.path}: no record of how its features were made (Example.source), so its "
                                 f"{what} cannot be found; load it with load_examples or an Augmenter")
            e = replace(find(e, e.source), spans_of=kind)
        out.append(e)
    return out


def noisy(samples: np.ndarray, path: Path, noise: NoiseSpec, talkers: Sequence[Path] = (),
          sample_rate: int = 16000) -> np.ndarray:
    """The recording `samples` (of the file `path`) with `noise` mixed in at its SNR; babble
    is made of the `talkers` recordings. The noise is seeded by the spec and the file's stem,
    so each clip gets its own, reproducibly (the same for a clip stored as WAV or FLAC)."""
    seed = int.from_bytes(hashlib.sha1(f"{noise.key()}|{Path(path).stem}".encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    voices = []
    for talker in talkers if noise.kind == "babble" else []:
        # An unreadable talker is left out of the babble rather than losing the clip:
        # the noisy examples must stay aligned with the clean ones.
        with contextlib.suppress(AudioError):
            voices.append(load(talker, sample_rate))
    return mix_at_snr(samples, make_noise(noise.kind, len(samples), rng, voices), noise.snr_db, sample_rate)


def babble_talkers(clip: Clip | Example, pool: Sequence[Clip | Example], count: int = 5) -> list[Path]:
    """One recording each of `count` speakers other than `clip`'s (fewer when the pool has
    fewer), chosen reproducibly per clip (clips or examples: only their path and speaker
    group are used)."""
    by_speaker: dict[str, list[Path]] = {}
    for c in pool:
        if c.group != clip.group:
            by_speaker.setdefault(c.group, []).append(c.path)
    seed = int.from_bytes(hashlib.sha1(clip.path.stem.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    speakers = sorted(by_speaker)
    chosen = sorted(rng.choice(len(speakers), size=min(count, len(speakers)), replace=False)) if speakers else []
    return [sorted(by_speaker[speakers[i]])[int(rng.integers(len(by_speaker[speakers[i]])))] for i in chosen]


def load_examples(clips: Sequence[Clip], labels: Sequence[str], cache: FeatureCache,
                  noise: Optional[NoiseSpec] = None, progress: bool = False, others: bool = False
                  ) -> tuple[list[Example], list[tuple[Path, str]]]:
    """Features of every clip whose label is in `labels`; returns (examples, skipped).
    With `others`, clips with any other label are kept too, as label -1 (for the head of
    TrainConfig.own_labels); every example carries its own label ("corpus:label").

    With `noise`, each clip is mixed with it first; babble is made of clips of five other
    speakers of the same list. An unreadable or too-short file is skipped with a warning
    and listed in `skipped` with the reason, never dropped silently.
    """
    index = {label: i for i, label in enumerate(labels)}
    examples, skipped = [], []
    iterator = clips
    if progress:
        from rich.progress import track

        iterator = track(clips, description="features", transient=True)
    for clip in iterator:
        if clip.label not in index and not others:
            continue
        try:
            talkers = babble_talkers(clip, clips) if noise is not None and noise.kind == "babble" else []
            feats = cache.features(clip.path, noise, talkers)
        except AudioError as err:
            skipped.append((clip.path, str(err)))
            warnings.warn(f"skipped: {err}", stacklevel=2)
            continue
        if len(feats) < MIN_FRAMES:
            reason = f"{clip.path}: too short ({len(feats)} frames, need {MIN_FRAMES})"
            skipped.append((clip.path, reason))
            warnings.warn(f"skipped: {reason}", stacklevel=2)
            continue
        examples.append(Example(feats, index.get(clip.label, -1), clip.group, clip.path,
                                own=f"{clip.corpus}:{clip.label}", source=Source(cache, noise, tuple(talkers))))
    return examples, skipped


class Augmenter:
    """Extra training copies of examples: speed-perturbed ("speed:0.9") or noisy
    ("white:20", "pink:15", "babble:10": kind and SNR in dB; babble made of clips of five
    other speakers among the examples given), or multi-condition ("mixed:0-20": each clip
    gets its own noise kind, white, pink or babble, and a whole-dB SNR drawn uniformly from
    the range, reproducibly from the clip's name and the copy's place in the list; pink
    where babble is drawn but the examples hold no other speaker), or a faint floor
    ("floor:25-45": white or pink noise, drawn per clip likewise, at a whole-dB SNR from the
    range) that stands in for the clean clip: `extend` then trains on the floored copy
    instead of the original (so no training clip keeps a corpus's digital silence).
    Copies keep their clip's label and speaker; a copy that cannot be made is left out with
    a warning (with a floor, the original is kept instead)."""

    def __init__(self, cache: FeatureCache, copies: Sequence[str]) -> None:
        self.cache = cache
        self.copies = []
        for spec in copies:
            kind, _, value = spec.partition(":")
            if kind in ("mixed", "floor"):
                low, sep, high = value.partition("-")
                try:
                    number = (int(low), int(high))
                except ValueError:
                    example = "mixed:0-20" if kind == "mixed" else "floor:25-45"
                    raise ValueError(f"augmentation {spec!r} is not {kind}:LOW-HIGH (whole dB, {example})") from None
                if not sep or number[0] > number[1]:
                    raise ValueError(f"augmentation {spec!r}: the SNR range must be LOW-HIGH with LOW <= HIGH")
                self.copies.append((kind, number))
                continue
            try:
                number = float(value)
            except ValueError:
                raise ValueError(f"augmentation {spec!r} is not KIND:NUMBER (speed:0.9, pink:15, ...)") from None
            if kind != "speed" and kind not in ("white", "pink", "babble"):
                raise ValueError(f"unknown augmentation kind {kind!r}; choose speed, white, pink, babble, mixed "
                                 "or floor")
            if kind == "speed" and not 0.5 <= number <= 2.0:
                raise ValueError(f"speed factor {number} is outside 0.5..2")
            self.copies.append((kind, number))

    @staticmethod
    def condition(path: Path, n: int, snr_range: tuple[int, int], what: str = "mixed") -> tuple[str, int]:
        """The (noise kind, SNR dB) of copy `n` of a "mixed" (or "floor") augmentation for one clip."""
        digest = hashlib.sha1(f"{what}#{n}|{Path(path).stem}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        kinds = ("white", "pink", "babble") if what == "mixed" else ("white", "pink")
        kind = kinds[int(rng.integers(len(kinds)))]
        return kind, int(rng.integers(snr_range[0], snr_range[1] + 1))

    @property
    def floors(self) -> bool:
        """Whether a floored copy stands in for each clean clip (a "floor" augmentation)."""
        return any(kind == "floor" for kind, _ in self.copies)

    def extend(self, examples: Sequence[Example]) -> list[Example]:
        """What to train on: `examples` and their copies; with a floor, each example's floored
        copy instead of the example itself (the example where its copy could not be made)."""
        copies = self(examples)
        if not self.floors:
            return list(examples) + copies
        floored = {str(e.path) for e in copies if e.source is not None and e.source.floor}
        return [e for e in examples if str(e.path) not in floored] + copies

    def __call__(self, examples: Sequence[Example]) -> list[Example]:
        """The augmented copies of `examples` (not the examples themselves)."""
        pool = sorted({e.path: e for e in examples}.values(), key=lambda e: e.path)  # babble voices, by path
        out = []
        for n, (kind, value) in enumerate(self.copies):
            for e in examples:
                if kind == "speed":
                    source = Source(self.cache, speed=value)
                elif kind == "floor":
                    noise, snr = self.condition(e.path, n, value, "floor")
                    source = Source(self.cache, NoiseSpec(noise, snr, seed=100 + n), floor=True)
                elif kind == "mixed":
                    noise, snr = self.condition(e.path, n, value)
                    talkers = babble_talkers(e, pool) if noise == "babble" else []
                    if noise == "babble" and not talkers:
                        noise = "pink"  # no other speaker to make babble of: the other coloured noise
                    source = Source(self.cache, NoiseSpec(noise, snr, seed=100 + n), tuple(talkers))
                else:
                    talkers = babble_talkers(e, pool) if kind == "babble" else []
                    if kind == "babble" and not talkers:
                        warnings.warn(f"no babble copy of {e.path}: no other speaker among the training clips",
                                      stacklevel=2)
                        continue
                    source = Source(self.cache, NoiseSpec(kind, value, seed=100 + n), tuple(talkers))
                try:
                    feats = self.cache.features(e.path, source.noise, source.talkers, source.speed)
                except AudioError as err:
                    warnings.warn(f"no {kind} copy of {e.path}: {err}", stacklevel=2)
                    continue
                if len(feats) >= MIN_FRAMES:
                    out.append(replace(e, features=feats, source=source, windows=None, window_weights=None,
                                       spans_of=""))
        return out


def speaker_normalise(examples: Sequence[Example]) -> list[Example]:
    """Each example's features minus its speaker's mean frame (over all of that speaker's
    clips given). Unsupervised (labels are not used), but it needs other recordings of the
    same person, so results with it are reported apart from the plain ones."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for e in examples:
        sums[e.group] = sums.get(e.group, 0) + e.features.sum(0, dtype=np.float64)
        counts[e.group] = counts.get(e.group, 0) + len(e.features)
    return [replace(e, features=(e.features - (sums[e.group] / counts[e.group])).astype(np.float32), soft=None,
                    target_embedding=None) for e in examples]


def baseline_key(example: Example, per: str) -> str:
    """Whose baseline an example is measured against: its speaker's, or its own recording's."""
    return example.group if per == "speaker" else str(example.path)


def speaker_baselines(examples: Sequence[Example], config: FeatureConfig,
                      per: str = "speaker") -> dict[str, tuple[float, float]]:
    """{speaker: (median ln F0, median ln energy)} over the voiced frames of all of that
    speaker's examples given: how the person usually sounds. Unsupervised (labels are not
    used), but it needs other recordings of the person: the stand-in, over a corpus, for a
    running baseline of one person's stream. per="utterance": each recording's own medians
    instead (what a stream that has heard only this utterance would hold), keyed by path."""
    span = config.block_slices().get("prosody")
    if span is None:
        raise ValueError("a speaker baseline needs the prosody block (ln F0, voicing, ln energy)")
    unvoiced = np.log(config.f0_min)
    frames: dict[str, list[np.ndarray]] = {}
    for e in examples:
        frames.setdefault(baseline_key(e, per), []).append(e.features[:, span.start : span.start + 3])
    out = {}
    for key, parts in frames.items():
        p = np.concatenate(parts)
        voiced = p[_voiced(p[:, 0], config)]
        out[key] = ((float(np.median(voiced[:, 0])), float(np.median(voiced[:, 2]))) if len(voiced)
                    else (float(unvoiced), float(np.median(p[:, 2]))))  # no voiced frame: every frame's energy
    return out


def _voiced(ln_f0: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Frames with a pitch: the prosody block writes ln(f0_min) for unvoiced ones."""
    return ln_f0 > np.log(config.f0_min) + 1e-6


def relative_to_baseline(examples: Sequence[Example], baselines: dict[str, tuple[float, float]],
                         config: FeatureConfig, per: str = "speaker") -> list[Example]:
    """The examples with ln F0 and ln energy relative to their speaker's baseline
    (`speaker_baselines`): voiced frames' ln F0 minus the median (unvoiced frames: 0, the
    voicing value tells them apart), every frame's ln energy minus the median. A gain moves a
    stream's energy and its baseline alike, so the difference stays gain-invariant."""
    span = config.block_slices()["prosody"]
    out = []
    for e in examples:
        f0, energy = baselines[baseline_key(e, per)]
        x = e.features.copy()
        x[:, span.start] = np.where(_voiced(x[:, span.start], config), x[:, span.start] - f0, 0.0)
        x[:, span.start + 2] -= energy
        out.append(replace(e, features=x))
    return out
