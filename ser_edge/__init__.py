"""ser-edge: on-device, streaming speech emotion recognition."""

from ser_edge.features import FeatureConfig, FeatureStream, extract

__version__ = "0.1.0"
__all__ = ["FeatureConfig", "FeatureStream", "extract", "__version__"]
