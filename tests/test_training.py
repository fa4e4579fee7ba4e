"""The training package: features shared with the runtime, the model, the trainer, the CLI."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from conftest import DATA_DIR, corpus_clips  # noqa: E402
from ser_edge.audio import load  # noqa: E402
from ser_edge.features import FeatureConfig, extract  # noqa: E402
from ser_edge.training.corpora import SHARED_LABELS, read_emodb, to_shared  # noqa: E402
from ser_edge.training.data import MIN_FRAMES, FeatureCache, NoiseSpec, load_examples  # noqa: E402
from ser_edge.training.metrics import report  # noqa: E402
from ser_edge.training.model import BiLstmAttention, ModelConfig  # noqa: E402
from ser_edge.training.protocols import fit  # noqa: E402
from ser_edge.training.recipes import get_recipe  # noqa: E402
from ser_edge.training.splits import grouped_kfold  # noqa: E402
from ser_edge.training.trainer import TrainConfig, predict, select_device  # noqa: E402


def _write_tone(path, seconds=1.0, rate=22050):
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, 0.3 * np.sin(2 * np.pi * 220 * t), rate)
    return path


def test_training_features_are_the_runtime_features_bit_for_bit(tmp_path):
    wav = _write_tone(tmp_path / "a.wav")
    cache = FeatureCache(FeatureConfig(), root=tmp_path / "cache")
    first = cache.features(wav)
    np.testing.assert_array_equal(first, extract(load(wav), FeatureConfig()))
    np.testing.assert_array_equal(cache.features(wav), first)  # served from the cache
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 1
    _write_tone(wav, seconds=1.5)  # new content, new key
    assert len(cache.features(wav)) != len(first)
    noisy = cache.features(wav, NoiseSpec("white", 10.0))
    assert noisy.shape == cache.features(wav).shape and not np.array_equal(noisy, cache.features(wav))


def test_unreadable_and_too_short_files_are_skipped_with_a_warning_and_counted(tmp_path):
    from ser_edge.training.corpora import Clip

    good = _write_tone(tmp_path / "good.wav")
    short = _write_tone(tmp_path / "short.wav", seconds=0.1)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF nonsense")
    clips = [Clip(p, "angry", "s1", "t") for p in (good, short, bad)]
    with pytest.warns(UserWarning, match="skipped"):
        examples, skipped = load_examples(clips, ["angry"], FeatureCache(FeatureConfig(), root=tmp_path / "c"))
    assert [e.path for e in examples] == [good]
    assert {p for p, _ in skipped} == {short, bad}
    assert any(f"need {MIN_FRAMES}" in reason for _, reason in skipped)


def test_a_constant_log_shift_per_window_changes_nothing():
    # A gain is a constant shift of log features; the per-window mean removal cancels it.
    torch.manual_seed(1)
    model = BiLstmAttention(ModelConfig(input_dim=10, n_classes=4, hidden1=8, hidden2=8, dense=8)).eval()
    x = torch.randn(2, 40, 10)
    lengths = torch.tensor([40, 25])
    with torch.no_grad():
        base, _ = model(x, lengths)
        shifted, _ = model(x + 13.0, lengths)
    torch.testing.assert_close(shifted, base, atol=1e-4, rtol=1e-4)


def test_device_auto_picks_cuda_when_torch_reports_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert select_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA device"):
        select_device("cuda")
    with pytest.raises(ValueError, match="device must be"):
        select_device("tpu")


@pytest.mark.skipif(not corpus_clips("emodb-2s"), reason=f"EmoDB (2-s copy) not found in {DATA_DIR}")
def test_a_small_model_beats_chance_on_held_out_speakers(tmp_path):
    torch.set_num_threads(2)
    config = FeatureConfig.preset("logmel")
    clips = to_shared(read_emodb(DATA_DIR / "emodb-2s"))
    labels = list(SHARED_LABELS)
    examples, skipped = load_examples(clips, labels, FeatureCache(config, root=tmp_path / "cache"))
    assert not skipped
    groups = [e.group for e in examples]
    train_idx, test_idx = grouped_kfold(groups, k=5, seed=0)[0]
    small = ModelConfig(config.dim, 4, hidden1=32, hidden2=16, dense=16)
    result = fit([examples[i] for i in train_idx], small, TrainConfig(max_epochs=12, patience=3, seed=0), log=None)
    test = [examples[i] for i in test_idx]
    assert not {e.group for e in test} & {examples[i].group for i in train_idx}
    uar = report([e.label for e in test], predict(result.model, test).argmax(1), labels)["uar"]
    assert uar > 0.40, f"UAR {uar:.3f} on held-out speakers (chance 0.25)"


def test_train_command_without_torch_says_which_extra_to_install():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "from typer.testing import CliRunner\n"
        "from ser_edge.cli import app\n"
        "r = CliRunner().invoke(app, ['train', 'x'])\n"
        "assert r.exit_code == 2, r.output\n"
        "assert \"pip install 'ser-edge[train]'\" in r.output, r.output\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _tiny_manifest(tmp_path):
    """Two classes (low and high tones) spoken by four 'speakers', as a CSV manifest."""
    rows = ["path,label,speaker"]
    rng = np.random.default_rng(0)
    for speaker in range(4):
        for label, freq in (("calm", 150.0), ("angry", 900.0)):
            for take in range(3):
                t = np.arange(8000) / 16000
                x = 0.3 * np.sin(2 * np.pi * (freq + 20 * speaker) * t) + 0.01 * rng.standard_normal(len(t))
                name = f"s{speaker}_{label}_{take}.wav"
                sf.write(tmp_path / name, x.astype(np.float32), 16000)
                rows.append(f"{name},{label},s{speaker}")
    manifest = tmp_path / "tiny.csv"
    manifest.write_text("\n".join(rows) + "\n")
    return manifest


def test_train_and_evaluate_commands_run_end_to_end(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ser_edge.cli import app

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    manifest = _tiny_manifest(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["train", str(manifest), "--epochs", "2", "--ensemble", "3", "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=False)
    assert checkpoint["labels"] == ["angry", "calm"]
    assert FeatureConfig.from_json(checkpoint["feature_config"]) == get_recipe("default").features
    assert checkpoint["recipe"]["name"] == "default"
    # --ensemble 3: three models of the default recipe, seeds 0, 1, 2, each with its own weights.
    assert len(checkpoint["members"]) == 3 and len(checkpoint["best_epoch"]) == 3
    for state in checkpoint["members"]:
        BiLstmAttention(ModelConfig(**checkpoint["model_config"])).load_state_dict(state)
    first = checkpoint["members"][0]["out.weight"]
    assert not torch.equal(first, checkpoint["members"][1]["out.weight"])

    result = runner.invoke(app, ["export", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "m.onnx").exists() and (tmp_path / "m.int8.onnx").exists()
    from ser_edge import Recognizer

    assert Recognizer(tmp_path / "m.int8.onnx", threads=1).info["labels"] == ["angry", "calm"]
    assert Recognizer(tmp_path / "m.int8.onnx", threads=1).decision == "blend"  # trained on whole clips
    cropped = torch.load(tmp_path / "m.pt", weights_only=False)  # as if trained on random crops
    cropped["recipe"]["train"]["crop_frames"] = 200
    torch.save(cropped, tmp_path / "crops.pt")
    result = runner.invoke(app, ["export", str(tmp_path / "crops.pt"), "-o", str(tmp_path / "crops.onnx")])
    assert result.exit_code == 0, result.output
    assert Recognizer(tmp_path / "crops.int8.onnx", threads=1).decision == "windows"

    result = runner.invoke(app, ["train", str(manifest), "--recipe", "seed", "--epochs", "1",
                                 "-o", str(tmp_path / "seed.pt")])
    assert result.exit_code == 0, result.output
    seed = torch.load(tmp_path / "seed.pt", weights_only=False)
    assert FeatureConfig.from_json(seed["feature_config"]) == FeatureConfig()
    assert seed["model_config"]["hidden1"] == 256 and seed["recipe"]["train"]["max_epochs"] == 1

    result = runner.invoke(app, ["evaluate", "within", str(manifest), "--folds", "2", "--epochs", "1",
                                 "-o", str(tmp_path / "results")])
    assert result.exit_code == 0, result.output
    summary = __import__("json").loads((tmp_path / "results" / "within-tiny.json").read_text())
    assert summary["n"] == 24 and summary["folds"] == 2 and len(summary["confusion"]) == 2
    assert (tmp_path / "results" / "within-tiny-confusion.png").exists()


def test_train_command_reports_a_bad_corpus_clearly(tmp_path):
    from typer.testing import CliRunner

    from ser_edge.cli import app

    result = CliRunner().invoke(app, ["train", str(tmp_path / "missing")])
    assert result.exit_code == 2
    text = " ".join(result.output.replace("│", " ").split())  # undo the error box's wrapping
    assert "does not exist" in text and "Traceback" not in text


def test_bilstm_equals_torch_bidirectional_lstm_on_packed_sequences():
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from ser_edge.training.model import BiLstm

    torch.manual_seed(3)
    ours = BiLstm(6, 5)
    ref = torch.nn.LSTM(6, 5, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ours.forward_lstm, name).copy_(getattr(ref, name))
            getattr(ours.backward_lstm, name).copy_(getattr(ref, name + "_reverse"))
        x = torch.randn(20, 3, 6)
        lengths = torch.tensor([20, 13, 4])
        expected = pad_packed_sequence(ref(pack_padded_sequence(x, lengths, enforce_sorted=False))[0],
                                       total_length=20)[0]
        got = ours(x, lengths)
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(got[:n, b], expected[:n, b], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--balance", "foo"], "balance must be"),
        (["--epochs", "0"], "max_epochs must be"),
        (["--device", "tpu"], "device must be"),
        (["--recipe", "best"], "unknown recipe"),
        (["--recipe", "baseline"], "only the ablation computes"),
        (["--ensemble", "0"], "ensemble must be"),
        (["--preset", "cqt"], "unknown FeatureConfig preset"),
    ],
)
def test_bad_training_options_end_with_a_message_not_a_traceback(tmp_path, args, message):
    from typer.testing import CliRunner

    from ser_edge.cli import app

    result = CliRunner().invoke(app, ["train", str(_tiny_manifest(tmp_path)), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_a_corpus_with_one_speaker_is_refused_clearly(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ser_edge.cli import app

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    manifest = _tiny_manifest(tmp_path)
    one = tmp_path / "one.csv"
    one.write_text("\n".join(line for line in manifest.read_text().splitlines() if not line.startswith("s1_")
                             and not line.startswith("s2_") and not line.startswith("s3_")) + "\n")
    result = CliRunner().invoke(app, ["train", str(one), "--epochs", "1"])
    assert result.exit_code == 2 and "at least 2 speakers" in result.output


def test_sigterm_during_train_saves_the_best_epoch_so_far(tmp_path):
    import signal
    import time

    manifest = _tiny_manifest(tmp_path)
    out = tmp_path / "m.pt"
    env = {**__import__("os").environ, "SER_EDGE_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    proc = subprocess.Popen([sys.executable, "-m", "ser_edge", "train", str(manifest), "--epochs", "500",
                             "--patience", "500", "--device", "cpu", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen = ""
    deadline = time.time() + 120
    while time.time() < deadline and "epoch   3 of 500" not in seen:
        seen += proc.stdout.readline()
    assert "at most" in seen and "min left" in seen  # epoch N of M with an estimate of the time left
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "best epoch so far" in err and "Traceback" not in err
    checkpoint = torch.load(out, weights_only=False)
    assert 3 <= len(checkpoint["history"]) < 500 and 1 <= checkpoint["best_epoch"] <= len(checkpoint["history"])


def test_an_interrupted_within_evaluation_resumes_from_its_finished_folds(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ser_edge.cli import app
    from ser_edge.training import protocols

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    manifest = _tiny_manifest(tmp_path)
    args = ["evaluate", "within", str(manifest), "--folds", "3", "--epochs", "1", "-o", str(tmp_path / "r")]
    runner = CliRunner()
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    whole = __import__("json").loads((tmp_path / "r" / "within-tiny.json").read_text())
    (fold_dir,) = (tmp_path / "r").glob(".folds-within-tiny-*")
    (fold_dir / "fold2.json").unlink()  # as if the run had stopped during fold 2

    trained = []
    real_fit = protocols.fit
    monkeypatch.setattr(protocols, "fit", lambda *a, **k: trained.append(1) or real_fit(*a, **k))
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert "2 of 3 folds already done" in again.output and len(trained) == 1
    resumed = __import__("json").loads((tmp_path / "r" / "within-tiny.json").read_text())
    assert resumed["confusion"] == whole["confusion"] and resumed["folds"] == 3


def test_train_with_a_teacher_recipe_uses_the_teacher_folder_or_says_how_to_get_it(tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2", reason="the anchors extra (ctranslate2) is not installed")
    from typer.testing import CliRunner

    from ser_edge.cli import app
    from test_anchors import _tiny_whisper

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    manifest = _tiny_manifest(tmp_path)
    runner = CliRunner()
    missing = runner.invoke(app, ["train", str(manifest), "--recipe", "teacher-both", "--teacher",
                                  str(tmp_path / "none"), "-o", str(tmp_path / "m.pt")])
    assert missing.exit_code == 2 and "get-whisper-base" in missing.output, missing.output
    assert not (tmp_path / "m.pt").exists()
    folder = _tiny_whisper(tmp_path / "whisper")
    done = runner.invoke(app, ["train", str(manifest), "--recipe", "teacher-both", "--teacher", str(folder),
                               "--epochs", "2", "-o", str(tmp_path / "m.pt")])
    assert done.exit_code == 0, done.output
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=False)
    assert checkpoint["recipe"]["train"]["distill"] == 0.5 and checkpoint["recipe"]["train"]["embed_distill"] == 1.0
    # The training-only projection is not part of the model that is saved and exported.
    assert not any("projection" in k for k in checkpoint["state_dict"])


def test_train_with_the_teacher_frames_recipe_gives_every_training_clip_its_frames(tmp_path, monkeypatch):
    pytest.importorskip("ctranslate2", reason="the anchors extra (ctranslate2) is not installed")
    from typer.testing import CliRunner

    from ser_edge.cli import app
    from ser_edge.training import protocols
    from test_anchors import _tiny_whisper

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    manifest = _tiny_manifest(tmp_path)
    seen = []
    real_fit = protocols.fit
    monkeypatch.setattr(protocols, "fit", lambda examples, *a, **k: seen.append(examples) or real_fit(examples, *a, **k))
    missing = CliRunner().invoke(app, ["train", str(manifest), "--recipe", "frame-kd", "--teacher",
                                       str(tmp_path / "none"), "-o", str(tmp_path / "m.pt")])
    assert missing.exit_code == 2 and "get-whisper-base" in missing.output, missing.output
    folder = _tiny_whisper(tmp_path / "whisper")
    done = CliRunner().invoke(app, ["train", str(manifest), "--recipe", "frame-kd", "--teacher", str(folder),
                                    "--epochs", "2", "--ensemble", "1", "-o", str(tmp_path / "m.pt")])
    assert done.exit_code == 0, done.output
    assert seen and all(e.teacher_frames is not None and e.teacher_frames.shape[1] == 16 for e in seen[0])
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=False)
    assert checkpoint["recipe"]["train"]["frame_distill"] == 1.0
    assert not any("projection" in k for k in checkpoint["state_dict"])


def test_train_with_the_own_label_head_also_trains_on_the_clips_outside_the_four_classes(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ser_edge.cli import app
    from ser_edge.training import protocols

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    manifests = []
    for corpus in ("a", "b"):
        folder = tmp_path / corpus
        folder.mkdir()
        text = _tiny_manifest(folder).read_text()  # angry and calm
        rows = text.splitlines()
        for row in [r for r in rows[1:] if ",calm," in r]:  # sad: the calm tones again, in their own files
            name, _, speaker = row.split(",")
            sad = name.replace("calm", "sad")
            (folder / sad).write_bytes((folder / name).read_bytes())
            rows.append(f"{sad},sad,{speaker}")
        (folder / "tiny.csv").write_text("\n".join(rows) + "\n")
        manifests.append(folder / "tiny.csv")
    seen = []
    real = protocols.fit

    def spy(examples, *args, extra=(), **kwargs):
        seen.append((list(examples), list(extra)))
        return real(examples, *args, extra=extra, **kwargs)

    monkeypatch.setattr(protocols, "fit", spy)
    result = CliRunner().invoke(app, ["train", *map(str, manifests), "--recipe", "own-labels", "--epochs", "1",
                                      "--ensemble", "1", "-o", str(tmp_path / "m.pt")])
    assert result.exit_code == 0, result.output
    (examples, extra), = seen
    assert "24 more clips outside those labels" in result.output
    assert len(extra) == 24 and all(e.label == -1 and e.own.endswith(":calm") for e in extra)
    assert {e.own for e in examples} == {"tiny:angry", "tiny:sad"}
    assert torch.load(tmp_path / "m.pt", weights_only=False)["recipe"]["train"]["own_labels"] == 0.5
    seen.clear()
    result = CliRunner().invoke(app, ["train", *map(str, manifests), "--epochs", "1", "--ensemble", "1",
                                      "-o", str(tmp_path / "d.pt")])
    assert result.exit_code == 0, result.output
    assert seen[0][1] == []  # the default recipe has no such head: nothing more is read
