"""ser-edge: on-device, streaming speech emotion recognition.

`FeatureConfig`, `FeatureStream` and `extract` come from the C++ feature core;
`Recognizer` and `StreamRecognizer` (ONNX Runtime) are imported on first use, so that
feature-only users never load onnxruntime.
"""

from ser_edge.features import FeatureConfig, FeatureStream, extract

__version__ = "0.1.0"
__all__ = ["FeatureConfig", "FeatureStream", "Recognizer", "StreamRecognizer", "extract", "__version__"]

_LAZY = {"Recognizer": "ser_edge.recognizer", "StreamRecognizer": "ser_edge.stream"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ser_edge' has no attribute {name!r}")
