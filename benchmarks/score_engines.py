"""Batch scoring, local processes against Ray actors on one machine: a script that prints Markdown tables.

    python benchmarks/score_engines.py [--files 3000] [--rounds 3] [--manifest-lines 1000000] [--seconds 20]

Every figure is a run of the `ser-edge score` command itself, in a fresh process:
- throughput: the same files (the shared corpora's 1655 clips, in turn, through a manifest) scored by
  --engine local with --jobs 1 and 2, and --engine ray with --jobs 1 and 2 (a local Ray
  cluster started by the command), the configurations taking turns, best of --rounds.
  Start-up is the wall time of scoring one file; files/s is (files - 1) / (wall time of
  all files - start-up), so it leaves out Python's, the pool's and Ray's start-up and shutdown.
  Ray's overhead per file is the difference in seconds per file between Ray and local with
  the same number of workers. The outputs of all configurations are checked to be equal;
- driver memory: a manifest of --manifest-lines paths to one short clip, scored for
  --seconds and then interrupted (Ctrl-C): the peak resident memory of the command's own
  process (VmHWM; Ray's own processes and the workers are not counted), against a manifest
  of 1,000 lines run for the same time.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import filecmp
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.wav"
DATA = Path(os.environ.get("SER_EDGE_DATA", ROOT.parent / "shared" / "data"))
CONFIGS = [("local", 1), ("local", 2), ("ray", 1), ("ray", 2)]


def corpus_files(n: int) -> list[Path]:
    """`n` clips of the three corpora, all of them in turn and again from the start when `n` is
    larger (else the demo clip repeated)."""
    clips = [c for corpus in ("urdu", "emodb-2s", "ravdess") for c in sorted((DATA / corpus).rglob("*"))
             if c.suffix in (".wav", ".flac")] or [DEMO]
    return [clips[i % len(clips)] for i in range(n)]


def command(manifest: Path, out: Path, engine: str, jobs: int) -> list[str]:
    return [sys.executable, "-m", "ser_edge", "score", "--manifest", str(manifest), "-o", str(out),
            "--engine", engine, "--jobs", str(jobs)]


def wall(manifest: Path, out: Path, engine: str, jobs: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t = time.perf_counter()
    done = subprocess.run(command(manifest, out, engine, jobs), capture_output=True, text=True, env=env)
    if done.returncode not in (0, 1):
        raise SystemExit(f"{engine} --jobs {jobs} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t


def peak_memory(manifest: Path, out: Path, engine: str, jobs: int, seconds: float) -> tuple[float, int]:
    """Peak RSS (MiB) of the command's process, interrupted after `seconds`, and the rows it wrote."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # SIGINT back to its default in the child: a benchmark started in the background by a shell
    # inherits it ignored, and the Ctrl-C below would then not stop the command.
    proc = subprocess.Popen(command(manifest, out, engine, jobs), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    status = Path(f"/proc/{proc.pid}/status")
    peak_kib, end = 0, time.time() + seconds
    while proc.poll() is None and time.time() < end:
        try:
            peak_kib = max(peak_kib, next(int(line.split()[1]) for line in status.read_text().splitlines()
                                          if line.startswith("VmHWM:")))
        except (OSError, StopIteration):
            pass
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    rows = out.read_text().count("\n") - 1 if out.exists() else 0
    return peak_kib / 1024, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--manifest-lines", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        files = corpus_files(args.files)
        many, one = tmp / "many.txt", tmp / "one.txt"
        many.write_text("".join(f"{f}\n" for f in files))
        one.write_text(f"{files[0]}\n")
        best: dict[tuple[str, int], list[float]] = {c: [float("inf"), float("inf")] for c in CONFIGS}
        for _ in range(args.rounds):
            for engine, jobs in CONFIGS:
                b = best[engine, jobs]
                b[0] = min(b[0], wall(one, tmp / "one.csv", engine, jobs))
                b[1] = min(b[1], wall(many, tmp / f"{engine}{jobs}.csv", engine, jobs))
        same = all(filecmp.cmp(tmp / "local1.csv", tmp / f"{e}{j}.csv", shallow=False) for e, j in CONFIGS)
        rate = {c: (len(files) - 1) / (b[1] - b[0]) for c, b in best.items()}

        print(f"{len(files)} files ({len(set(files))} clips of the shared corpora), {os.cpu_count()} cores, "
              f"best of {args.rounds}; rows of all four runs equal: {same}\n")
        print("| engine | --jobs | start-up s (1 file) | wall s (all files) | files/s without start-up |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for (engine, jobs), (startup, total) in best.items():
            print(f"| {engine} | {jobs} | {startup:.1f} | {total:.1f} | {rate[engine, jobs]:.0f} |")
        for jobs in (1, 2):
            overhead = 1 / rate["ray", jobs] - 1 / rate["local", jobs]
            print(f"\nRay's overhead per file with {jobs} worker(s): {overhead * 1e3:+.2f} ms "
                  f"(local: {1e3 / rate['local', jobs]:.2f} ms a file)")

        clip = files[0]
        big, small = tmp / "million.txt", tmp / "thousand.txt"
        with big.open("w") as f:
            for _ in range(args.manifest_lines):
                f.write(f"{clip}\n")
        small.write_text(f"{clip}\n" * 1000)
        print(f"\nDriver memory: manifests of one {clip.name} repeated, interrupted after {args.seconds:g} s\n")
        print("| engine | --jobs | manifest lines | peak RSS of the driver MiB | rows written before Ctrl-C |")
        print("| --- | ---: | ---: | ---: | ---: |")
        for engine in ("local", "ray"):
            for manifest, lines in ((small, 1000), (big, args.manifest_lines)):
                out = tmp / f"mem-{engine}-{lines}.csv"
                mib, rows = peak_memory(manifest, out, engine, 2, args.seconds)
                print(f"| {engine} | 2 | {lines:,} | {mib:.0f} | {rows:,} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
