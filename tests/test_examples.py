"""The example programs run as a user would run them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> str:
    return subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True).stdout


def test_voice_assistant_reports_one_event_per_sentence_of_the_demo_clip():
    out = _run("examples/voice_assistant.py", "examples/demo.wav")
    lines = [line for line in out.splitlines() if " s  " in line]
    assert len(lines) == 2  # the demo clip has two sentences


def test_score_folder_labels_the_demo_clip():
    out = _run("examples/score_folder.py", "examples")
    assert "demo.wav:" in out and "labels:" in out
