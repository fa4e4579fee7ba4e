"""`ser-edge score` and `ser-edge info` through typer's test runner."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import corpus_clips
from ser_edge.cli import app

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.wav"
runner = CliRunner()


@pytest.fixture()
def folder(tmp_path):
    """The demo clip, real clips when the corpora are here, and bad files."""
    d = tmp_path / "clips"
    (d / "sub").mkdir(parents=True)
    shutil.copy(DEMO, d / "demo.wav")
    for clip in (corpus_clips("urdu")[:2] + corpus_clips("emodb-2s")[:1]):
        shutil.copy(clip, d / clip.name)
    x, rate = sf.read(DEMO, dtype="float32")
    sf.write(d / "sub" / "demo48.flac", x, rate)  # found only with --recursive
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage")
    (d / "empty.wav").write_bytes(b"")
    sf.write(d / "short.wav", np.zeros(100, np.float32), 16000)
    (d / "notes.txt").write_text("not audio, and not picked up")
    return d


def _csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def test_score_writes_a_row_per_file_with_errors_as_rows(folder, tmp_path):
    out = tmp_path / "r.csv"
    result = runner.invoke(app, ["score", str(folder), "-o", str(out), "--jobs", "1"])
    assert result.exit_code == 1, result.output  # corrupt and empty files failed
    rows = _csv(out.read_text())
    by_name = {Path(r["path"]).name: r for r in rows}
    assert set(by_name) == {"demo.wav", "corrupt.wav", "empty.wav", "short.wav"} | {
        p.name for p in folder.glob("*.wav") if p.name not in ("corrupt.wav", "empty.wav", "short.wav", "demo.wav")}
    assert by_name["corrupt.wav"]["status"] == "error" and "corrupt.wav" in by_name["corrupt.wav"]["error"]
    assert "empty" in by_name["empty.wav"]["error"]
    assert by_name["short.wav"]["status"] == "too_short" and "too short" in by_name["short.wav"]["error"]
    demo = by_name["demo.wav"]
    assert demo["label"] in ("angry", "happy", "neutral", "sad") and float(demo["duration_s"]) == pytest.approx(9.25, abs=0.01)
    assert sum(float(demo[f"p_{k}"]) for k in ("angry", "happy", "neutral", "sad")) == pytest.approx(1, abs=1e-3)
    assert [r["path"] for r in rows] == sorted(r["path"] for r in rows)  # deterministic order
    assert "Traceback" not in result.output


def test_silence_is_no_speech_not_an_error(tmp_path):
    sf.write(tmp_path / "quiet.wav", np.zeros(32000, np.float32), 16000)
    out = tmp_path / "r.csv"
    result = runner.invoke(app, ["score", str(tmp_path / "quiet.wav"), "-o", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    (row,) = _csv(out.read_text())
    assert row["status"] == "no_speech" and row["label"] == "" and row["error"] == "no speech detected"
    assert "0 labelled, 1 without speech" in result.output


def test_a_folder_without_audio_at_its_top_says_so_and_suggests_recursion(folder, tmp_path):
    outer = tmp_path / "outer"
    (outer / "inner").mkdir(parents=True)
    shutil.copy(DEMO, outer / "inner" / "demo.wav")
    result = runner.invoke(app, ["score", str(outer), "--jobs", "1"])
    assert result.exit_code == 2
    assert "no audio files found" in result.output and "-r" in result.output and "1 audio file" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["score", str(empty)])
    assert result.exit_code == 2 and "no audio files found" in result.output and "--recursive" not in result.output


def test_an_unwritable_output_is_a_message_not_a_traceback(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where a folder should be")
    result = runner.invoke(app, ["score", str(DEMO), "-o", str(blocker / "r.csv"), "--jobs", "1"])
    assert result.exit_code == 2 and "cannot write" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_jsonl_with_windows_and_recursion(folder, tmp_path):
    out = tmp_path / "r.jsonl"
    runner.invoke(app, ["score", str(folder), "-o", str(out), "--windows", "--recursive", "--jobs", "1"])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert any(r["path"].endswith("demo48.flac") for r in rows)
    windows = [r for r in rows if r["kind"] == "window" and r["path"].endswith("demo.wav")]
    assert windows and all(0 <= r["start_s"] < r["end_s"] for r in windows)


def test_parallel_output_equals_serial_output(folder, tmp_path):
    serial, parallel = tmp_path / "s.csv", tmp_path / "p.csv"
    first = runner.invoke(app, ["score", str(folder), "-o", str(serial), "--jobs", "1"])
    second = runner.invoke(app, ["score", str(folder), "-o", str(parallel), "--jobs", "2"])
    assert first.exit_code == second.exit_code == 1, (first.output, second.output)  # the bad files failed
    rows = _csv(serial.read_text())
    assert len(rows) == len(list(folder.glob("*.wav"))) and any(r["status"] == "ok" and r["label"] for r in rows)
    assert parallel.read_text() == serial.read_text()


def test_resume_after_an_interrupted_run_loses_nothing(folder, tmp_path):
    full = tmp_path / "full.csv"
    runner.invoke(app, ["score", str(folder), "-o", str(full), "--jobs", "1"])
    lines = full.read_text().splitlines(keepends=True)
    partial = tmp_path / "partial.csv"
    partial.write_text("".join(lines[:3]) + lines[3][:10])  # header, two rows, a torn third
    result = runner.invoke(app, ["score", str(folder), "-o", str(partial), "--resume", "--jobs", "1"])
    assert "already in" in result.output
    rows = {r["path"]: r for r in _csv(partial.read_text()) if r.get("kind") == "file"}
    assert set(rows) == {r["path"] for r in _csv(full.read_text())}


def test_a_bad_model_is_refused_before_any_work(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"nope")
    result = runner.invoke(app, ["score", str(DEMO), "--model", str(bad)])
    assert result.exit_code == 2 and "not a readable ONNX model" in result.output


def test_info_shows_labels_config_and_providers():
    result = runner.invoke(app, ["info", "--provider", "cpu"])
    assert result.exit_code == 0, result.output
    for text in ("angry", "CPUExecutionProvider", "sample_rate", "Research use only"):
        assert text in result.output


def test_ctrl_c_in_a_parallel_run_stops_cleanly_and_says_how_to_resume(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    d = tmp_path / "many"
    d.mkdir()
    for i in range(40):
        shutil.copy(DEMO, d / f"c{i:02d}.wav")
    out = tmp_path / "r.csv"
    proc = subprocess.Popen([sys.executable, "-m", "ser_edge", "score", str(d), "-o", str(out), "--jobs", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline and (not out.exists() or out.read_text().count("\n") < 3):
        time.sleep(0.2)  # wait until some rows are written
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    resumed = subprocess.run([sys.executable, "-m", "ser_edge", "score", str(d), "-o", str(out), "--resume",
                              "--jobs", "2"], capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(r["path"] for r in _csv(out.read_text())) == sorted(str(p) for p in d.glob("*.wav"))


def test_a_manifest_lists_files_in_its_order_relative_to_its_folder(folder, tmp_path):
    listed = tmp_path / "lists" / "files.txt"
    listed.parent.mkdir()
    listed.write_text(f"# clips to score\n{folder / 'short.wav'}\n\n../clips/demo.wav\n  ../clips/corrupt.wav  \n")
    out = tmp_path / "r.csv"
    result = runner.invoke(app, ["score", "--manifest", str(listed), "-o", str(out), "--jobs", "1"])
    assert result.exit_code == 1, result.output  # corrupt.wav failed
    here = listed.parent
    assert [r["path"] for r in _csv(out.read_text())] == [
        str(folder / "short.wav"), str(here / "../clips/demo.wav"), str(here / "../clips/corrupt.wav")]
    table = tmp_path / "lists" / "files.csv"
    table.write_text(f"speaker,path\nA,{folder / 'short.wav'}\nB,../clips/demo.wav\nC,../clips/corrupt.wav\n")
    again = tmp_path / "again.csv"
    runner.invoke(app, ["score", "--manifest", str(table), "-o", str(again), "--jobs", "2"])
    assert again.read_text() == out.read_text()


def test_files_given_come_before_the_manifests_files(folder, tmp_path):
    listed = tmp_path / "files.txt"
    listed.write_text(str(folder / "demo.wav") + "\n")
    out = tmp_path / "r.jsonl"
    result = runner.invoke(app, ["score", str(folder / "short.wav"), "--manifest", str(listed), "-o", str(out),
                                 "--jobs", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["path"] for r in rows] == [str(folder / "short.wav"), str(folder / "demo.wav")]


def test_a_bad_manifest_is_a_message_and_exit_code_2(tmp_path):
    result = runner.invoke(app, ["score", "--manifest", str(tmp_path / "missing.txt")])
    assert result.exit_code == 2 and "cannot read the manifest" in result.output
    table = tmp_path / "files.csv"
    table.write_text("file,label\na.wav,angry\n")
    result = runner.invoke(app, ["score", "--manifest", str(table)])
    assert result.exit_code == 2 and "no 'path' column" in result.output and "file, label" in result.output
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n")
    result = runner.invoke(app, ["score", "--manifest", str(empty)])
    assert result.exit_code == 2 and "no audio files found in the manifest" in result.output
    result = runner.invoke(app, ["score"])
    assert result.exit_code == 2 and "--manifest" in result.output


def test_the_ray_engine_without_ray_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    result = runner.invoke(app, ["score", str(DEMO), "--engine", "ray"])
    assert result.exit_code == 2 and 'pip install "ser-edge[ray]"' in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["score", str(DEMO), "--engine", "spark"])
    assert result.exit_code == 2 and "local, ray" in result.output


def test_min_confidence_labels_unsure_rows_uncertain_and_keeps_their_probabilities(tmp_path):
    plain = runner.invoke(app, ["score", str(DEMO), "--windows", "--jobs", "1"])
    assert plain.exit_code == 0, plain.output
    rows = [r for r in _csv(plain.output) if r.get("kind") in ("file", "window")]
    top = [max(float(v) for k, v in r.items() if k.startswith("p_") and v) for r in rows]
    threshold = sorted(top)[len(top) // 2] + 1e-4  # about half the rows fall below it
    marked = runner.invoke(app, ["score", str(DEMO), "--windows", "--jobs", "1", "--min-confidence", str(threshold)])
    assert marked.exit_code == 0, marked.output
    after = [r for r in _csv(marked.output) if r.get("kind") in ("file", "window")]
    assert len(after) == len(rows)
    for before, now, p in zip(rows, after, top):
        assert now["label"] == ("uncertain" if p < threshold else before["label"])
        assert {k: v for k, v in now.items() if k != "label"} == {k: v for k, v in before.items() if k != "label"}
    assert any(r["label"] == "uncertain" for r in after) and any(r["label"] != "uncertain" for r in after)


def test_info_says_how_the_model_decides():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0 and "mean of one pass over it (with context) and of its windows" in \
        " ".join(result.output.split()).replace("│ ", "").replace(" │", "")


def test_decision_option_picks_how_segments_are_decided(tmp_path):
    from ser_edge.recognizer import Recognizer

    x, rate = sf.read(DEMO, dtype="float32")
    for decision in ("segment", "windows", "blend"):
        out = tmp_path / f"{decision}.csv"
        result = runner.invoke(app, ["score", str(DEMO), "-o", str(out), "--jobs", "2", "--decision", decision])
        assert result.exit_code == 0, result.output
        (row,) = _csv(out.read_text())
        expected = Recognizer(decision=decision).predict(x, rate)
        assert row["label"] == expected.label
        for k, v in expected.probabilities.items():
            assert float(row[f"p_{k}"]) == pytest.approx(v, abs=1e-4)
    default = tmp_path / "default.csv"
    assert runner.invoke(app, ["score", str(DEMO), "-o", str(default), "--jobs", "1"]).exit_code == 0
    assert default.read_text() == (tmp_path / "blend.csv").read_text()  # the bundled model's decision
    assert len({(tmp_path / f"{d}.csv").read_text() for d in ("segment", "windows", "blend")}) == 3
    bad = runner.invoke(app, ["score", str(DEMO), "--decision", "median"])
    assert bad.exit_code == 2 and "choose one of blend, segment, windows" in bad.output
