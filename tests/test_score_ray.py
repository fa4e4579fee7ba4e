"""`ser-edge score --engine ray`: the local engine's rows, made by actors on a local Ray cluster."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import DATA_DIR
from ser_edge.cli import app

ray = pytest.importorskip("ray", reason="Ray is not installed (the ray extra: pip install 'ser-edge[ray]')")

from ser_edge.ray_engine import CRASH_ONCE_ENV  # noqa: E402

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.wav"
runner = CliRunner()


@pytest.fixture(scope="module")
def cluster():
    """One local Ray cluster (2 CPUs) for the module: commands run in this process use it,
    commands in a subprocess join it by the address this yields."""
    context = ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
                       logging_level="ERROR")
    yield context.address_info["address"]
    ray.shutdown()


def _bad_files(folder: Path) -> None:
    """A corrupt WAV, an empty file, text named .wav, silence (no speech) and a too-short clip."""
    (folder / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("a text file, not audio")
    sf.write(folder / "silent.wav", np.zeros(32000, np.float32), 16000)
    sf.write(folder / "short.wav", np.zeros(100, np.float32), 16000)


@pytest.fixture()
def corpus_folder(real_clips, tmp_path):
    """Clips of the three shared corpora (URDU, EmoDB 2-s, RAVDESS) and the bad files."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for clip in real_clips + sorted((DATA_DIR / "ravdess").rglob("*.flac"))[::240]:
        shutil.copy(clip, folder / clip.name)
    _bad_files(folder)
    return folder


@pytest.fixture()
def demo_folder(tmp_path):
    """Copies of the demo clip and the bad files: no corpora needed."""
    folder = tmp_path / "demo"
    folder.mkdir()
    for i in range(12):
        os.symlink(DEMO, folder / f"demo{i:02d}.wav")
    _bad_files(folder)
    return folder


def _score(*args: str, engine: str = "local"):
    jobs = "1" if engine == "local" else "2"
    return runner.invoke(app, ["score", *args, "--engine", engine, "--jobs", jobs])


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_ray_rows_equal_local_rows_on_the_corpora_and_bad_files(cluster, corpus_folder, tmp_path, suffix):
    local, distributed = tmp_path / f"local{suffix}", tmp_path / f"ray{suffix}"
    first = _score(str(corpus_folder), "--windows", "-o", str(local))
    second = _score(str(corpus_folder), "--windows", "-o", str(distributed), engine="ray")
    assert first.exit_code == second.exit_code == 1, second.output  # the unreadable files failed
    assert distributed.read_text() == local.read_text()
    text = local.read_text()
    assert all(status in text for status in ("ok", "error", "no_speech", "too_short", "window"))
    assert second.output.splitlines()[-1] == first.output.splitlines()[-1]  # the same summary


def test_a_manifest_gives_the_same_rows_on_ray(cluster, demo_folder, tmp_path):
    names = sorted(p.name for p in demo_folder.iterdir())[::-1]  # its own order, not sorted
    listed = tmp_path / "files.txt"
    listed.write_text("".join(f"demo/{n}\n" for n in names))
    table = tmp_path / "files.csv"
    table.write_text("path,note\n" + "".join(f"demo/{n},x\n" for n in names))
    local, distributed = tmp_path / "local.csv", tmp_path / "ray.csv"
    _score("--manifest", str(listed), "-o", str(local))
    result = _score("--manifest", str(table), "-o", str(distributed), engine="ray")
    assert result.exit_code == 1, result.output
    assert distributed.read_text() == local.read_text()
    assert [Path(r["path"]).name for r in csv.DictReader(io.StringIO(local.read_text()))] == names


def test_the_decision_option_reaches_the_ray_workers(cluster, demo_folder, tmp_path):
    local, distributed, default = tmp_path / "local.csv", tmp_path / "ray.csv", tmp_path / "default.csv"
    _score(str(demo_folder), "--decision", "windows", "-o", str(local))
    result = _score(str(demo_folder), "--decision", "windows", "-o", str(distributed), engine="ray")
    assert result.exit_code == 1, result.output  # the bad files failed
    _score(str(demo_folder), "-o", str(default), engine="ray")
    assert distributed.read_text() == local.read_text() != default.read_text()


def test_a_worker_killed_mid_run_costs_no_rows(cluster, demo_folder, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))  # the first actor to score a file then exits
    local, distributed = tmp_path / "local.jsonl", tmp_path / "ray.jsonl"
    _score(str(demo_folder), "-o", str(local))
    result = _score(str(demo_folder), "-o", str(distributed), engine="ray")
    assert marker.exists(), "no worker died"
    assert result.exit_code == 1, result.output
    assert distributed.read_text() == local.read_text()  # each file once, in order, none lost


def test_resume_after_an_interrupted_ray_run_loses_nothing(cluster, tmp_path):
    x, rate = sf.read(DEMO, dtype="float32")
    long = tmp_path / "long.wav"
    sf.write(long, np.tile(x, 7)[: 60 * rate], rate)  # 60 s: slow enough to interrupt
    d = tmp_path / "many"
    d.mkdir()
    for i in range(120):
        os.symlink(long, d / f"c{i:03d}.wav")
    out = tmp_path / "r.csv"
    # Joins the module's cluster by its address, as a second driver.
    proc = subprocess.Popen([sys.executable, "-m", "ser_edge", "score", str(d), "-o", str(out), "--engine", "ray",
                             "--ray-address", cluster, "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    result = _score(str(d), "-o", str(out), "--resume", engine="ray")
    assert result.exit_code == 0 and "already in" in result.output, result.output
    once = tmp_path / "once.csv"
    _score(str(long), "-o", str(once))
    (expected,) = csv.DictReader(io.StringIO(once.read_text()))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["path"] for r in rows] == sorted(str(p) for p in d.iterdir())  # each file once, in order
    assert all({**r, "path": ""} == {**expected, "path": ""} for r in rows)


def test_without_an_address_the_command_starts_its_own_cluster_and_never_imports_torch(tmp_path):
    code = ("import sys\n"
            "from ser_edge.cli import app\n"
            "try:\n"
            "    app(sys.argv[1:])\n"
            "except SystemExit as end:\n"
            "    assert 'torch' not in sys.modules, 'torch was imported'\n"
            "    sys.exit(end.code)\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([sys.executable, "-c", code, "score", str(DEMO), "--engine", "ray", "--jobs", "1"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    local = runner.invoke(app, ["score", str(DEMO), "--jobs", "1", "-o", str(tmp_path / "local.csv")])
    assert local.exit_code == 0
    assert done.stdout == (tmp_path / "local.csv").read_text()  # only the rows: Ray's messages go to stderr


def test_an_address_where_no_cluster_runs_is_a_message_not_a_wait():
    done = subprocess.run([sys.executable, "-m", "ser_edge", "score", str(DEMO), "--engine", "ray",
                           "--ray-address", "127.0.0.1:1"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "cannot join the Ray cluster at 127.0.0.1:1" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
