"""Speed and memory of the runtime recognizer: a script that prints a Markdown table.

    python benchmarks/bench_runtime.py [--fp32 build/default-model/default.onnx] [--seconds 60]

- per-window latency, fp32 vs int8: one 2 s window (198 frames), 1 thread, median of
  --repeats runs, the two models taking turns;
- real-time factor of the whole pipeline (resampling, features, VAD, windows every 0.5 s,
  model, one pass over each segment) on one core, for continuous speech pushed in 10 ms
  chunks, beside the whole-band gate and beside segments decided by their windows alone;
- model sizes; peak RSS of a fresh process running a StreamRecognizer.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ser_edge.model import DEFAULT_MODEL, OnnxModel
from ser_edge.stream import StreamRecognizer, VadConfig

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.wav"
DATA = Path(os.environ.get("SER_EDGE_DATA", ROOT.parent / "shared" / "data"))

RSS_CHILD = """
import resource, sys, numpy as np, soundfile as sf
from ser_edge.stream import StreamRecognizer
x, rate = sf.read(sys.argv[1], dtype="float32")
s = StreamRecognizer(threads=1)
step = rate // 100
for i in range(0, len(x), step):
    s.push(x[i:i + step], rate)
s.close()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def continuous_speech(seconds: float) -> tuple[np.ndarray, int]:
    """Real clips back to back (URDU, 44.1 kHz) when the corpora are here, else the demo clip repeated."""
    clips = sorted((DATA / "urdu").rglob("*.wav"))
    parts, total, rate = [], 0.0, None
    source = clips if clips else [DEMO]
    i = 0
    while total < seconds:
        x, r = sf.read(source[i % len(source)], dtype="float32", always_2d=True)
        rate = rate or r
        if r == rate:
            parts.append(x.mean(axis=1))
            total += len(x) / r
        i += 1
    return np.concatenate(parts)[: int(seconds * rate)], rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, default=ROOT / "build" / "default-model" / "default.onnx")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    models = {"int8": OnnxModel(DEFAULT_MODEL, threads=1)}
    if args.fp32.is_file():
        models["fp32"] = OnnxModel(args.fp32, threads=1)
    window = np.random.default_rng(0).standard_normal((198, models["int8"].feature_config.dim)).astype(np.float32)
    times = {k: [] for k in models}
    for m in models.values():
        m.score(window)
    for _ in range(args.repeats):
        for k, m in models.items():
            t = time.perf_counter()
            m.score(window)
            times[k].append(time.perf_counter() - t)
    latency = {k: 1e3 * statistics.median(v) for k, v in times.items()}

    x, rate = continuous_speech(args.seconds)
    step = rate // 100

    def run(vad: VadConfig, decision: str = "segment") -> tuple[float, list]:
        stream = StreamRecognizer(models["int8"], vad=vad, decision=decision)
        t = time.perf_counter()
        events = []
        for i in range(0, len(x), step):
            events += stream.push(x[i : i + step], rate)
        events += stream.close()
        return (time.perf_counter() - t) / (len(x) / rate), events

    # The speech-band gate (default) and the whole-band gate of earlier releases, and segments
    # decided by the mean of their windows instead of one pass over each, taking turns. The
    # gates differ by the band energy's FFT and by how much speech they find (windows scored).
    rtfs: dict[str, list[float]] = {"band": [], "whole": [], "windows": []}
    found: dict[str, list] = {}
    for _ in range(3):
        for name, vad, decision in (("band", VadConfig(), "segment"),
                                    ("whole", VadConfig(band_hz=None, min_level_dbfs=-90.0), "segment"),
                                    ("windows", VadConfig(), "windows")):
            rtf, found[name] = run(vad, decision)
            rtfs[name].append(rtf)
    rtf, rtf_whole, rtf_windows = (statistics.median(rtfs[k]) for k in ("band", "whole", "windows"))
    events = found["band"]
    windows = sum(len(e.windows) for e in events)
    windows_whole = sum(len(e.windows) for e in found["whole"])

    rss = float(subprocess.run([sys.executable, "-c", RSS_CHILD, str(DEMO)], check=True, capture_output=True,
                               text=True).stdout.strip())

    print(f"machine: {os.cpu_count()} cores; onnxruntime threads 1; audio: {len(x) / rate:.0f} s at {rate} Hz "
          f"pushed in 10 ms chunks ({'URDU clips back to back' if (DATA / 'urdu').is_dir() else 'demo clip'})\n")
    print("| measure | value | target |")
    print("|---|---:|---|")
    print(f"| int8 latency per 2 s window (1 thread) | {latency['int8']:.2f} ms | <= 5 ms |")
    if "fp32" in latency:
        print(f"| fp32 latency per 2 s window (1 thread) | {latency['fp32']:.2f} ms | |")
        print(f"| int8 speed-up over fp32 | {latency['fp32'] / latency['int8']:.2f}x | >= 2x |")
    print(f"| real-time factor, whole pipeline, 1 core (hop 0.5 s; median of 3) | {rtf:.4f} | <= 0.01 |")
    print(f"| the same with the whole-band gate instead of 80-4000 Hz | {rtf_whole:.4f} | |")
    print(f"| the same with segments decided by the mean of their windows (no pass over the segment) | "
          f"{rtf_windows:.4f} | |")
    print(f"| windows scored / speech events | {windows} / {len(events)} (whole-band gate: {windows_whole} / "
          f"{len(found['whole'])}) | |")
    print(f"| int8 model size | {DEFAULT_MODEL.stat().st_size / 1e6:.2f} MB | <= 2 MB |")
    if "fp32" in latency:
        print(f"| fp32 model size | {args.fp32.stat().st_size / 1e6:.2f} MB | |")
    print(f"| peak RSS of a process running a StreamRecognizer | {rss:.0f} MB | <= 150 MB |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
