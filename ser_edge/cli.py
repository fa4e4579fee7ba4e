"""The `ser-edge` command line."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

import ser_edge
from ser_edge.audio import AudioError, load
from ser_edge.scoring import UNCERTAIN, shown_label
from ser_edge.features import FeatureConfig, extract

app = typer.Typer(
    name="ser-edge",
    help="On-device, streaming speech emotion recognition.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",  # docstrings are paragraphs: lines are joined and wrapped to the terminal
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


# ----------------------------------------------------------------------------- scoring


_MIN_CONFIDENCE = typer.Option(0.0, min=0.0, max=1.0, help="Label a file, window or segment 'uncertain' when "
                                "its most likely class has a lower probability than this (0: off). The "
                                "probabilities are written unchanged.")

_DECISION = typer.Option(None, help="How a speech segment is decided: segment (one pass of the model over the "
                                    "whole segment with 0.3 s of audio either side), windows (the mean of its "
                                    "analysis windows) or blend (the mean of the two). Default: the model's "
                                    "(blend for the bundled model; windows for a model made by `adapt`).")


def _check_decision(decision: Optional[str]) -> None:
    from ser_edge.stream import DECISIONS

    if decision is not None and decision not in DECISIONS:
        raise typer.BadParameter(f"choose one of {', '.join(DECISIONS)}, not {decision!r}", param_hint="--decision")


@contextlib.contextmanager
def _model_errors():
    """A model that cannot be used (or a bad provider/window option) ends the command with its message."""
    from ser_edge.model import ModelError

    try:
        yield
    except (ModelError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err


ENGINES = ("local", "ray")


@app.command()
def score(
    paths: Optional[List[Path]] = typer.Argument(None, help="Audio files and/or folders of audio files."),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="Write rows here: .csv (default format) or .jsonl. Default: CSV to stdout."),
    manifest: Optional[Path] = typer.Option(
        None, help="Also score the files this list names, in its order: a text file with one path per line "
                   "(blank lines and # comments skipped) or a .csv file with a 'path' column. Relative paths are "
                   "relative to the manifest's folder. Read line by line, so it may list millions of files."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Also look in sub-folders."),
    windows: bool = typer.Option(False, help="Add a row per analysis window (times in seconds)."),
    engine: str = typer.Option("local", help="local: processes on this machine; ray: actors on a Ray cluster "
                                             "(pip install 'ser-edge[ray]')."),
    ray_address: Optional[str] = typer.Option(
        None, envvar="RAY_ADDRESS", help="With --engine ray: the cluster to join (auto or host:port). "
                                         "Default: start a local Ray cluster for the run."),
    jobs: int = typer.Option(0, help="Parallel processes (0: all cores); with --engine ray, actors of one CPU "
                                     "each (0: one per CPU of the cluster, and never more)."),
    resume: bool = typer.Option(False, help="Skip files that already have a row in --output and append the rest."),
    model: Optional[Path] = typer.Option(None, help="An exported ser-edge model (default: the bundled one)."),
    provider: str = typer.Option("cpu", help="cpu, cuda or auto."),
    decision: Optional[str] = _DECISION,
    min_confidence: float = _MIN_CONFIDENCE,
) -> None:
    """Label the emotion of every file: one row per file (label, per-class probabilities, duration).

    Rows come in a fixed order: the files given (folders sorted), then the manifest's. A file
    that cannot be read (corrupt, empty, unsupported) gets an error row with the reason and
    the run goes on; a file without speech gets status no_speech (too_short when it is under
    0.25 s). Both engines write the same rows. Exit code: 0 when every file was read, 1 when
    any failed, 2 for bad input (no audio files found, an unusable model, manifest or output,
    Ray missing or unreachable), 130 when interrupted (rerun with --resume to continue).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ser_edge.model import OnnxModel
    from ser_edge.scoring import (ManifestError, RowWriter, audio_below, collect_files, default_jobs, done_paths,
                                  drop_torn_line, mark_uncertain, read_manifest, score_files)

    if engine not in ENGINES:
        raise typer.BadParameter(f"choose one of {', '.join(ENGINES)}, not {engine!r}", param_hint="--engine")
    _check_decision(decision)
    if not paths and manifest is None:
        raise typer.BadParameter("give audio files or folders, or --manifest FILE", param_hint="PATHS")
    if resume and output is None:
        raise typer.BadParameter("--resume needs --output", param_hint="--resume")
    paths = paths or []
    engine_errors: tuple = ()
    if engine == "ray":
        from ser_edge.ray_engine import RayEngineError, RayPool, require_ray

        engine_errors = (RayEngineError,)
        with _ray_errors(engine_errors):
            require_ray()
    with _model_errors():
        labels = OnnxModel(model, provider=provider).labels  # checks the model before any work
    files = collect_files(paths, recursive)

    def listed():
        yield from files
        if manifest is not None:
            yield from read_manifest(manifest)

    if resume and output:
        drop_torn_line(output)
    skip = done_paths(output) if resume and output else set()
    try:
        n_listed = n_todo = 0
        for f in listed():  # counted first, so that the progress bar knows the total
            n_listed += 1
            n_todo += str(f) not in skip
    except ManifestError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    if not n_listed:
        hint = ""
        below = sum(audio_below(p) for p in paths if p.is_dir()) if not recursive else 0
        if below:
            hint = f"; its sub-folders hold {below} audio file(s): add -r (--recursive) to score them"
        sources = [*map(str, paths), *([f"the manifest {manifest}"] if manifest else [])]
        typer.echo(f"error: no audio files found in {', '.join(sources)}{hint}", err=True)
        raise typer.Exit(code=2)
    todo = (f for f in listed() if str(f) not in skip)
    jsonl = output is not None and output.suffix.lower() == ".jsonl"
    append = resume and output is not None and output.exists() and output.stat().st_size > 0
    stdout = sys.stdout
    counts = {"ok": 0, "error": 0, "no_speech": 0, "too_short": 0}
    interrupted = False
    with contextlib.ExitStack() as stack:
        try:
            if engine == "ray":
                # Ray prints its workers' failures to sys.stdout, which may be carrying the rows.
                stack.enter_context(contextlib.redirect_stdout(sys.stderr))
                with _ray_errors(engine_errors):
                    pool = stack.enter_context(RayPool(jobs, str(model) if model else None, provider, ray_address,
                                                             decision))
                results = pool.score(todo, windows, n_todo)
            else:
                results = score_files(todo, jobs or default_jobs(), str(model) if model else None, provider, windows,
                                      decision)
            stack.callback(results.close)
            try:
                if output:
                    output.parent.mkdir(parents=True, exist_ok=True)
                stream = stack.enter_context(output.open("a" if append else "w", encoding="utf-8", newline="")) \
                    if output else stdout
            except OSError as err:
                typer.echo(f"error: cannot write {output} ({err.strerror or err}); choose another --output", err=True)
                raise typer.Exit(code=2) from err
            writer = RowWriter(stream, jsonl, labels, header=not append)
            progress = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err_console,
                                transient=output is None)
            with progress:
                task = progress.add_task("scoring", total=n_todo, rate="")
                start = time.perf_counter()
                for n, rows in enumerate(results, 1):
                    writer.write(mark_uncertain(rows, min_confidence))
                    counts[rows[0]["status"]] = counts.get(rows[0]["status"], 0) + 1
                    progress.update(task, advance=1, rate=f"{n / (time.perf_counter() - start):.1f} files/s")
        except KeyboardInterrupt:
            interrupted = True
        except engine_errors as err:  # a worker lost its model mid-run
            typer.echo(f"error: {err}" + ("; then rerun with --resume to continue" if output else ""), err=True)
            raise typer.Exit(code=2) from err
    done = sum(counts.values())
    summary = (f"{done} of {n_todo} file(s) done: {counts['ok']} labelled, {counts['no_speech']} without speech, "
               f"{counts['too_short']} too short, {counts['error']} failed")
    if skip:
        summary += f"; {n_listed - n_todo} already in {output}"
    err_console.print(summary)
    if interrupted:
        hint = (f"rerun the same command with --resume to score the other {n_todo - done}" if output
                else "use -o FILE next time, then --resume can continue an interrupted run")
        err_console.print(f"interrupted: {hint}")
        raise typer.Exit(code=130)
    if counts["error"]:
        raise typer.Exit(code=1)


@contextlib.contextmanager
def _ray_errors(errors: tuple):
    """Ray missing, unreachable, or unable to load the model ends the command with its message."""
    try:
        yield
    except errors as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err


PORTAUDIO_HELP = ("the PortAudio library is missing, which the microphone needs; on Debian/Ubuntu: "
                  "sudo apt-get install libportaudio2 (macOS: brew install portaudio)")


def _sounddevice():
    try:
        import sounddevice
    except OSError as err:  # raised by sounddevice when libportaudio cannot be loaded
        typer.echo(f"error: {PORTAUDIO_HELP} ({err})", err=True)
        raise typer.Exit(code=2) from err
    except ImportError as err:
        typer.echo("error: the microphone needs the sounddevice package: pip install sounddevice", err=True)
        raise typer.Exit(code=2) from err
    return sounddevice


def _recording(path: Optional[Path], rate: int):
    """The WAV file `listen --record` writes what it is given to (float32, so that scoring it
    later sees the very samples the stream saw), or a context that does nothing."""
    import contextlib

    import soundfile as sf

    if path is None:
        return contextlib.nullcontext()
    return sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="FLOAT", format="WAV")


def _input_device(sd, device: Optional[str]):
    """The device index or name and its native rate; exits with a hint when there is none."""
    spec = int(device) if device is not None and device.isdigit() else device
    try:
        found = sd.query_devices(spec, kind="input")
    except (ValueError, sd.PortAudioError) as err:
        what = f"input device {device!r}" if device is not None else "default input device"
        typer.echo(f"error: no {what} ({err}); list them with: ser-edge listen --list-devices", err=True)
        raise typer.Exit(code=2) from err
    if found["max_input_channels"] < 1:
        typer.echo(f"error: {found['name']!r} has no input channels; choose another with --device", err=True)
        raise typer.Exit(code=2)
    return spec, int(found["default_samplerate"]), found["name"]


@app.command()
def listen(
    device: Optional[str] = typer.Option(None, help="Input device, by name or index (see --list-devices)."),
    list_devices: bool = typer.Option(False, "--list-devices", help="List the input devices and exit."),
    json_lines: bool = typer.Option(False, "--json", help="Print one JSON event per line instead of the live view."),
    duration: Optional[float] = typer.Option(None, help="Stop after this many seconds of audio."),
    model: Optional[Path] = typer.Option(None, help="An exported ser-edge model (default: the bundled one)."),
    provider: str = typer.Option("cpu", help="cpu, cuda or auto."),
    window_s: Optional[float] = typer.Option(None, help="Analysis window in seconds (default: the model's)."),
    hop_s: Optional[float] = typer.Option(None, help="Hop between windows in seconds (default: the model's)."),
    decision: Optional[str] = _DECISION,
    min_confidence: float = _MIN_CONFIDENCE,
    record: Optional[Path] = typer.Option(
        None, help="Also write what the microphone gave to this WAV file (32-bit float, the device's rate, "
                   "replacing the file): offline scoring of it with the same model and options finds the same events."),
) -> None:
    """Classify the emotion of live speech from the microphone.

    Opens the input device at its native rate (resampled in the stream). The live view
    shows the current label, a bar per class, speech/silence and the time; --json prints
    one event per speech segment instead. Ctrl-C stops with a summary.
    """
    import queue

    _check_decision(decision)
    if record is not None and record.suffix.lower() != ".wav":
        typer.echo(f"error: --record writes a WAV file: give a name ending in .wav, not {record.name!r}", err=True)
        raise typer.Exit(code=2)
    if record is not None and not record.parent.is_dir():
        typer.echo(f"error: cannot record to {record}: the folder {record.parent} does not exist", err=True)
        raise typer.Exit(code=2)
    sd = _sounddevice()
    if list_devices:
        inputs = [(i, d) for i, d in enumerate(sd.query_devices()) if d["max_input_channels"] > 0]
        if not inputs:
            typer.echo("error: no input device found: connect a microphone (or check that the sound server "
                       "runs and this user may use it)", err=True)
            raise typer.Exit(code=1)
        table = Table(title="input devices")
        for column in ("index", "name", "channels", "default rate Hz"):
            table.add_column(column)
        for i, d in inputs:
            table.add_row(str(i), d["name"], str(d["max_input_channels"]), f"{d['default_samplerate']:.0f}")
        Console().print(table)
        return
    from ser_edge.stream import StreamRecognizer

    spec, rate, name = _input_device(sd, device)
    chunks: queue.Queue = queue.Queue()
    overflows = 0

    def callback(data, frames, when, status) -> None:  # PortAudio's thread: hand over, nothing more
        nonlocal overflows
        if status.input_overflow:
            overflows += 1
        chunks.put(data[:, 0].copy())

    events, latest = [], {}
    with _model_errors():
        stream = StreamRecognizer(str(model) if model else None, window_s=window_s, hop_s=hop_s, provider=provider,
                                  on_window=lambda w: latest.update(window=w), decision=decision)

    def on_events(new) -> None:
        for e in new:
            events.append(e)
            if json_lines:
                label = shown_label(e.label, e.probabilities.values(), min_confidence)
                print(json.dumps({"start_s": round(e.start_s, 3), "end_s": round(e.end_s, 3), "label": label,
                                  "probabilities": {k: round(v, 4) for k, v in e.probabilities.items()}}), flush=True)

    def view():
        from rich.panel import Panel

        w = latest.get("window")
        grid = Table.grid(padding=(0, 1))
        for label in stream.model.labels:
            p = w.probabilities[label] if w else 0.0
            grid.add_row(f"{label:>8s}", "█" * int(round(30 * p)) + "·" * (30 - int(round(30 * p))), f"{p:.2f}")
        state = "[green]speech[/green]" if stream.in_speech else "[dim]silence[/dim]"
        shown = shown_label(w.label, w.probabilities.values(), min_confidence) if w else "…"
        title = f"{shown}  |  {state}  |  {stream.seconds:6.1f} s  |  {name}"
        subtitle = "Ctrl-C to stop"
        if events:  # the decision of the last segment (the bars follow the 2 s windows as they come)
            e = events[-1]
            said = shown_label(e.label, e.probabilities.values(), min_confidence)
            subtitle = f"last segment {e.start_s:.1f}-{e.end_s:.1f} s: {said}  |  " + subtitle
        return Panel(grid, title=title, subtitle=subtitle)

    try:  # the file first: a path it cannot write stops here, before the device is opened
        recording = _recording(record, rate)
    except RuntimeError as err:  # soundfile's error for a path it cannot open for writing
        typer.echo(f"error: cannot record to {record}: {err}", err=True)
        raise typer.Exit(code=2) from err
    try:
        audio = sd.InputStream(device=spec, samplerate=rate, channels=1, dtype="float32", callback=callback)
    except sd.PortAudioError as err:
        with recording:  # closed (an empty recording, if any, is left as a valid file)
            pass
        typer.echo(f"error: cannot open {name!r} at {rate} Hz ({err}); choose another device with --device", err=True)
        raise typer.Exit(code=2) from err
    from rich.live import Live

    live = None if json_lines else Live(view(), console=err_console, refresh_per_second=8)
    try:
        with audio, recording:
            if live:
                live.start()
            while duration is None or stream.seconds < duration:
                try:
                    chunk = chunks.get(timeout=0.5)
                except queue.Empty:
                    continue
                if record is not None:
                    recording.write(chunk)
                on_events(stream.push(chunk, rate))
                if live:
                    live.update(view())
    except KeyboardInterrupt:
        pass
    finally:
        if live:
            live.stop()
    on_events(stream.close())
    shown = [shown_label(e.label, e.probabilities.values(), min_confidence) for e in events]
    counts = {label: shown.count(label) for label in stream.model.labels}
    if min_confidence > 0:
        counts[UNCERTAIN] = shown.count(UNCERTAIN)
    err_console.print(f"listened {stream.seconds:.1f} s: {len(events)} speech segment(s) {counts}; "
                      f"input overflows: {overflows}")


@app.command()
def info(model: Optional[Path] = typer.Option(None, help="An exported ser-edge model (default: the bundled one)."),
         provider: str = typer.Option("auto", help="cpu, cuda or auto.")) -> None:
    """Show the model (card, labels, feature config, windows) and the available ONNX Runtime providers."""
    from ser_edge.model import DEFAULT_MODEL, OnnxModel

    with _model_errors():
        m = OnnxModel(model, provider=provider)
    console = Console()
    table = Table(show_header=False)
    for key in ("path", "precision", "labels", "window_s", "hop_s", "provider", "available_providers"):
        value = m.info[key]
        table.add_row(key, ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value))
    table.add_row("size", f"{m.info['size_mb']:.2f} MB")
    table.add_row("decision", {"segment": "each speech segment in one pass, with context",
                               "windows": "each speech segment by the mean of its windows",
                               "blend": "each speech segment by the mean of one pass over it (with context) "
                                        "and of its windows"}[m.decision])
    if m.temperature is not None:
        table.add_row("calibration", f"logits divided by a temperature of {m.temperature:.3f}")
    table.add_row("feature config", m.feature_config.to_json())
    if "note" in m.info:
        table.add_row("note", m.info["note"])
    if m.adapted:
        a, base = m.adapted, m.adapted.get("base", {})
        held = a.get("heldout", {})
        scored = (f"; held-out UAR {100 * held['uar']:.1f} % on {held.get('clips', '?')} clip(s)"
                  if "uar" in held else "")
        table.add_row("adapted", f"from {base.get('file', '?')} ({', '.join(base.get('labels', []))}) on "
                                 f"{a.get('fitted_on', '?')} clip(s) on {a.get('date', '?')}{scored}; "
                                 "its probabilities are not calibrated")
    console.print(table)
    card = DEFAULT_MODEL.with_name("MODEL_CARD.md") if model is None else None
    if card is not None and card.is_file():
        from rich.markdown import Markdown

        console.print(Markdown(card.read_text()))


# ----------------------------------------------------------------------------- adaptation


def _confusion_table(title: str, report: dict, labels: list) -> Table:
    table = Table(title=title)
    table.add_column("true \\ predicted")
    for label in labels:
        table.add_column(label, justify="right")
    table.add_column("recall", justify="right")
    for label, row in zip(labels, report["confusion"]):
        recall = report["recall"].get(label)
        table.add_row(label, *map(str, row), f"{100 * recall:.0f} %" if recall is not None else "-")
    return table


@app.command()
def adapt(
    data: Path = typer.Argument(..., help="A folder with one sub-folder of clips per label, or a CSV manifest "
                                          "with columns path,label[,speaker] (paths relative to the manifest)."),
    output: Path = typer.Option(..., "--output", "-o", help="The adapted model to write (.onnx); a report "
                                                           "MODEL.report.json is written beside it."),
    model: Optional[Path] = typer.Option(None, help="The model to adapt (default: the bundled one)."),
    holdout: float = typer.Option(0.3, min=0.0, max=0.9, help="Part held out to score the adapted model (whole "
                                                             "speakers when the manifest names them); 0 fits on "
                                                             "every clip and reports no score."),
    seed: int = typer.Option(0, help="Random seed of the held-out split."),
    threads: int = typer.Option(1, min=1, help="CPU threads for ONNX Runtime."),
) -> None:
    """Adapt a model to your own labels and voices from a few clips per label, on the CPU.

    Any label set of two or more labels works (they need not match the base model's), with
    at least 3 clips each; a few dozen per label do better. The base model's pooled
    attention vector of every analysis window is kept and a new output layer (logistic
    regression) is fitted on it: seconds, not hours, and no PyTorch. The result is an
    ordinary ser-edge model: use it with `score --model`, `listen --model`, `info --model`
    or Recognizer("mine.onnx"). Clips that cannot be read or hold no speech are left out
    and named. Exit code: 0 on success, 2 for unusable data or options.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ser_edge.adapt import AdaptError, read_labelled
    from ser_edge.adapt import adapt as run_adapt

    if output.suffix.lower() != ".onnx":
        typer.echo(f"error: --output {output} should end in .onnx (an ONNX model is written)", err=True)
        raise typer.Exit(code=2)
    try:
        clips = read_labelled(data)
    except AdaptError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    counts = {label: sum(c.label == label for c in clips) for label in sorted({c.label for c in clips})}
    err_console.print(f"{len(clips)} clip(s): " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    progress = Progress(TextColumn("reading clips"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=err_console, transient=True)
    try:
        with _model_errors(), progress:
            task = progress.add_task("clips", total=len(clips))
            result = run_adapt(clips, output, model=model, holdout=holdout, seed=seed,
                               threads=threads, progress=lambda n: progress.update(task, completed=n))
    except AdaptError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    except OSError as err:
        where = err.filename or output
        typer.echo(f"error: {where}: {err.strerror or err}"
                   + ("; choose another --output" if str(where) == str(output) else ""), err=True)
        raise typer.Exit(code=2) from err
    report = result.report
    if report["unusable"]:
        err_console.print(f"left out {len(report['unusable'])} clip(s):")
        for path, why in list(report["unusable"].items())[:20]:
            err_console.print(f"  {path}: {why}", markup=False, highlight=False, soft_wrap=True)
        if len(report["unusable"]) > 20:
            err_console.print(f"  ... and {len(report['unusable']) - 20} more (all in the report)")
    console = Console()
    labels = report["labels"]
    if "heldout" in report:
        kind = "speaker-independent" if report["speaker_independent"] else "clips held out (speakers may repeat)"
        console.print(f"held out: {report['held_out']} clip(s), {kind}; fitted on {report['fitted_on']}")
        console.print(_confusion_table(f"adapted: UAR {100 * report['heldout']['uar']:.1f} %", report["heldout"],
                                       labels))
        if "base_heldout" in report:
            console.print(_confusion_table(f"base model as it is: UAR {100 * report['base_heldout']['uar']:.1f} %",
                                           report["base_heldout"], labels))
        if not report["speaker_independent"]:
            console.print("the held-out clips may share speakers with the fitted ones, which flatters the score; "
                          "add a speaker column to a CSV manifest for a speaker-independent figure")
    else:
        console.print(f"fitted on all {report['fitted_on']} clip(s); nothing held out, so no score")
    console.print(f"wrote {result.path} and {result.path.with_suffix('.report.json')}; use it with "
                  f"ser-edge listen --model {result.path}", markup=False, highlight=False, soft_wrap=True)


# ----------------------------------------------------------------------------- training

evaluate_app = typer.Typer(help="Run the speaker-independent evaluation protocols (needs the train extra).",
                           no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")


def _require_training() -> None:
    """Fail with the install command, not an ImportError, when the train extra is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        typer.echo("error: training needs PyTorch; install the train extra: pip install 'ser-edge[train]' "
                   "(from a checkout of the source: pip install -e '.[train]'; for a CPU-only PyTorch first: "
                   "pip install torch --index-url https://download.pytorch.org/whl/cpu)", err=True)
        raise typer.Exit(code=2)


@contextlib.contextmanager
def _user_errors():
    """Bad input (a corpus, an option, a model file) ends the command with its message, not a traceback."""
    from ser_edge.training.corpora import CorpusError

    try:
        yield
    except (ValueError, RuntimeError, CorpusError, AudioError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err


def _recipe(name: str, epochs: Optional[int], patience: Optional[int], balance: Optional[str], device: str,
            seed: int, preset: Optional[str] = None, ensemble: Optional[int] = None):
    """The named recipe with the options given on the command line; checked up front, before
    any feature is computed."""
    from ser_edge.training.recipes import get_recipe
    from ser_edge.training.trainer import select_device

    given = {"max_epochs": epochs, "patience": patience, "balance": balance}
    recipe = get_recipe(name).derive(features=preset,
                                     train={"device": device, "seed": seed,
                                            **{k: v for k, v in given.items() if v is not None}},
                                     ensemble=ensemble)
    recipe.check_runnable(name)
    select_device(device)  # fails now if CUDA is asked for and missing
    return recipe


def _read(spec: Path, four_class: bool):
    from ser_edge.training.corpora import CorpusError, read_corpus, to_shared

    try:
        clips = read_corpus(spec)
    except CorpusError as err:
        raise typer.BadParameter(str(err)) from err
    return to_shared(clips) if four_class else clips


_RECIPE = typer.Option("default", help="Training recipe: default (the bundled model's) or seed (the original one).")
_EPOCHS = typer.Option(None, help="Most epochs (default: the recipe's); early stopping may end sooner.")
_PATIENCE = typer.Option(None, help="Epochs without a better validation score before stopping (default: the recipe's).")
_BALANCE = typer.Option(None, help="Class balancing: undersample, weights or none (default: the recipe's).")
_DEVICE = typer.Option("auto", help="auto (CUDA when available), cpu or cuda.")
_SEED = typer.Option(0, help="Random seed (splits, initialisation, batches).")
_THREADS = typer.Option(1, min=1, help="CPU threads for PyTorch. 1 is fastest for this small model unless the "
                                      "machine is otherwise idle and has cores to spare; more threads than free "
                                      "cores make training many times slower.")


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _teacher_outputs(examples, folder: Optional[Path], what: str = "embeddings") -> dict:
    """The teacher's pooled vector ("embeddings") or encoder frames ("frames") of every clip; a
    missing teacher model ends the command with the way to get it."""
    from ser_edge.training import teacher as teachers

    try:
        folder = teachers.teacher_folder(folder)
    except teachers.TeacherError as err:
        typer.echo(f"error: this recipe learns from a teacher: {err}", err=True)
        raise typer.Exit(code=2) from err
    Console().print(f"teacher: Whisper-base from {folder}, {what} of every clip (cached after the first run)")
    return getattr(teachers, what)([e.path for e in examples], folder, progress=True)


@contextlib.contextmanager
def _stop_on_sigterm():
    """SIGTERM (a scheduler or `kill` stopping the job) is handled like Ctrl-C: the trainer
    keeps its best epoch so far and the command saves it."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command()
def train(
    corpora: List[Path] = typer.Argument(..., help="Corpus folders (URDU or EmoDB layout) or CSV manifests (path,label,speaker[,language])."),
    out: Path = typer.Option(Path("model.pt"), "--out", "-o", help="Checkpoint to write."),
    four_class: bool = typer.Option(False, "--four-class", help="Keep only angry/happy/neutral/sad (implied by several corpora)."),
    recipe: str = _RECIPE,
    preset: Optional[str] = typer.Option(None, help="Feature preset instead of the recipe's: seed, logmel or mfcc."),
    epochs: Optional[int] = _EPOCHS, patience: Optional[int] = _PATIENCE, balance: Optional[str] = _BALANCE,
    device: str = _DEVICE, seed: int = _SEED, threads: int = _THREADS,
    ensemble: Optional[int] = typer.Option(None, help="Models to train (seeds SEED, SEED+1, ...) and average in one "
                                                      "exported graph (default: the recipe's); more is slower to train "
                                                      "and to run, and often a little better."),
    teacher: Optional[Path] = typer.Option(None, help="Whisper-base folder (CTranslate2 format) for recipes that "
                                                      "learn from a teacher (default: $SER_EDGE_TEACHER or "
                                                      "~/.cache/ser-edge/teachers/whisper-base); training only."),
) -> None:
    """Train the Bi-LSTM-attention classifier on one or more corpora and save a checkpoint.

    About a seventh of the clips (whole speakers) is held out for early stopping. Ctrl-C or
    SIGTERM stops training and saves the best epoch so far to --out (exit code 130).
    """
    _require_training()
    import torch

    from ser_edge.training.corpora import outside, to_shared
    from ser_edge.training.data import FeatureCache, load_examples
    from ser_edge.training.protocols import fit

    with _user_errors():
        _set_threads(threads)
        chosen = _recipe(recipe, epochs, patience, balance, device, seed, preset, ensemble)
        cache = FeatureCache(chosen.features)
        four = four_class or len(corpora) > 1
        read = [c for spec in corpora for c in _read(spec, False)]
        clips = to_shared(read) if four else read
        labels = sorted({c.label for c in clips})
        examples, skipped = load_examples(clips, labels, cache, progress=True)
        Console().print(f"{len(examples)} clips, {len({e.group for e in examples})} speakers, labels {labels}; "
                        f"{len(skipped)} skipped")
        extra = []
        if chosen.train.own_labels > 0 and four:  # the clips outside the 4 classes train the recipe's own-label head
            extra, _ = load_examples(outside(read, labels), labels, cache, progress=True, others=True)
            Console().print(f"{len(extra)} more clips outside those labels train the head over every label of "
                            "their corpus")
        teaching = chosen.train.distill > 0 or chosen.train.embed_distill > 0
        vectors = _teacher_outputs(examples, teacher) if teaching else None
        if chosen.train.frame_distill > 0:  # label-free targets: the clips outside the labels get them too
            from ser_edge.training.teacher import attach_frames

            examples, extra = attach_frames(examples, _teacher_outputs(examples + extra, teacher, "frames"), extra)
        results = []
        with _stop_on_sigterm():
            for k in range(chosen.ensemble):
                if chosen.ensemble > 1:
                    Console().print(f"model {k + 1} of {chosen.ensemble} (seed {seed + k})")
                member = dataclasses.replace(chosen.train, seed=seed + k)
                taught = examples
                if teaching:
                    from ser_edge.training.teacher import attach_for_training

                    taught = attach_for_training(examples, vectors, len(labels), member)
                try:
                    result = fit(taught, chosen.model_config(len(labels)), member, log=Console().print,
                                 progress=True, augment=chosen.augmenter(cache), extra=extra)
                except KeyboardInterrupt:
                    if not results:
                        typer.echo("interrupted before the first epoch ended: nothing to save", err=True)
                        raise typer.Exit(code=130) from None
                    results[-1].interrupted = True
                    break
                if result.interrupted and results:
                    Console().print(f"model {k + 1} was interrupted: it is left out, the {len(results)} finished "
                                    "model(s) are kept")
                    results[-1].interrupted = True
                    break
                results.append(result)
                if result.interrupted:
                    break
    from ser_edge.training.export import checkpoint_states
    from ser_edge.training.model import Ensemble

    model = results[0].model if len(results) == 1 else Ensemble([r.model for r in results])
    best = [r.best_epoch for r in results]
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({**checkpoint_states(model), "model_config": model.config.to_dict(),
                "feature_config": chosen.features.to_json(), "labels": labels,
                "history": results[0].history if len(results) == 1 else [r.history for r in results],
                "best_epoch": best[0] if len(best) == 1 else best, "corpora": [str(c) for c in corpora],
                "recipe": {"name": recipe, **chosen.derive(ensemble=len(results)).to_dict()}}, out)
    what = f"best epoch {best[0]}" if len(best) == 1 else f"{len(best)} models, best epochs {best}"
    Console().print(f"saved {out} ({what})")
    if results[-1].interrupted:
        typer.echo(f"interrupted: {out} holds the best epoch so far of {len(results)} of {chosen.ensemble} model(s) "
                   f"({what})", err=True)
        raise typer.Exit(code=130)


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A checkpoint written by `ser-edge train`."),
    out: Path = typer.Option(Path("model.onnx"), "--out", "-o", help="The fp32 ONNX model to write."),
    int8: bool = typer.Option(True, help="Also write the int8 model beside it (NAME.int8.onnx)."),
    window_s: float = typer.Option(2.0, help="Analysis window the runtime should use, in seconds."),
    hop_s: float = typer.Option(0.5, help="Hop between analysis windows, in seconds."),
) -> None:
    """Export a trained checkpoint to ONNX (fp32 and int8) with ser-edge metadata."""
    _require_training()
    from ser_edge.training.export import decision_for, export_onnx, load_checkpoint, quantise_int8

    if not checkpoint.is_file():
        raise typer.BadParameter(f"{checkpoint} does not exist", param_hint="CHECKPOINT")
    try:
        model, meta = load_checkpoint(checkpoint)
    except Exception as err:  # torch raises many kinds for a file that is not a checkpoint
        raise typer.BadParameter(f"{checkpoint} is not a ser-edge checkpoint ({err})", param_hint="CHECKPOINT") from err
    training = {"corpora": meta.get("corpora", []), "best_epoch": meta.get("best_epoch")}
    fp32 = export_onnx(model, FeatureConfig.from_json(meta["feature_config"]), meta["labels"], out,
                       window_s=window_s, hop_s=hop_s, training=training,
                       decision=decision_for(meta.get("recipe", {}).get("train", {})))
    Console().print(f"wrote {fp32} ({fp32.stat().st_size / 1e6:.2f} MB)")
    if int8:
        q = quantise_int8(fp32, fp32.with_suffix(".int8.onnx"))
        Console().print(f"wrote {q} ({q.stat().st_size / 1e6:.2f} MB)")


def _write_outcome(out: Path, name: str, title: str, outcome, protocol: str) -> None:
    from ser_edge.training.report import save_outcome

    summary = save_outcome(out, name, title, outcome, protocol)
    Console().print(f"{title}: UAR {summary['uar']:.3f}  WA {summary['wa']:.3f}  macro-F1 {summary['macro_f1']:.3f}"
                    f"  -> {out / name}.json")


@evaluate_app.command("within")
def evaluate_within(
    corpus: Path = typer.Argument(..., help="Corpus folder or CSV manifest."),
    out: Path = typer.Option(Path("results"), "--out", "-o", help="Folder for JSON and PNG results."),
    folds: int = typer.Option(10, help="Speaker-grouped folds."),
    loso: bool = typer.Option(False, help="Leave one speaker out instead of k folds."),
    four_class: bool = typer.Option(False, "--four-class", help="Keep only angry/happy/neutral/sad."),
    recipe: str = _RECIPE, epochs: Optional[int] = _EPOCHS, patience: Optional[int] = _PATIENCE,
    balance: Optional[str] = _BALANCE, device: str = _DEVICE, seed: int = _SEED, threads: int = _THREADS,
) -> None:
    """Within-corpus, speaker-independent k-fold (or LOSO) evaluation. Finished folds are kept
    in OUT, so an interrupted run (Ctrl-C, SIGTERM) resumes when the same command is run again."""
    _require_training()
    import hashlib

    from ser_edge.training.data import FeatureCache, load_examples
    from ser_edge.training.protocols import Outcome, within_corpus

    with _user_errors():
        _set_threads(threads)
        chosen = _recipe(recipe, epochs, patience, balance, device, seed)
        cache = FeatureCache(chosen.features)
        clips = _read(corpus, four_class)
        labels = sorted({c.label for c in clips})
        examples, skipped = load_examples(clips, labels, cache, progress=True)
        Console().print(f"{len(examples)} clips, {len({e.group for e in examples})} speakers; {len(skipped)} skipped")
        # Each finished fold is kept beside the results, so an interrupted evaluation resumes.
        key = hashlib.sha1(json.dumps([chosen.to_dict(), labels, folds, loso, [str(e.path) for e in examples]],
                                      sort_keys=True).encode()).hexdigest()[:12]
        fold_dir = out / f".folds-within-{corpus.stem}-{key}"
        speakers = len({e.group for e in examples})
        total = speakers if loso else min(folds, speakers)
        finished = {n: Outcome.load(fold_dir / f"fold{n}.json") for n in range(1, total + 1)
                    if (fold_dir / f"fold{n}.json").is_file()}
        if finished:
            Console().print(f"{len(finished)} of {total} folds already done (in {fold_dir}); running the rest")
        new: dict = {}

        def keep(n, fold):
            new[n] = fold
            fold.save(fold_dir / f"fold{n}.json")

        with _stop_on_sigterm():
            try:
                within_corpus(examples, labels, chosen.model_config(len(labels)), chosen.train, k=folds, loso=loso,
                              log=Console().print, augment=chosen.augmenter(cache),
                              folds=[n for n in range(1, total + 1) if n not in finished], done=keep)
            except KeyboardInterrupt:
                typer.echo(f"interrupted: {len(finished) + len(new)} of {total} folds are kept in {fold_dir}; "
                           "run the same command again to finish", err=True)
                raise typer.Exit(code=130) from None
        outcome = Outcome(labels)
        for n in range(1, total + 1):
            outcome.merge(finished.get(n) or new[n])
    protocol = "leave-one-speaker-out" if loso else f"speaker-grouped {folds}-fold"
    _write_outcome(out, f"within-{corpus.stem}", f"within {corpus.name}", outcome, f"{protocol}, utterance level")


@evaluate_app.command("cross")
def evaluate_cross(
    source: Path = typer.Argument(..., help="Training corpus."),
    target: Path = typer.Argument(..., help="Test corpus."),
    out: Path = typer.Option(Path("results"), "--out", "-o"),
    adapt: bool = typer.Option(True, help="Also run 10/20/30 % and 5/10/15-shot adaptation."),
    recipe: str = _RECIPE, epochs: Optional[int] = _EPOCHS, patience: Optional[int] = _PATIENCE,
    balance: Optional[str] = _BALANCE, device: str = _DEVICE, seed: int = _SEED, threads: int = _THREADS,
) -> None:
    """Zero-shot cross-corpus on the shared 4 classes, and adaptation with target clips."""
    _require_training()
    from ser_edge.training.corpora import SHARED_LABELS
    from ser_edge.training.data import FeatureCache, load_examples
    from ser_edge.training.protocols import adaptation, zero_shot

    labels = list(SHARED_LABELS)
    with _user_errors():
        _set_threads(threads)
        chosen = _recipe(recipe, epochs, patience, balance, device, seed)
        cache = FeatureCache(chosen.features)
        augment, model_config = chosen.augmenter(cache), chosen.model_config(4)
        source_clips, target_clips = _read(source, True), _read(target, True)
        shared = {c.path.resolve() for c in source_clips} & {c.path.resolve() for c in target_clips}
        if shared:
            raise ValueError(f"source and target share {len(shared)} file(s) (e.g. {next(iter(shared))}); "
                             "cross-corpus evaluation needs two different corpora")
        src, _ = load_examples(source_clips, labels, cache, progress=True)
        tgt, _ = load_examples(target_clips, labels, cache, progress=True)
        name = f"{source.stem}-to-{target.stem}"
        _write_outcome(out, f"zeroshot-{name}", f"zero-shot {source.name} -> {target.name}",
                       zero_shot(src, tgt, labels, model_config, chosen.train, log=Console().print, augment=augment),
                       "train on all source speakers, test on all target clips")
        if adapt:
            for setting, outcome in adaptation(src, tgt, labels, model_config, chosen.train,
                                               log=Console().print, augment=augment).items():
                _write_outcome(out, f"adapt-{name}-{setting.replace('%', 'pct')}", f"{name}, {setting} target",
                               outcome, f"source + {setting} of target (speakers disjoint from the target test half)")


@evaluate_app.command("all")
def evaluate_all(
    urdu: Optional[Path] = typer.Option(None, help="The URDU corpus folder."),
    emodb: Optional[Path] = typer.Option(None, help="The EmoDB (2-s copy) folder."),
    ravdess: Optional[Path] = typer.Option(None, help="The RAVDESS speech folder (Actor_XX sub-folders)."),
    out: Path = typer.Option(Path("results/comparison"), "--out", "-o", help="Folder for the runs and the page."),
    whisper: Optional[Path] = typer.Option(None, help="Whisper-base folder (CTranslate2) for the Whisper anchor; "
                                                      "../shared/tools/get-whisper-base puts it in place."),
    systems: Optional[List[str]] = typer.Option(None, "--system", help="Only these systems (ser-edge, egemaps-svm, "
                                                                       "compare-svm, whisper-logreg); repeatable."),
    seeds: List[int] = typer.Option([0, 1, 2], "--seed", help="ser-edge training seeds; repeatable."),
    folds: int = typer.Option(10, help="Speaker-grouped folds of the within-corpus and joint protocols."),
    draws: int = typer.Option(3, help="Draws of the added clips per adaptation setting (0: no adaptation)."),
    jobs: int = typer.Option(1, help="Training processes, one thread each."),
    recipe: str = _RECIPE, device: str = _DEVICE,
) -> None:
    """Every protocol on the corpora given, ser-edge beside the anchors, on the same folds:
    within each corpus, zero-shot pairs, leave one corpus out, joint, adaptation. Finished runs
    are kept in OUT/runs and reused, so an interrupted evaluation resumes where it stopped."""
    _require_training()
    from ser_edge.training.comparison import main as compare

    argv = [f"--{name}={path}" for name, path in (("urdu", urdu), ("emodb", emodb), ("ravdess", ravdess)) if path]
    if not argv:
        raise typer.BadParameter("give at least one corpus: --urdu, --emodb or --ravdess")
    argv += ["--out", str(out), "--recipe", recipe, "--folds", str(folds), "--draws", str(draws), "--jobs", str(jobs),
             "--device", device, "--seeds", *map(str, seeds)]
    if whisper:
        argv += ["--whisper", str(whisper)]
    if systems:
        argv += ["--systems", *systems]
    with _user_errors():
        compare(argv)


def main() -> None:
    """Entry point of the `ser-edge` script."""
    app()


if __name__ == "__main__":
    main()
