"""The exported classifier, run by ONNX Runtime: loading, checking and scoring.

A thin, explicit wrapper: it checks that the file is a ser-edge model (its metadata names
the labels and the exact FeatureConfig it was trained on), chooses the execution
provider, and turns padded feature batches into class probabilities.
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Optional

import numpy as np
import numpy.typing as npt

from ser_edge.features import FeatureConfig

__all__ = ["DEFAULT_MODEL", "ModelError", "OnnxModel"]

#: Version of the exported-model contract, stored in every model's metadata.
MODEL_FORMAT = "ser-edge-onnx-1"
PROVIDERS = ("cpu", "cuda", "auto")


def _bundled(name: str) -> Path:
    return Path(str(resources.files("ser_edge") / "models" / name))


#: The int8 model shipped in the wheel (see ser_edge/models/MODEL_CARD.md).
DEFAULT_MODEL = _bundled("default.int8.onnx")


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Row-wise softmax of [batch, classes] logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def set_metadata(model, metadata: dict[str, str]) -> None:
    """Replace the metadata_props of an onnx ModelProto with `metadata`, in its order."""
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


#: How the runtime can decide a speech segment (see ser_edge.stream.StreamRecognizer):
#: "segment", one pass of the model over it with context; "windows", the mean of its windows;
#: "blend", the mean of the two.
DECISIONS = ("blend", "segment", "windows")


class ModelError(Exception):
    """A model file cannot be used: missing, corrupt, not a ser-edge model, or inconsistent."""


class OnnxModel:
    """An exported ser-edge classifier.

    provider: "cpu", "cuda" (needs onnxruntime-gpu: the `gpu` extra) or "auto" (CUDA when
    onnxruntime offers it, else CPU; `info["provider"]` says which). threads: intra-op
    threads for the CPU provider (None lets ONNX Runtime decide).
    """

    def __init__(self, path: Optional[str | os.PathLike[str]] = None, provider: str = "cpu",
                 threads: Optional[int] = None) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path is not None else DEFAULT_MODEL
        if provider not in PROVIDERS:
            raise ValueError(f"provider must be one of {', '.join(PROVIDERS)}, got {provider!r}")
        available = ort.get_available_providers()
        has_cuda = "CUDAExecutionProvider" in available
        if provider == "cuda" and not has_cuda:
            raise ModelError("provider 'cuda' was asked for, but this onnxruntime has no CUDA provider "
                             f"(it has {', '.join(available)}); install the gpu extra "
                             "(pip install 'ser-edge[gpu]') on a machine with CUDA, or use provider='cpu'")
        use_cuda = provider == "cuda" or (provider == "auto" and has_cuda)
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if use_cuda else ["CPUExecutionProvider"]
        if not self.path.is_file():
            raise ModelError(f"model file {str(self.path)!r} does not exist")
        options = ort.SessionOptions()
        if threads is not None:
            if threads < 1:
                raise ValueError(f"threads must be >= 1, got {threads}")
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(self.path), options, providers=providers)
        except Exception as err:  # onnxruntime raises its own exception types for unreadable graphs
            raise ModelError(f"{str(self.path)!r} is not a readable ONNX model: {err}") from err
        meta = self._session.get_modelmeta().custom_metadata_map
        if meta.get("ser_edge.format") != MODEL_FORMAT:
            raise ModelError(f"{str(self.path)!r} is an ONNX model without ser-edge metadata "
                             f"(format {meta.get('ser_edge.format')!r}, expected {MODEL_FORMAT!r}); "
                             "export it with `ser-edge export`")
        try:
            self.labels: list[str] = json.loads(meta["ser_edge.labels"])
            self.feature_config = FeatureConfig.from_json(meta["ser_edge.feature_config"])
            self.window_s = float(meta["ser_edge.window_s"])
            self.hop_s = float(meta["ser_edge.hop_s"])
        except (KeyError, ValueError, TypeError) as err:
            raise ModelError(f"{str(self.path)!r} has incomplete or invalid ser-edge metadata: {err}") from err
        inputs = {i.name: i for i in self._session.get_inputs()}
        if set(inputs) != {"features", "lengths"}:
            raise ModelError(f"{str(self.path)!r} has inputs {sorted(inputs)}, expected features and lengths")
        outputs = {o.name for o in self._session.get_outputs()}
        if not {"logits", "attention"} <= outputs:
            raise ModelError(f"{str(self.path)!r} has outputs {sorted(outputs)}, expected logits and attention")
        dim = inputs["features"].shape[-1]
        if dim != self.feature_config.dim:
            raise ModelError(f"{str(self.path)!r} takes {dim} values per frame but its FeatureConfig gives "
                             f"{self.feature_config.dim}; the file is inconsistent, re-export it")
        self.training: dict = json.loads(meta.get("ser_edge.training", "{}"))
        self.precision = meta.get("ser_edge.precision", "fp32")
        #: What an adapted model was adapted from and how it scored (see ser_edge.adapt); None otherwise.
        try:
            self.adapted: Optional[dict] = (json.loads(meta["ser_edge.adapted"]) if "ser_edge.adapted" in meta
                                            else None)
            #: The temperature its logits are divided by (calibration, see training/calibration.py); None if none.
            self.temperature: Optional[float] = (float(meta["ser_edge.temperature"]) if "ser_edge.temperature" in meta
                                                 else None)
        except (ValueError, TypeError) as err:
            raise ModelError(f"{str(self.path)!r} has invalid ser-edge metadata: {err}") from err
        if self.adapted is not None and not isinstance(self.adapted, dict):
            raise ModelError(f"{str(self.path)!r} has invalid ser-edge metadata: ser_edge.adapted is not an object")
        #: How the runtime decides a speech segment with this model (see ser_edge.stream.DECISIONS):
        #: "segment" unless the model says otherwise. An adapted model's head was fitted on
        #: windows (those adapted before models said so have no key, hence the default).
        self.decision: str = meta.get("ser_edge.decision", "windows" if self.adapted is not None else "segment")
        if self.decision not in DECISIONS:
            raise ModelError(f"{str(self.path)!r} has invalid ser-edge metadata: ser_edge.decision is "
                             f"{self.decision!r}, expected one of {', '.join(DECISIONS)}")
        active = self._session.get_providers()[0]
        self.info = {
            "path": str(self.path),
            "labels": self.labels,
            "precision": self.precision,
            "provider": "cuda" if active == "CUDAExecutionProvider" else "cpu",
            "provider_requested": provider,
            "available_providers": available,
            "window_s": self.window_s,
            "hop_s": self.hop_s,
            "feature_config": self.feature_config.to_dict(),
            "size_mb": self.path.stat().st_size / 1e6,
            "training": self.training,
            "adapted": self.adapted,
            "temperature": self.temperature,
            "decision": self.decision,
        }
        if provider == "auto" and not use_cuda:
            self.info["note"] = "auto: no CUDA provider in this onnxruntime, running on CPU"

    def run(self, features: npt.NDArray[np.float32], lengths: npt.NDArray[np.int64]
            ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Probabilities [batch, classes] and attention [batch, time] of a padded batch."""
        logits, attention = self._outputs(["logits", "attention"], features, lengths)
        return softmax(logits), attention

    def _outputs(self, names: list[str], features, lengths) -> list[np.ndarray]:
        return self._session.run(names, {"features": np.ascontiguousarray(features, np.float32),
                                         "lengths": np.asarray(lengths, np.int64)})

    def score(self, features: npt.NDArray[np.float32]) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Probabilities [classes] and attention [time] of one stretch of features [time, dim] (a window or a segment)."""
        p, a = self.run(features[None], np.array([len(features)], np.int64))
        return p[0], a[0]
