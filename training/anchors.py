"""The anchors ser-edge is compared with: what a speech researcher would try first.

- openSMILE functionals (eGeMAPSv02: 88 values, ComParE_2016: 6373 values per clip) with a
  linear SVM (C = 1, class-balanced, standardised features). openSMILE's licence is
  non-commercial: it is used here for comparison only, never by the runtime.
- A frozen Whisper-base encoder (multilingual, run by CTranslate2 from a local folder in
  the faster-whisper layout), its output pooled over time (mean and standard deviation,
  1024 values), with logistic regression (C = 0.1, class-balanced, standardised).

An `Embedder` turns one clip of 16 kHz mono samples into one vector; `embed_clips` caches
the vectors on disk by embedder and file content, so a second comparison run reads them.
Nothing is downloaded: a missing package or model folder is an `AnchorError` that says
what to install or which script puts the model in place.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Optional, Protocol, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["ANCHORS", "Anchor", "AnchorError", "Embedded", "Embedder", "OpenSmileEmbedder", "WhisperEmbedder",
           "cost_per_second", "embed_clips", "make_classifier", "opensmile_embedder", "whisper_embedder",
           "whisper_log_mel"]

SAMPLE_RATE = 16000
GET_WHISPER = "../shared/tools/get-whisper-base [DEST]"
INSTALL = 'pip install "ser-edge[anchors]"'
PathLike = Union[str, "os.PathLike[str]"]


class AnchorError(ValueError):
    """An anchor cannot run: a package or a model folder is missing; the message says what to do."""


class Embedder(Protocol):
    """One vector per clip.

    `name` labels the embedder in tables ("egemaps", "compare", "whisper-base"); `key`
    identifies its exact version and configuration (cache entries are keyed by it);
    `model_bytes` is the size of its parameters on disk (0 for a configuration only).
    """

    name: str
    key: str
    model_bytes: int

    def embed(self, samples_16k: np.ndarray) -> np.ndarray:
        """1-D float32 vector of one clip of 16 kHz mono samples."""
        ...


class OpenSmileEmbedder:
    """openSMILE functionals of a whole clip (the `opensmile` package), one vector per clip."""

    NAMES = {"eGeMAPSv02": "egemaps", "ComParE_2016": "compare"}

    def __init__(self, feature_set: str = "eGeMAPSv02") -> None:
        try:
            import opensmile
        except ImportError as err:
            raise AnchorError(f"the openSMILE anchors need the opensmile package (non-commercial licence): {INSTALL}") \
                from err
        if not hasattr(opensmile.FeatureSet, feature_set):
            known = ", ".join(m.name for m in opensmile.FeatureSet)
            raise AnchorError(f"unknown openSMILE feature set {feature_set!r}; known: {known}")
        self.name = self.NAMES.get(feature_set, feature_set.lower())
        self.smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                                     feature_level=opensmile.FeatureLevel.Functionals)
        self.key = f"opensmile-{opensmile.__version__}-{feature_set}"
        self.model_bytes = 0

    def embed(self, samples_16k: np.ndarray) -> np.ndarray:
        """The functionals of the clip, float32 [88] (eGeMAPSv02) or [6373] (ComParE_2016)."""
        table = self.smile.process_signal(np.asarray(samples_16k, np.float32), SAMPLE_RATE)
        return table.to_numpy()[0].astype(np.float32)


def opensmile_embedder(feature_set: str = "eGeMAPSv02") -> OpenSmileEmbedder:
    """openSMILE functionals: "eGeMAPSv02" (88 values) or "ComParE_2016" (6373 values)."""
    return OpenSmileEmbedder(feature_set)


N_FFT, HOP, N_MELS = 400, 160, 80
WHISPER_CHUNK_FRAMES = 3000  # Whisper's 30 s context, in 10 ms frames


def _slaney_mel_filters(n_mels: int = N_MELS, n_fft: int = N_FFT, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-scale triangular filters from 0 Hz to sr / 2 with Slaney area normalisation,
    [n_mels, n_fft // 2 + 1] (Whisper's filter bank)."""

    def to_mel(f):
        f = np.asarray(f, np.float64)
        return np.where(f < 1000.0, 3.0 * f / 200.0, 15.0 + 27.0 / np.log(6.4) * np.log(np.maximum(f, 1e-9) / 1000.0))

    def to_hz(m):
        m = np.asarray(m, np.float64)
        return np.where(m < 15.0, 200.0 * m / 3.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)))

    hz = to_hz(np.linspace(to_mel(0.0), to_mel(sr / 2), n_mels + 2))
    bins = np.linspace(0.0, sr / 2, n_fft // 2 + 1)
    lower = (bins[None, :] - hz[:-2, None]) / (hz[1:-1] - hz[:-2])[:, None]
    upper = (hz[2:, None] - bins[None, :]) / (hz[2:] - hz[1:-1])[:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    return weights * (2.0 / (hz[2:] - hz[:-2]))[:, None]


_MEL = _slaney_mel_filters()
_HANN = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic, as torch.hann_window


def whisper_log_mel(samples_16k: np.ndarray) -> np.ndarray:
    """Whisper's log-mel spectrogram, float32 [80, len(samples) // 160].

    25 ms periodic-Hann frames every 10 ms, centred (the signal reflect-padded by 200
    samples each side), power spectrum, 80 Slaney mel bands 0-8000 Hz, log10 floored at
    1e-10 and at 8 (that is 80 dB) below the clip's maximum, then (x + 4) / 4. The last
    STFT frame is dropped, as Whisper does.
    """
    x = np.asarray(samples_16k, np.float64)
    if len(x) < 2:
        x = np.pad(x, (0, 2 - len(x)))
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = 1 + (len(padded) - N_FFT) // HOP
    idx = np.arange(N_FFT)[None, :] + HOP * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(padded[idx] * _HANN, axis=1)) ** 2
    log = np.log10(np.maximum(_MEL @ power[:-1].T, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


_WHISPER_SIZES = {384: "tiny", 512: "base", 768: "small", 1024: "medium", 1280: "large"}


def _sha1_of_file(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class WhisperEmbedder:
    """A frozen Whisper encoder run by CTranslate2 (int8 on the CPU), pooled over time.

    The clip's own log-mel frames are encoded, not padded to Whisper's 30 s: padding makes
    the encoder's cost that of 30 s whatever the clip's length (measured on one core:
    1.7-2 s for a padded 4 s clip, 0.09 s unpadded). CTranslate2 accepts any even frame
    count up to 3000, so an odd count gets its last frame repeated; clips under 20 ms are
    zero-padded to 20 ms; clips over 30 s are encoded in 30 s pieces. The encoder's output
    frames (one per 20 ms, over all pieces) are pooled into their mean and standard
    deviation: 2 x 512 = 1024 values for Whisper base.
    """

    def __init__(self, model_dir: Optional[PathLike], threads: int = 1) -> None:
        if model_dir is None or not (Path(model_dir) / "model.bin").is_file():
            where = "no model folder given" if model_dir is None else f"no model.bin in {str(model_dir)!r}"
            raise AnchorError(f"the Whisper anchor needs a Whisper base model in CTranslate2 format ({where}); "
                              f"put it in a folder with {GET_WHISPER} and pass that folder")
        try:
            import ctranslate2
        except ImportError as err:
            raise AnchorError(f"the Whisper anchor needs the ctranslate2 package: {INSTALL}") from err
        self._ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="int8",
                                                inter_threads=1, intra_threads=threads)
        model_bin = Path(model_dir) / "model.bin"
        self.model_bytes = model_bin.stat().st_size
        self.key = (f"whisper-ct2-{ctranslate2.__version__}-int8-{_sha1_of_file(model_bin)}"
                    f"-logmel{N_MELS}-unpadded-mean-std")
        self.dim = 2 * self._encode(np.zeros((N_MELS, 2), np.float32)).shape[1]
        self.name = f"whisper-{_WHISPER_SIZES.get(self.dim // 2, f'd{self.dim // 2}')}"

    def _encode(self, mel: np.ndarray) -> np.ndarray:
        """Encoder output frames [frames / 2, width] of a log-mel piece [80, even frames <= 3000]."""
        features = self._ct2.StorageView.from_array(np.ascontiguousarray(mel[None], dtype=np.float32))
        return np.asarray(self.model.encode(features))[0].astype(np.float32)

    def embed(self, samples_16k: np.ndarray) -> np.ndarray:
        """Mean and standard deviation over time of the encoder output, float32 [2 x width]."""
        frames = self.frames(samples_16k)
        return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)

    def frames(self, samples_16k: np.ndarray) -> np.ndarray:
        """The encoder output, float32 [frames, width]: one frame per 20 ms of the clip."""
        x = np.asarray(samples_16k, np.float32)
        if len(x) < 2 * HOP:
            x = np.pad(x, (0, 2 * HOP - len(x)))
        mel = whisper_log_mel(x)
        parts = []
        for start in range(0, mel.shape[1], WHISPER_CHUNK_FRAMES):
            piece = mel[:, start : start + WHISPER_CHUNK_FRAMES]
            if piece.shape[1] % 2:
                piece = np.pad(piece, ((0, 0), (0, 1)), mode="edge")
            parts.append(self._encode(piece))
        return np.concatenate(parts, axis=0)


def whisper_embedder(model_dir: Optional[PathLike], threads: int = 1) -> WhisperEmbedder:
    """Whisper encoder (CTranslate2 folder: model.bin, config.json, ...) pooled to mean + std.

    `threads` is CTranslate2's intra-op thread count; 1 by default, so the cost column is
    one core's and a comparison run leaves the other cores to the rest of the work.
    """
    return WhisperEmbedder(model_dir, threads)


def _cache_root(cache_root: Optional[PathLike]) -> Path:
    if cache_root is not None:
        return Path(cache_root)
    return Path(os.environ.get("SER_EDGE_CACHE", Path.home() / ".cache" / "ser-edge" / "features")) / "anchors"


class Embedded(NamedTuple):
    """What `embed_clips` returns: `X[j]` is the vector of `paths[kept[j]]`."""

    X: np.ndarray
    skipped: list[tuple[Path, str]]
    kept: list[int]


def embed_clips(embedder: Embedder, paths: Sequence[PathLike], cache_root: Optional[PathLike] = None,
                progress: bool = False) -> Embedded:
    """Embed every file, through an on-disk cache.

    Each file is read with `ser_edge.audio.load` at 16 kHz. A vector is cached under
    `cache_root` (default: `$SER_EDGE_CACHE`, else ~/.cache/ser-edge/features, then
    "anchors") by the sha1 of the embedder's key and the file's bytes, so an edited file or
    another embedder version is embedded again. A file that cannot be read is skipped with
    its reason, never raised: the result's `kept` lists the indices of the embedded paths.
    """
    vectors, skipped, kept = embed_cached(embedder, paths, cache_root, progress)
    X = np.stack(vectors) if vectors else np.zeros((0, 0), np.float32)
    return Embedded(X, skipped, kept)


def embed_cached(embedder: Embedder, paths: Sequence[PathLike], cache_root: Optional[PathLike] = None,
                 progress: bool = False) -> tuple[list[np.ndarray], list[tuple[Path, str]], list[int]]:
    """`embed_clips` without stacking: (the arrays, of any shape, the skipped files with their
    reasons, the indices of the embedded paths)."""
    from ser_edge.audio import AudioError, load

    root = _cache_root(cache_root)
    vectors: list[np.ndarray] = []
    skipped: list[tuple[Path, str]] = []
    kept: list[int] = []
    items: Sequence[PathLike] = paths
    if progress:
        from rich.progress import track

        items = track(paths, description=f"{embedder.name} embeddings", transient=True)
    for i, path in enumerate(items):
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            skipped.append((Path(path), f"cannot read {str(path)!r}: {err.strerror or err}"))
            continue
        digest = hashlib.sha1(embedder.key.encode() + b"|" + data).hexdigest()
        target = root / digest[:2] / f"{digest}.npy"
        vector = _read_cached(target)
        if vector is None:
            try:
                vector = embedder.embed(load(path, SAMPLE_RATE))
            except AudioError as err:
                skipped.append((Path(path), str(err)))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{digest}.{os.getpid()}.tmp.npy")
            np.save(tmp, vector)
            os.replace(tmp, target)
        vectors.append(vector)
        kept.append(i)
    return vectors, skipped, kept


def _read_cached(target: Path) -> Optional[np.ndarray]:
    """The cached vector, or None when absent or unreadable (then it is computed again)."""
    try:
        return np.load(target)
    except (OSError, ValueError):
        return None


def make_classifier(kind: str) -> "Pipeline":
    """An unfitted scikit-learn pipeline: standardisation, then

    - "svm": linear SVM (LinearSVC, C = 1, squared hinge, class-balanced), or
    - "logreg": logistic regression (L-BFGS, C = 0.1, class-balanced).

    Deterministic. The iteration caps (20 000 and 2 000) leave room: on the comparison's
    protocols (measured up to 967 training clips of 6 373 ComParE values) both converge
    without a warning, the SVM within 1 000 iterations.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if kind == "svm":
        model = LinearSVC(C=1.0, class_weight="balanced", dual="auto", max_iter=20000, random_state=0)
    elif kind == "logreg":
        model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)
    else:
        raise ValueError(f"classifier must be 'svm' or 'logreg', got {kind!r}")
    return make_pipeline(StandardScaler(), model)


def cost_per_second(embedder: Embedder, samples_list: Sequence[np.ndarray]) -> float:
    """CPU seconds of embedding per second of audio (16 kHz clips).

    Measured with `time.process_time`, which adds up every thread of the process, so it is
    the time on one core even if a library used more; the first clip is embedded once
    before timing so that one-off set-up is not counted.
    """
    seconds = sum(len(s) for s in samples_list) / SAMPLE_RATE
    if seconds <= 0:
        raise ValueError("cost_per_second needs at least one non-empty clip")
    embedder.embed(samples_list[0])
    start = time.process_time()
    for samples in samples_list:
        embedder.embed(samples)
    return (time.process_time() - start) / seconds


class Anchor(NamedTuple):
    """An anchor: how to build its embedder, and which classifier (`make_classifier`) reads it."""

    embedder: Callable[..., Embedder]
    classifier: str


#: name -> Anchor; the Whisper factory takes the model folder.
ANCHORS: dict[str, Anchor] = {
    "egemaps-svm": Anchor(lambda: opensmile_embedder("eGeMAPSv02"), "svm"),
    "compare-svm": Anchor(lambda: opensmile_embedder("ComParE_2016"), "svm"),
    "whisper-logreg": Anchor(whisper_embedder, "logreg"),
}
