"""`ser-edge listen`: a real end-to-end run through a virtual microphone, and its error paths.

The end-to-end test needs a PulseAudio server with a null sink `vmic` whose monitor is the
default source (.ci/run starts one); it skips, saying so, when there is none.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.wav"


def _virtual_microphone() -> bool:
    if not shutil.which("pactl") or not shutil.which("paplay"):
        return False
    info = subprocess.run(["pactl", "info"], capture_output=True, text=True)
    return info.returncode == 0 and "Default Source: vmic.monitor" in info.stdout


@pytest.mark.skipif(not _virtual_microphone(), reason="no PulseAudio server with a 'vmic' null sink as the default source")
def test_listen_labels_a_wav_played_into_the_microphone_as_score_does():
    from ser_edge import Recognizer

    listener = subprocess.Popen(
        [sys.executable, "-m", "ser_edge", "listen", "--json", "--duration", "11", "--device", "pulse"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(2.0)  # let the input stream open before the clip starts
    subprocess.run(["paplay", "--device=vmic", str(DEMO)], check=True, timeout=30)
    out, err = listener.communicate(timeout=60)
    assert listener.returncode == 0, err
    live = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    offline = Recognizer().predict_file(DEMO).events
    assert [e["label"] for e in live] == [e.label for e in offline], (live, err)
    for got, want in zip(live, offline):  # the same speech, shifted by when playback began
        assert abs((got["end_s"] - got["start_s"]) - (want.end_s - want.start_s)) < 0.2
    assert "input overflows: 0" in err


def _run_listen(*args: str, hide_sounddevice_with: str = "") -> subprocess.CompletedProcess:
    prelude = ""
    if hide_sounddevice_with:
        prelude = (
            "import sys, importlib.abc\n"
            "class Hide(importlib.abc.MetaPathFinder):\n"
            "    def find_spec(self, name, path, target=None):\n"
            f"        if name == 'sounddevice': raise {hide_sounddevice_with}\n"
            "sys.meta_path.insert(0, Hide())\n"
        )
    code = prelude + f"from ser_edge.cli import app\napp({list(args)!r})\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_missing_portaudio_gives_one_clear_message():
    result = _run_listen("listen", hide_sounddevice_with="OSError('PortAudio library not found')")
    assert result.returncode == 2
    assert "apt-get install libportaudio2" in result.stderr and "Traceback" not in result.stderr


def test_missing_sounddevice_package_says_what_to_install():
    result = _run_listen("listen", hide_sounddevice_with="ImportError('no sounddevice')")
    assert result.returncode == 2 and "pip install sounddevice" in result.stderr


def test_an_unknown_device_points_to_the_device_list():
    pytest.importorskip("sounddevice", reason="PortAudio is not installed")
    result = _run_listen("listen", "--device", "no-such-microphone", "--duration", "1")
    assert result.returncode == 2 and "--list-devices" in result.stderr and "Traceback" not in result.stderr
