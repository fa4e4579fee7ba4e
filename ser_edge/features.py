"""Frame-level features computed by the C++ core.

`FeatureConfig` is the single definition of the features (see its docstring); `extract`
computes every complete frame of a signal at once, and `FeatureStream` computes the same
frames from a stream of chunks, bit for bit.
"""

from ser_edge._core import FeatureConfig, FeatureStream, analysis_window, extract, mel_filters

__all__ = ["FeatureConfig", "FeatureStream", "extract", "mel_filters", "analysis_window"]
