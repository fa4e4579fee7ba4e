"""The `ser-edge` command line."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import soundfile as sf
from typer.testing import CliRunner

from ser_edge import FeatureConfig, extract
from ser_edge.audio import load
from ser_edge.cli import app

runner = CliRunner()


def _tone(path, rate=44100, seconds=1.0):
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * 300 * t)).astype(np.float32), rate, subtype="PCM_16")
    return path


def test_features_saves_exactly_what_extract_computes(tmp_path):
    wav = _tone(tmp_path / "tone.wav")
    out = tmp_path / "tone.npy"
    result = runner.invoke(app, ["features", str(wav), "-o", str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out), extract(load(wav), FeatureConfig()))
    assert FeatureConfig.from_dict(__import__("json").loads(out.with_suffix(".json").read_text())["config"]) == FeatureConfig()


def test_features_with_a_preset_and_several_files_into_a_folder(tmp_path):
    a, b = _tone(tmp_path / "a.wav"), _tone(tmp_path / "b.flac", rate=16000)
    result = runner.invoke(app, ["features", str(a), str(b), "--preset", "logmel", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert np.load(tmp_path / "out" / "a.npy").shape == (98, 40)
    assert np.load(tmp_path / "out" / "b.npy").shape == (98, 40)


def test_features_reports_a_bad_file_and_goes_on(tmp_path):
    good = _tone(tmp_path / "good.wav")
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not a wav file at all")
    result = runner.invoke(app, ["features", str(bad), str(good), "-o", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert "bad.wav" in result.output and "Traceback" not in result.output
    assert (tmp_path / "out" / "good.npy").exists()


def test_features_rejects_an_unknown_preset_with_a_clear_message(tmp_path):
    result = runner.invoke(app, ["features", str(_tone(tmp_path / "a.wav")), "--preset", "huge"])
    assert result.exit_code == 2
    assert "unknown FeatureConfig preset 'huge'" in result.output


def test_help_and_version():
    assert runner.invoke(app, ["--help"]).exit_code == 0
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("ser-edge ")


def test_runtime_imports_neither_torch_nor_librosa_nor_onnx():
    code = (
        "import sys, ser_edge, ser_edge.audio, ser_edge.cli\n"
        "heavy = [m for m in ('torch', 'librosa', 'onnx') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_importing_from_a_source_folder_without_the_core_says_what_to_do(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import ser_edge

    package = Path(ser_edge.__file__).parent
    checkout = tmp_path / "checkout"
    shutil.copytree(package, checkout / "ser_edge", ignore=shutil.ignore_patterns("_core*.so", "_core*.pyd", "models"))
    (checkout / "pyproject.toml").write_text("[project]\nname = 'ser-edge'\n")
    # -S: no site-packages, as after a non-editable install whose package the folder hides
    result = subprocess.run([sys.executable, "-S", "-c", "import ser_edge"], cwd=checkout, capture_output=True,
                            text=True)
    assert result.returncode != 0
    assert "source folder" in result.stderr and "pip install -e ." in result.stderr
