"""Frame-level features computed by the C++ core.

`FeatureConfig` is the single definition of the features (see its docstring); `extract`
computes every complete frame of a signal at once, and `FeatureStream` computes the same
frames from a stream of chunks, bit for bit.
"""

try:
    from ser_edge._core import FeatureConfig, FeatureStream, analysis_window, extract, mel_filters
except ModuleNotFoundError as err:  # pragma: no cover - exercised in a subprocess by the tests
    from pathlib import Path as _Path

    _here = _Path(__file__).resolve().parent
    if err.name == "ser_edge._core" and (_here.parent / "pyproject.toml").is_file():
        raise ImportError(
            f"ser_edge was imported from its source folder {_here}, which has no compiled feature core: "
            "Python is probably running in the root of a ser-edge checkout, so that folder hides the installed "
            "package. Run from another folder, or install the checkout in editable mode "
            "(pip install -e .), which builds the core in place."
        ) from err
    raise

__all__ = ["FeatureConfig", "FeatureStream", "extract", "mel_filters", "analysis_window"]
