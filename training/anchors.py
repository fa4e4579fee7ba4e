"""The anchors ser-edge is compared with: what a speech researcher would try first.

- openSMILE functionals (eGeMAPSv02: 88 values, ComParE_2016: 6373 values per clip) with a
  linear SVM (C = 1, class-balanced, standardised features). openSMILE's licence is
  non-commercial: it is used here for comparison only, never by the runtime.
- A frozen Whisper-base encoder (multilingual, run by CTranslate2 from a local folder in
  the faster-whisper layout), its output pooled over time (mean and standard deviation,
  1024 values), with logistic regression (C = 0.1, class-balanced, standardised).

Every embedder turns 16 kHz mono samples into one vector per clip; `embed_clips` caches
the vectors on disk by embedder and file content, so a second comparison run reads them.
Nothing is downloaded: a missing package or model folder is an `AnchorError` that says
what to install or which script puts the model in place.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["ANCHORS", "AnchorError", "OpenSmileEmbedder", "WhisperEmbedder", "cost_per_second", "embed_clips",
           "make_classifier", "whisper_log_mel"]

SAMPLE_RATE = 16000
GET_WHISPER = "../shared/tools/get-whisper-base [DEST]"


class AnchorError(ValueError):
    """An anchor cannot run: a package or a model folder is missing; the message says what to do."""


class OpenSmileEmbedder:
    """openSMILE functionals of a whole clip (the `opensmile` package)."""

    def __init__(self, feature_set: str = "eGeMAPSv02") -> None:
        try:
            import opensmile
        except ImportError as err:
            raise AnchorError("the openSMILE anchors need the opensmile package (non-commercial licence): "
                              'pip install "ser-edge[anchors]"') from err
        self.name = {"eGeMAPSv02": "egemaps", "ComParE_2016": "compare"}.get(feature_set, feature_set.lower())
        self.smile = opensmile.Smile(feature_set=getattr(opensmile.FeatureSet, feature_set),
                                     feature_level=opensmile.FeatureLevel.Functionals)
        self.key = f"opensmile-{opensmile.__version__}-{feature_set}"
        self.model_bytes = 0  # a configuration, no trained parameters

    def embed(self, samples: np.ndarray) -> np.ndarray:
        return self.smile.process_signal(np.asarray(samples, np.float32), SAMPLE_RATE).to_numpy()[0].astype(np.float32)


def _slaney_mel_filters(n_mels: int = 80, n_fft: int = 400, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Slaney-scale triangular filters with Slaney area normalisation, [n_mels, n_fft // 2 + 1]
    (what Whisper's front end uses)."""

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


def whisper_log_mel(samples: np.ndarray) -> np.ndarray:
    """Whisper's 80-band log-mel spectrogram [80, frames] of 16 kHz samples: 25 ms periodic
    Hann frames every 10 ms (centred, reflect-padded), power, Slaney mel, log10 with a floor
    8 below the clip's maximum, then (x + 4) / 4. One frame per hop (the last STFT frame is
    dropped, as Whisper does)."""
    x = np.asarray(samples, np.float64)
    n_fft, hop = 400, 160
    if len(x) < 2:
        x = np.pad(x, (0, 2 - len(x)))
    padded = np.pad(x, n_fft // 2, mode="reflect")
    frames = 1 + (len(padded) - n_fft) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    power = np.abs(np.fft.rfft(padded[idx] * window, axis=1)) ** 2
    mel = _MEL @ power[:-1].T
    log = np.log10(np.maximum(mel, 1e-10))
    log = np.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).astype(np.float32)


class WhisperEmbedder:
    """A frozen Whisper encoder run by CTranslate2 (int8 on the CPU), pooled over time.

    The clip's own frames are encoded, not padded to Whisper's 30 s: padding multiplies the
    encoder's cost by up to 30 (measured on one core: 1.7-2 s for a padded clip, 0.09 s for
    a 4 s one). Clips over 30 s are encoded in 30 s pieces. The output frames (one per 20 ms)
    are pooled into their mean and standard deviation.
    """

    def __init__(self, model_dir: Optional[str | os.PathLike[str]], threads: int = 1) -> None:
        if model_dir is None or not (Path(model_dir) / "model.bin").is_file():
            raise AnchorError(f"no Whisper model in {str(model_dir)!r} (model.bin missing); put it there with "
                              f"{GET_WHISPER} and pass that folder")
        try:
            import ctranslate2
        except ImportError as err:
            raise AnchorError('the Whisper anchor needs the ctranslate2 package: pip install "ser-edge[anchors]"') \
                from err
        self.ct2 = ctranslate2
        self.model = ctranslate2.models.Whisper(str(model_dir), device="cpu", compute_type="int8",
                                                intra_threads=threads)
        model_bin = Path(model_dir) / "model.bin"
        h = hashlib.sha1()
        with open(model_bin, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        self.key = f"whisper-ct2-{ctranslate2.__version__}-{h.hexdigest()}"
        self.model_bytes = model_bin.stat().st_size
        self.name = "whisper"

    def embed(self, samples: np.ndarray) -> np.ndarray:
        mel = whisper_log_mel(samples)
        parts = []
        for start in range(0, mel.shape[1], 3000):
            piece = mel[:, start : start + 3000]
            if piece.shape[1] % 2:  # the encoder's stride-2 convolution wants an even count
                piece = np.pad(piece, ((0, 0), (0, 1)), mode="edge")
            out = self.model.encode(self.ct2.StorageView.from_array(np.ascontiguousarray(piece[None])))
            parts.append(np.asarray(out)[0].astype(np.float32))
        frames = np.concatenate(parts, axis=0)
        return np.concatenate([frames.mean(axis=0), frames.std(axis=0)]).astype(np.float32)


def _cache_root(cache_root: Optional[Path]) -> Path:
    if cache_root is not None:
        return Path(cache_root)
    return Path(os.environ.get("SER_EDGE_CACHE", Path.home() / ".cache" / "ser-edge" / "features")) / "anchors"


def embed_clips(embedder, paths: Sequence[Path], cache_root: Optional[Path] = None, progress: bool = False
                ) -> tuple[np.ndarray, list[tuple[Path, str]], list[int]]:
    """(vectors [n_kept, dim], skipped [(path, reason)], kept indices into `paths`). Each vector
    is cached by (embedder, file content); a file that cannot be read is skipped with its reason."""
    from ser_edge.audio import AudioError, load

    root = _cache_root(cache_root)
    vectors, skipped, kept = [], [], []
    iterator: Sequence = paths
    if progress:
        from rich.progress import track

        iterator = track(paths, description=f"{getattr(embedder, 'name', 'anchor')} embeddings", transient=True)
    for i, path in enumerate(iterator):
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            skipped.append((Path(path), f"cannot read {path}: {err.strerror or err}"))
            continue
        digest = hashlib.sha1(embedder.key.encode() + b"|" + data).hexdigest()
        target = root / digest[:2] / f"{digest}.npy"
        if target.exists():
            vector = np.load(target)
        else:
            try:
                vector = embedder.embed(load(path, SAMPLE_RATE))
            except AudioError as err:
                skipped.append((Path(path), str(err)))
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, vector)
            os.replace(tmp, target)
        vectors.append(vector)
        kept.append(i)
    dim = len(vectors[0]) if vectors else 0
    return (np.stack(vectors) if vectors else np.zeros((0, dim), np.float32)), skipped, kept


def make_classifier(kind: str):
    """"svm": standardisation + linear SVM (C = 1, class-balanced); "logreg": standardisation +
    logistic regression (C = 0.1, class-balanced). Deterministic."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if kind == "svm":
        model = LinearSVC(C=1.0, class_weight="balanced", max_iter=20000, random_state=0)
    elif kind == "logreg":
        model = LogisticRegression(C=0.1, class_weight="balanced", max_iter=5000)
    else:
        raise ValueError(f"classifier must be 'svm' or 'logreg', got {kind!r}")
    pipeline = make_pipeline(StandardScaler(), model)

    class Quiet:
        """The pipeline; fit without convergence warnings (the iteration cap is stated above)."""

        def fit(self, X, y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                pipeline.fit(X, y)
            return self

        def predict(self, X):
            return pipeline.predict(X)

    return Quiet()


def cost_per_second(embedder, samples: Sequence[np.ndarray]) -> float:
    """CPU seconds (process time, one thread) of embedding per second of audio."""
    seconds = sum(len(s) for s in samples) / SAMPLE_RATE
    start = time.process_time()
    for s in samples:
        embedder.embed(s)
    return (time.process_time() - start) / seconds


#: name -> (embedder factory, classifier kind); the Whisper factory takes the model folder.
ANCHORS: dict[str, tuple[Callable, str]] = {
    "egemaps-svm": (lambda: OpenSmileEmbedder("eGeMAPSv02"), "svm"),
    "compare-svm": (lambda: OpenSmileEmbedder("ComParE_2016"), "svm"),
    "whisper-logreg": (lambda model_dir=None: WhisperEmbedder(model_dir), "logreg"),
}
