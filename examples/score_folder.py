"""Score every audio file in a folder with the Python API and print a small report.

    python examples/score_folder.py path/to/folder
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from ser_edge import Recognizer
from ser_edge.audio import AudioError


def main(folder: Path) -> int:
    recognizer = Recognizer()  # the bundled model; Recognizer("model.onnx", provider="auto") for another
    counts: Counter[str] = Counter()
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in (".wav", ".flac", ".ogg")):
        try:
            result = recognizer.predict_file(path)
        except AudioError as err:
            print(f"{path.name}: skipped ({err})")
            continue
        label = result.label or "no speech"
        counts[label] += 1
        top = ", ".join(f"{k} {v:.2f}" for k, v in sorted(result.probabilities.items(), key=lambda kv: -kv[1]))
        print(f"{path.name}: {label:8s} {result.duration_s:5.1f} s  {len(result.windows)} windows  [{top}]")
    print("labels:", dict(counts))
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent)))
