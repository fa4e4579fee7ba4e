"""The `ser-edge` command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import ser_edge
from ser_edge.audio import AudioError, load
from ser_edge.features import FeatureConfig, extract

app = typer.Typer(
    name="ser-edge",
    help="On-device, streaming speech emotion recognition.",
    no_args_is_help=True,
    add_completion=False,
)
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ser-edge {ser_edge.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
) -> None:
    """On-device, streaming speech emotion recognition."""


def _feature_config(preset: str, config_json: Optional[Path]) -> FeatureConfig:
    if config_json is None:
        try:
            return FeatureConfig.preset(preset)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--preset") from err
    try:
        return FeatureConfig.from_json(config_json.read_text())
    except (OSError, ValueError, TypeError) as err:
        raise typer.BadParameter(f"{config_json}: {err}", param_hint="--config") from err


@app.command()
def features(
    paths: List[Path] = typer.Argument(..., help="Audio files (WAV, FLAC, OGG, ...: anything libsndfile reads)."),
    out: Optional[Path] = typer.Option(
        None,
        "--out",
        "-o",
        help="Where to save the features as .npy: a file for one input, a folder (one FILE.npy each) for several.",
    ),
    preset: str = typer.Option("seed", help="Feature preset: seed (spectrogram + MFCC, 270 values), logmel or mfcc."),
    config_json: Optional[Path] = typer.Option(
        None, "--config", help="A FeatureConfig JSON file (as written by FeatureConfig.to_json()); overrides --preset."
    ),
) -> None:
    """Compute frame features of audio files with the C++ core and summarise them.

    Each file is mixed to mono and resampled to the config's rate, then framed (25 ms
    frames every 10 ms by default). Files that cannot be read are reported and skipped;
    the exit code is 1 if any file failed.
    """
    config = _feature_config(preset, config_json)
    if out is not None and len(paths) > 1 and out.suffix == ".npy":
        raise typer.BadParameter("with several inputs, --out must be a folder", param_hint="--out")
    table = Table(title=f"features: {', '.join(config.blocks)} ({config.dim} values per frame)")
    columns = ["file", "duration s", "frames x dim", "compute ms", "x real time"] + (["saved to"] if out else [])
    for column in columns:
        table.add_column(column, justify="left" if column in ("file", "saved to") else "right", overflow="fold")
    failed = 0
    for path in paths:
        try:
            samples = load(path, config.sample_rate)
        except AudioError as err:
            err_console.print(f"[red]error:[/red] {err}")
            failed += 1
            continue
        start = time.perf_counter()
        feats = extract(samples, config)
        elapsed = time.perf_counter() - start
        duration = len(samples) / config.sample_rate
        saved = []
        if out is not None:
            target = out if len(paths) == 1 and out.suffix == ".npy" else out / f"{path.stem}.npy"
            target.parent.mkdir(parents=True, exist_ok=True)
            np.save(target, feats)
            target.with_suffix(".json").write_text(json.dumps({"source": str(path), "config": json.loads(config.to_json())}, indent=2))
            saved = [str(target)]
        table.add_row(
            str(path),
            f"{duration:.2f}",
            f"{feats.shape[0]} x {feats.shape[1]}",
            f"{elapsed * 1e3:.2f}",
            f"{duration / elapsed:,.0f}" if elapsed > 0 else "-",
            *saved,
        )
    if table.row_count:
        Console().print(table)
    if failed:
        err_console.print(f"{failed} of {len(paths)} file(s) could not be read")
        raise typer.Exit(code=1)


def main() -> None:
    """Entry point of the `ser-edge` script."""
    app()


if __name__ == "__main__":
    main()
