"""Export a trained checkpoint to ONNX (fp32) and quantise it to int8.

The graph follows the model contract: inputs `features` float32 [batch, time, dim] and
`lengths` int64 [batch] (batch and time dynamic); outputs `logits` [batch, classes] and
`attention` [batch, time]. Per-window normalisation and the dataset standardisation are
inside it. metadata_props carry everything the runtime needs to compute the same
features and to describe the model.

int8 uses onnxruntime's dynamic quantisation (DynamicQuantizeLSTM + MatMulInteger); the
LSTMs are exported sequence-major (layout 0), the only layout the quantiser keeps.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Optional

import torch

from ser_edge.features import FeatureConfig
from ser_edge.model import DECISIONS, MODEL_FORMAT, set_metadata
from ser_edge.training.model import BiLstmAttention, Ensemble, ModelConfig

__all__ = ["MODEL_FORMAT", "checkpoint_states", "export_onnx", "load_checkpoint", "quantise_int8"]

OPSET = 17


def load_checkpoint(path: str | Path) -> tuple[BiLstmAttention | Ensemble, dict]:
    """The model (in eval mode) and the checkpoint dictionary written by `ser-edge train`; an
    ensemble when the checkpoint holds several members."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    config = ModelConfig(**checkpoint["model_config"])
    states = checkpoint.get("members") or [checkpoint["state_dict"]]
    models = []
    for state in states:
        model = BiLstmAttention(config)
        model.load_state_dict(state)
        models.append(model.eval())
    return (models[0] if len(models) == 1 else Ensemble(models).eval()), checkpoint


def checkpoint_states(model: BiLstmAttention | Ensemble) -> dict:
    """What a checkpoint stores of `model`: its weights, or each member's."""
    if isinstance(model, Ensemble):
        return {"members": [m.state_dict() for m in model.members]}
    return {"state_dict": model.state_dict()}


def _metadata(model: BiLstmAttention | Ensemble, feature_config: FeatureConfig, labels: list[str], window_s: float,
              hop_s: float, training: dict, decision: str = "blend") -> dict[str, str]:
    return {
        "ser_edge.format": MODEL_FORMAT,
        "ser_edge.labels": json.dumps(labels),
        "ser_edge.feature_config": feature_config.to_json(),
        "ser_edge.feature_dim": str(feature_config.dim),
        "ser_edge.window_s": repr(float(window_s)),
        "ser_edge.hop_s": repr(float(hop_s)),
        "ser_edge.decision": decision,
        "ser_edge.model_config": json.dumps({**model.config.to_dict(), "ensemble": _members(model)}),
        "ser_edge.training": json.dumps(training, default=str),
        "ser_edge.precision": "fp32",
    }


def _set_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    set_metadata(model, metadata)
    onnx.save(model, str(path))


def _members(model) -> int:
    return len(model.members) if isinstance(model, Ensemble) else 1


class _WithEmbedding(torch.nn.Module):
    """An ensemble as exported: its concatenated pooled attention vectors are a third output."""

    def __init__(self, model: Ensemble) -> None:
        super().__init__()
        self.model = model

    def forward(self, features, lengths):
        return self.model(features, lengths, return_context=True)


def export_onnx(model: BiLstmAttention | Ensemble, feature_config: FeatureConfig, labels: list[str], out: str | Path,
                window_s: float = 2.0, hop_s: float = 0.5, training: Optional[dict] = None,
                decision: str = "blend") -> Path:
    """Write the fp32 ONNX graph of `model` with ser-edge metadata; returns its path. An
    ensemble's graph also outputs `embedding`: its members' pooled attention vectors.
    `decision`: how the runtime should decide a speech segment with it (see
    `ser_edge.stream.DECISIONS`; "windows" for a model trained on windows or crops, not on
    whole clips: `decision_for`)."""
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, got {decision!r}")
    if model.config.input_dim != feature_config.dim:
        raise ValueError(f"the model takes {model.config.input_dim} values per frame but the FeatureConfig "
                         f"gives {feature_config.dim}")
    if len(labels) != model.config.n_classes:
        raise ValueError(f"{len(labels)} labels for a model with {model.config.n_classes} classes")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    # Example inputs with batch != time, so that no dimension is traced as another's.
    features = torch.randn(2, 37, feature_config.dim)
    lengths = torch.tensor([37, 21], dtype=torch.int64)
    with warnings.catch_warnings():
        # The TorchScript exporter warns about its own deprecation and about LSTM batch
        # sizes; the graph is checked against torch on several batch sizes by the tests.
        warnings.simplefilter("ignore")
        ensemble = isinstance(model, Ensemble)
        torch.onnx.export(
            _WithEmbedding(model) if ensemble else model, (features, lengths), str(out),
            input_names=["features", "lengths"],
            output_names=["logits", "attention"] + (["embedding"] if ensemble else []),
            dynamic_axes={"features": {0: "batch", 1: "time"}, "lengths": {0: "batch"},
                          "logits": {0: "batch"}, "attention": {0: "batch", 1: "time"},
                          **({"embedding": {0: "batch"}} if ensemble else {})},
            opset_version=OPSET, dynamo=False,
        )
    _set_metadata(out, _metadata(model, feature_config, labels, window_s, hop_s, training or {}, decision))
    return out


def update_metadata(path: str | Path, entries: dict[str, str]) -> None:
    """Set metadata entries of an ONNX model file, keeping the others and their order (the
    weights are not touched)."""
    import onnx

    model = onnx.load(str(path))
    set_metadata(model, {**{p.key: p.value for p in model.metadata_props}, **entries})
    onnx.save(model, str(path))


def decision_for(train: dict) -> str:
    """The runtime decision that matches how a model was trained (its recipe's `train` fields):
    "windows" when it learnt from analysis windows or random crops, "segment" from speech
    segments with their context, "blend" (the mean of the two) from whole clips: chosen on
    the development speakers (docs/results.md, sixteenth round)."""
    if train.get("windows") or train.get("crop_frames"):
        return "windows"
    return "segment" if train.get("segments", -1) >= 0 else "blend"


def quantise_int8(fp32: str | Path, out: str | Path) -> Path:
    """Dynamic int8 quantisation of an exported model; the metadata is carried over."""
    import logging

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32, out = Path(fp32), Path(out)
    metadata = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    # The quantiser logs a suggestion to pre-process the graph, which does not apply here.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(out), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["LSTM", "MatMul", "Gemm"])
    finally:
        root.setLevel(level)
    metadata["ser_edge.precision"] = "int8"
    _set_metadata(out, metadata)
    return out
