"""`ser-edge listen`: a real end-to-end run through a virtual microphone, and its error paths.

The end-to-end test starts its own PulseAudio server (its own runtime folder and socket,
so nothing else on the machine can play into it) with a null sink `vmic` whose monitor is
the default source, and stops it afterwards; it skips, saying so, when PulseAudio or
PortAudio is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "demo.wav"


@pytest.fixture()
def virtual_microphone(tmp_path):
    """A private PulseAudio server whose default source is the monitor of a null sink `vmic`;
    yields the environment that points clients at it."""
    if not all(shutil.which(tool) for tool in ("pulseaudio", "pactl", "paplay")):
        pytest.skip("PulseAudio (pulseaudio, pactl, paplay) is not installed")
    pytest.importorskip("sounddevice", reason="PortAudio is not installed")
    runtime = tmp_path / "pulse"
    runtime.mkdir()
    socket = runtime / "native"
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "PULSE_RUNTIME_PATH": str(runtime / "run"),
           "PULSE_STATE_PATH": str(runtime / "state"), "PULSE_SERVER": f"unix:{socket}"}
    log = runtime / "server.log"
    with log.open("w") as sink:
        server = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "-n", "--exit-idle-time=-1", "--use-pid-file=no",
             f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
             "--load=module-null-sink sink_name=vmic"],
            env=env, stdout=sink, stderr=sink)
    try:
        for _ in range(50):
            if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.skip(f"the PulseAudio server did not start: {log.read_text()[-2000:]}")
        subprocess.run(["pactl", "set-default-source", "vmic.monitor"], env=env, check=True)
        yield env
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_listen_labels_a_wav_played_into_the_microphone_as_score_does(virtual_microphone, tmp_path):
    import numpy as np
    import soundfile as sf

    from ser_edge import Recognizer
    from ser_edge.audio import load

    env = virtual_microphone
    heard = tmp_path / "heard.wav"
    listener = subprocess.Popen(
        [sys.executable, "-m", "ser_edge", "listen", "--json", "--duration", "11", "--device", "pulse",
         "--record", str(heard)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(2.0)  # let the input stream open before the clip starts
    subprocess.run(["paplay", "--device=vmic", str(DEMO)], check=True, timeout=30, env=env)
    out, err = listener.communicate(timeout=60)
    assert listener.returncode == 0, err
    assert "input overflows: 0" in err
    live = [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    # What the microphone gave, recorded by listen itself: the clip, played through the sound
    # server (its resampler to the device rate and back, another sample alignment).
    audio, rate = sf.read(str(heard), dtype="float32")
    assert abs(len(audio) / rate - 11.0) < 0.2
    played = load(DEMO, 16000)
    mic = load(heard, 16000)
    head, probe = mic[: 8 * 16000], played[: 4 * 16000]  # playback begins within 4 s of the recording
    n = len(head) + len(probe)
    scores = np.fft.irfft(np.fft.rfft(head, n) * np.conj(np.fft.rfft(probe, n)), n)[: len(head) - len(probe) + 1]
    lag = int(np.argmax(scores))
    part = mic[lag: lag + len(played)]
    gain = float(part @ played / (played @ played))
    residual = part - gain * played
    assert 0.9 < gain < 1.1 and 10 * np.log10((gain * played) @ (gain * played) / (residual @ residual)) > 10

    # The live events are exactly what offline scoring finds in that recording ...
    again = Recognizer().predict_file(heard).events
    assert [e["label"] for e in live] == [e.label for e in again]
    for got, want in zip(live, again):
        assert abs(got["start_s"] - want.start_s) < 2e-3 and abs(got["end_s"] - want.end_s) < 2e-3
        for label, p in want.probabilities.items():
            assert abs(got["probabilities"][label] - p) < 1e-3, (got, want.probabilities)

    # ... and the same speech segments as in the file itself, shifted by when playback began.
    # The sound server's path moves the probabilities (measured up to 0.23 on the first
    # segment, the label unchanged), so the labels are compared where the file's decision
    # is not a near tie.
    offline = Recognizer().predict_file(DEMO).events
    assert len(live) == len(offline), (live, err)
    for got, want in zip(live, offline):
        assert abs((got["end_s"] - got["start_s"]) - (want.end_s - want.start_s)) < 0.2
        assert abs(got["start_s"] - lag / 16000 - want.start_s) < 0.1
        top, second = sorted(want.probabilities.values())[-2:][::-1]
        if top - second > 0.1:
            assert got["label"] == want.label, (got, want.probabilities)


def test_listen_refuses_a_recording_it_cannot_write(tmp_path):
    result = _run_listen("listen", "--record", str(tmp_path / "no-such-folder" / "x.wav"), "--duration", "1")
    assert result.returncode == 2 and "does not exist" in result.stderr and "Traceback" not in result.stderr
    result = _run_listen("listen", "--record", str(tmp_path / "x.mp3"), "--duration", "1")
    assert result.returncode == 2 and ".wav" in result.stderr and "Traceback" not in result.stderr


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
