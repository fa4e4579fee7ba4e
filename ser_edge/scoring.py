"""Batch scoring of audio files: rows of results, in a deterministic order, with errors as rows."""

from __future__ import annotations

import csv
import io
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, TypeVar

import soundfile as sf

__all__ = ["AUDIO_SUFFIXES", "ManifestError", "RowWriter", "collect_files", "done_paths", "drop_torn_line",
           "read_manifest", "score_files", "score_one"]

T = TypeVar("T")

#: File name endings that the scorer picks up in folders (what libsndfile reads).
AUDIO_SUFFIXES = tuple(sorted({f".{k.lower()}" for k in sf.available_formats()} | {".oga", ".opus", ".aif"}))


def audio_below(folder: Path) -> int:
    """How many audio files the sub-folders of `folder` hold (what -r would add)."""
    return sum(1 for f in folder.glob("*/**/*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)


def collect_files(paths: Sequence[Path], recursive: bool = False) -> list[Path]:
    """Files given directly, plus the audio files in given folders; sorted, without duplicates."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            pattern = "**/*" if recursive else "*"
            out += sorted(f for f in p.glob(pattern) if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
        else:
            out.append(p)  # a missing or odd file still gets its error row
    return list(dict.fromkeys(out))


class ManifestError(Exception):
    """A manifest that cannot be used: missing, unreadable, or a CSV file without a `path` column."""


def read_manifest(manifest: Path) -> Iterator[Path]:
    """The files a manifest lists, in its order and as is (duplicates too), read line by line,
    so that a list of millions of files is never held in memory.

    A `.csv` manifest has a header with a `path` column; any other is a text file with one
    path per line (blank lines and lines starting with # are skipped). Relative paths are
    relative to the manifest's folder. Raises ManifestError at once, before any path is read.
    """
    try:
        stream = manifest.open(encoding="utf-8", newline="")
    except OSError as err:
        raise ManifestError(f"cannot read the manifest {manifest} ({err.strerror or err})") from err
    if manifest.suffix.lower() != ".csv":
        return _manifest_paths(stream, stream, manifest.parent)
    reader = csv.DictReader(stream)
    if "path" not in (reader.fieldnames or []):
        stream.close()
        raise ManifestError(f"the CSV manifest {manifest} has no 'path' column (its header: "
                            f"{', '.join(reader.fieldnames or []) or 'none'}); name the column of file paths 'path'")
    return _manifest_paths(stream, (row["path"] or "" for row in reader), manifest.parent)


def _manifest_paths(stream: io.TextIOBase, entries: Iterable[str], base: Path) -> Iterator[Path]:
    with stream:
        for entry in entries:
            entry = entry.strip()
            if entry and not entry.startswith("#"):
                yield base / entry


def batched(items: Iterable[T], n: int) -> Iterator[list[T]]:
    """Lists of `n` consecutive items (the last one shorter), taken lazily."""
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def mp_child() -> bool:
    import multiprocessing as mp

    return mp.parent_process() is not None


#: A recording shorter than this cannot hold one analysis frame of speech worth scoring.
MIN_DURATION_S = 0.25


@dataclass
class _Worker:
    recognizer: object = None


_worker = _Worker()


def init_worker(model: Optional[str], provider: str, decision: Optional[str] = None) -> None:
    """Per-process set-up: one recognizer, one ONNX Runtime thread (processes give the parallelism).
    Workers ignore Ctrl-C: the main process handles it once, for all of them."""
    import signal

    from ser_edge.recognizer import Recognizer

    if mp_child():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _worker.recognizer = Recognizer(model, provider=provider, threads=1, decision=decision)


def score_one(path: Path, windows: bool = False) -> list[dict]:
    """Rows for one file: the file's row, then (with `windows`) one row per analysis window."""
    from ser_edge.audio import AudioError

    rec = _worker.recognizer
    base = {"path": str(path), "kind": "file"}
    try:
        result = rec.predict_file(path)
    except AudioError as err:
        return [{**base, "status": "error", "error": str(err)}]
    except Exception as err:  # one bad file must not end the batch
        return [{**base, "status": "error", "error": f"{type(err).__name__}: {err}"}]
    row = {**base, "status": "ok", "duration_s": round(result.duration_s, 3), "label": result.label or "",
           **{f"p_{k}": round(v, 4) for k, v in result.probabilities.items()}}
    if result.label is None:
        # Not an error of the file: it was read, and holds no speech to label.
        too_short = result.duration_s < MIN_DURATION_S
        row["status"] = "too_short" if too_short else "no_speech"
        row["error"] = (f"too short to score ({result.duration_s:.2f} s; at least {MIN_DURATION_S:g} s)" if too_short
                        else "no speech detected")
    rows = [row]
    if windows:
        rows += [{"path": str(path), "kind": "window", "status": "ok", "start_s": round(w.start_s, 3),
                  "end_s": round(w.end_s, 3), "label": w.label,
                  **{f"p_{k}": round(v, 4) for k, v in w.probabilities.items()}} for w in result.windows]
    return rows


#: The label given where the most likely class is below the confidence the user asked for.
UNCERTAIN = "uncertain"


def shown_label(label: str, probabilities: Iterable[float], min_confidence: float) -> str:
    """`label`, or "uncertain" when the highest of `probabilities` is below `min_confidence`."""
    probabilities = list(probabilities)
    return UNCERTAIN if probabilities and max(probabilities) < min_confidence else label


def mark_uncertain(rows: list[dict], min_confidence: float) -> list[dict]:
    """Rows whose highest probability is below `min_confidence` get the label "uncertain"
    (their probabilities stay); 0 changes nothing."""
    if min_confidence <= 0:
        return rows
    for row in rows:
        if row.get("label"):
            probs = (v for k, v in row.items() if k.startswith("p_") and v is not None and v != "")
            row["label"] = shown_label(row["label"], probs, min_confidence)
    return rows


def drop_torn_line(output: Path) -> None:
    """Cut a last line left half-written by an interrupted run, so appended rows start clean."""
    if not output.is_file():
        return
    data = output.read_bytes()
    if data and not data.endswith(b"\n"):
        output.write_bytes(data[: data.rfind(b"\n") + 1])


def done_paths(output: Path) -> set[str]:
    """Files that already have a row in an earlier (maybe interrupted) output."""
    if not output.is_file():
        return set()
    with output.open(encoding="utf-8", newline="") as stream:
        rows = _json_rows(stream) if output.suffix.lower() == ".jsonl" else csv.DictReader(stream)
        return {r["path"] for r in rows if r.get("kind") == "file" and r.get("path")}


def _json_rows(lines: Iterable[str]) -> Iterator[dict]:
    for line in lines:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            return  # a half-written last line from an interruption


class RowWriter:
    """Writes rows as they come: JSON lines, or CSV with a fixed header (labels known up front)."""

    def __init__(self, stream, jsonl: bool, labels: Iterable[str], header: bool = True) -> None:
        self._stream, self._jsonl = stream, jsonl
        self._fields = ["path", "kind", "status", "label", *[f"p_{k}" for k in labels], "duration_s",
                        "start_s", "end_s", "error"]
        self._csv = None if jsonl else csv.DictWriter(stream, fieldnames=self._fields, extrasaction="ignore")
        if self._csv and header:
            self._csv.writeheader()

    def write(self, rows: Iterable[dict]) -> None:
        for row in rows:
            if self._jsonl:
                self._stream.write(json.dumps(row) + "\n")
            else:
                self._csv.writerow(row)
        self._stream.flush()


#: Files handed to the process pool at a time: keeps the pool's queue (and memory) bounded when
#: `files` is a long lazy list, at the cost of a short wait for the slowest file of each chunk.
POOL_CHUNK_PER_JOB = 64


def score_files(files: Iterable[Path], jobs: int, model: Optional[str], provider: str,
                windows: bool, decision: Optional[str] = None) -> Iterator[list[dict]]:
    """Rows per file, in the order of `files` (read lazily), computed by `jobs` processes."""
    if jobs <= 1:
        init_worker(model, provider, decision)
        for f in files:
            yield score_one(f, windows)
        return
    import multiprocessing as mp
    from functools import partial

    with mp.get_context("spawn").Pool(jobs, initializer=init_worker, initargs=(model, provider, decision)) as pool:
        for chunk in batched(files, POOL_CHUNK_PER_JOB * jobs):
            yield from pool.imap(partial(score_one, windows=windows), chunk, chunksize=1)


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
