"""Synthesise examples/demo.wav, the short speech clip the examples and README use.

Needs espeak-ng (Debian/Ubuntu: apt-get install espeak-ng). Two sentences, the second
faster and higher-pitched, joined by half a second of silence; written as 16 kHz mono
16-bit WAV. Synthetic speech carries little emotion: the clip demonstrates the tools,
it is no test of accuracy.

    python examples/make_demo_clip.py [--out examples/demo.wav]
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from ser_edge.audio import DEFAULT_RATE, StreamResampler, to_mono

SENTENCES = [
    ("I have been waiting here for over an hour, and nobody has called me back.", ["-s", "150", "-p", "40"]),
    ("Oh, that is wonderful news, thank you so much!", ["-s", "185", "-p", "70"]),
]


def speak(text: str, options: list[str]) -> np.ndarray:
    wav = subprocess.run(["espeak-ng", "-v", "en-us", *options, "--stdout", text], check=True, capture_output=True).stdout
    samples, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=True)
    return StreamResampler(rate, DEFAULT_RATE).process(to_mono(samples), last=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("demo.wav"))
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is not installed; on Debian/Ubuntu: apt-get install espeak-ng", file=sys.stderr)
        return 1
    gap = np.zeros(DEFAULT_RATE // 2, np.float32)
    parts = [speak(text, options) for text, options in SENTENCES]
    clip = np.concatenate([gap, parts[0], gap, parts[1], gap])
    clip *= 0.5 / np.abs(clip).max()
    sf.write(args.out, clip, DEFAULT_RATE, subtype="PCM_16")
    print(f"wrote {args.out}: {len(clip) / DEFAULT_RATE:.2f} s at {DEFAULT_RATE} Hz")
    return 0


if __name__ == "__main__":
    sys.exit(main())
