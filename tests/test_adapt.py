"""`ser-edge adapt`: reading labelled clips, the held-out split, the head, the written model, the command."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from conftest import DATA_DIR
from ser_edge.adapt import (AdaptError, LabelledClip, balanced_weights, embedding_model, fit_head, holdout_split,
                            read_labelled, write_adapted)
from ser_edge.cli import app
from ser_edge.model import DEFAULT_MODEL, OnnxModel
from ser_edge.recognizer import Recognizer

runner = CliRunner()
RATE = 16000


def voice(f0: float, seconds: float = 1.6, seed: int = 0) -> np.ndarray:
    """A voiced, speech-like signal: harmonics of a gliding F0 under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f = f0 * (1 + 0.06 * np.sin(2 * np.pi * (0.7 + 0.3 * rng.random()) * t))
    phase = 2 * np.pi * np.cumsum(f) / RATE
    x = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * 4 * t + rng.random() * 6)
    x = x * envelope + 0.01 * rng.standard_normal(len(t))
    return (0.2 * x / np.abs(x).max()).astype(np.float32)


def silence_padded(x: np.ndarray) -> np.ndarray:
    gap = np.zeros(RATE // 4, np.float32)
    return np.concatenate([gap, x, gap])


@pytest.fixture()
def low_high(tmp_path) -> Path:
    """A folder with two labels: low-pitched (100-130 Hz) and high-pitched (260-320 Hz) voices."""
    root = tmp_path / "clips"
    for label, f0s in (("low", np.linspace(100, 130, 8)), ("high", np.linspace(260, 320, 8))):
        (root / label).mkdir(parents=True)
        for n, f0 in enumerate(f0s):
            sf.write(root / label / f"{label}{n}.wav", silence_padded(voice(f0, seed=n)), RATE)
    return root


# ----------------------------------------------------------------------------- reading


def test_a_folder_gives_one_label_per_sub_folder(low_high):
    clips = read_labelled(low_high)
    assert len(clips) == 16
    assert {c.label for c in clips} == {"low", "high"}
    assert all(c.path.parent.name == c.label and c.speaker is None for c in clips)


def test_a_manifest_with_or_without_header_resolves_relative_paths(tmp_path):
    (tmp_path / "a").mkdir()
    with_header = tmp_path / "m.csv"
    with_header.write_text("path,label,speaker\na/x.wav,calm,s1\n/abs/y.wav,tense,s2\n\n")
    clips = read_labelled(with_header)
    assert clips == [LabelledClip(tmp_path / "a" / "x.wav", "calm", "s1"), LabelledClip(Path("/abs/y.wav"), "tense", "s2")]
    bare = tmp_path / "bare.csv"
    bare.write_text("a/x.wav,calm\n")
    assert read_labelled(bare) == [LabelledClip(tmp_path / "a" / "x.wav", "calm", None)]


@pytest.mark.parametrize("text, message", [("", "lists no clips"), ("path,label\nx.wav,\n", "needs at least a path and a label")])
def test_a_bad_manifest_is_named(tmp_path, text, message):
    m = tmp_path / "m.csv"
    m.write_text(text)
    with pytest.raises(AdaptError, match=message):
        read_labelled(m)


def test_a_missing_or_empty_folder_says_what_to_give(tmp_path):
    with pytest.raises(AdaptError, match="does not exist"):
        read_labelled(tmp_path / "nope")
    with pytest.raises(AdaptError, match="sub-folder"):
        read_labelled(tmp_path)


# ----------------------------------------------------------------------------- held-out split


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 7)), min_size=12, max_size=60),
       st.floats(0.1, 0.6), st.integers(0, 10**6))
def test_a_speaker_split_is_disjoint_and_keeps_every_label_on_both_sides(items, fraction, seed):
    clips = [LabelledClip(Path(f"{i}.wav"), f"l{lab}", f"s{spk}") for i, (lab, spk) in enumerate(items)]
    try:
        train, test = holdout_split(clips, fraction, seed)
    except AdaptError as err:
        assert "no split" in str(err) or "one speaker" in str(err)
        return
    assert sorted(train + test) == list(range(len(clips)))
    assert not {clips[i].speaker for i in train} & {clips[i].speaker for i in test}
    labels = {c.label for c in clips}
    assert {clips[i].label for i in train} == labels == {clips[i].label for i in test}


def test_without_speakers_each_label_holds_out_its_share():
    clips = [LabelledClip(Path(f"{i}.wav"), "a" if i < 10 else "b") for i in range(13)]
    train, test = holdout_split(clips, 0.3, 0)
    assert sum(clips[i].label == "a" for i in test) == 3 and sum(clips[i].label == "b" for i in test) == 1
    assert len(train) == 9


# ----------------------------------------------------------------------------- the head


def test_the_head_is_scikit_learns_weighted_logistic_regression():
    sklearn = pytest.importorskip("sklearn.linear_model", reason="scikit-learn (dev extra) is not installed")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 6)) * [1, 2, 3, 0.5, 1, 4] + [0, 1, 0, 0, 5, 0]
    y = (x[:, 0] + 0.5 * x[:, 1] + rng.standard_normal(120) > 1).astype(int) + (x[:, 2] > 2)
    w = rng.uniform(0.2, 2.0, 120)
    head = fit_head(x, y, 3, w, c=0.5)
    mean, std = x.mean(0), x.std(0)
    ref = sklearn.LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit((x - mean) / std, y, sample_weight=w)
    np.testing.assert_allclose(head.probabilities(x), ref.predict_proba((x - mean) / std), atol=1e-5)


def test_balanced_weights_give_each_class_and_each_clip_its_share():
    w = balanced_weights([0, 0, 0, 1], [1, 2, 4, 3])
    assert len(w) == 10
    np.testing.assert_allclose([w[:1].sum(), w[1:3].sum(), w[3:7].sum()], [2 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(w[7:].sum(), 2.0)  # one clip of class 1 weighs as much as class 0's three


# ----------------------------------------------------------------------------- the written model


def _random_head(dim: int, classes: int, seed: int = 0):
    from ser_edge.adapt import Head

    rng = np.random.default_rng(seed)
    return Head(rng.standard_normal((dim, classes)), rng.standard_normal(classes))


def _check_written_model(base_path: Path, tmp_path: Path) -> None:
    import onnx
    import onnxruntime as ort

    base = onnx.load(str(base_path))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    probe = ort.InferenceSession(embedding_model(base).SerializeToString(), options,
                                 providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    feats = rng.standard_normal((3, 150, OnnxModel(base_path).feature_config.dim)).astype(np.float32)
    lengths = np.array([150, 90, 200 // 2], np.int64)
    base_logits, base_att, emb = probe.run(["logits", "attention", "embedding"], {"features": feats, "lengths": lengths})
    head = _random_head(emb.shape[1], 3)
    out = write_adapted(base, head, ["x", "y", "z"], tmp_path / "adapted.onnx", {"note": "test"})
    model = OnnxModel(out, threads=1)
    assert model.labels == ["x", "y", "z"] and model.adapted == {"note": "test"}
    p, att = model.run(feats, lengths)
    np.testing.assert_allclose(p, head.probabilities(emb), atol=2e-5)
    np.testing.assert_allclose(att, base_att, atol=1e-6)  # the rest of the graph is untouched
    # An adapted model can be adapted again: its embedding output is found and kept.
    again = write_adapted(onnx.load(str(out)), _random_head(emb.shape[1], 2, 1), ["u", "v"], tmp_path / "again.onnx", {})
    assert OnnxModel(again).labels == ["u", "v"]


def test_the_bundled_int8_model_gets_a_new_head_that_computes_what_numpy_does(tmp_path):
    _check_written_model(DEFAULT_MODEL, tmp_path)


@pytest.mark.parametrize("stats", [False, True])
def test_fresh_fp32_and_int8_exports_get_a_new_head_too(tmp_path, stats):
    """With window statistics the embedding is the whole dense input: context and statistics."""
    import onnx
    import onnxruntime as ort

    torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
    from ser_edge.features import FeatureConfig
    from ser_edge.training.export import export_onnx, quantise_int8
    from ser_edge.training.model import BiLstmAttention, ModelConfig

    torch.manual_seed(0)
    config = FeatureConfig()
    mc = ModelConfig(config.dim, 4, hidden1=16, hidden2=8, dense=8, stats=stats)
    model = BiLstmAttention(mc)
    fp32 = export_onnx(model, config, ["a", "b", "c", "d"], tmp_path / "m.onnx")
    int8 = quantise_int8(fp32, tmp_path / "m.int8.onnx")
    for path in (fp32, int8):
        (tmp_path / path.stem).mkdir()
        _check_written_model(path, tmp_path / path.stem)
        probe = ort.InferenceSession(embedding_model(onnx.load(str(path))).SerializeToString(),
                                     providers=["CPUExecutionProvider"])
        feats = np.zeros((1, 60, config.dim), np.float32)
        emb = probe.run(["embedding"], {"features": feats, "lengths": np.array([60], np.int64)})[0]
        assert emb.shape == (1, mc.embedding_dim)


def test_an_ensemble_gets_a_new_head_on_its_members_vectors(tmp_path):
    torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
    from ser_edge.features import FeatureConfig
    from ser_edge.training.export import export_onnx, quantise_int8
    from ser_edge.training.model import BiLstmAttention, Ensemble, ModelConfig

    torch.manual_seed(0)
    config = FeatureConfig()
    members = [BiLstmAttention(ModelConfig(config.dim, 4, hidden1=16, hidden2=8, dense=8)) for _ in range(2)]
    fp32 = export_onnx(Ensemble(members), config, ["a", "b", "c", "d"], tmp_path / "e.onnx")
    int8 = quantise_int8(fp32, tmp_path / "e.int8.onnx")
    _check_written_model(int8, tmp_path)


# ----------------------------------------------------------------------------- the command


def test_adapt_learns_a_new_label_set_and_the_model_works_everywhere(low_high, tmp_path):
    out = tmp_path / "mine.onnx"
    result = runner.invoke(app, ["adapt", str(low_high), "-o", str(out), "--holdout", "0.25"])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["labels"] == ["high", "low"] and report["held_out"] == 4 and report["fitted_on"] == 12
    assert report["heldout"]["uar"] == 1.0, report["heldout"]
    assert not report["speaker_independent"] and "base_heldout" not in report  # the labels differ from the base's
    assert "UAR 100.0 %" in result.output and "may share speakers" in result.output
    # An ordinary ser-edge model: Recognizer, info, score.
    rec = Recognizer(out, threads=1)
    assert rec.predict(silence_padded(voice(115, seed=42)), RATE).label == "low"
    assert rec.predict(silence_padded(voice(290, seed=43)), RATE).label == "high"
    info = runner.invoke(app, ["info", "--model", str(out)])
    assert info.exit_code == 0 and "adapted" in info.output and "held-out UAR 100.0 %" in info.output
    scored = runner.invoke(app, ["score", str(low_high / "low"), "--model", str(out), "--jobs", "1"])
    assert scored.exit_code == 0 and scored.output.count(",low,") == 8


def test_unusable_clips_are_left_out_and_named(low_high, tmp_path):
    (low_high / "low" / "broken.wav").write_bytes(b"RIFF\x00\x00garbage")
    sf.write(low_high / "high" / "quiet.wav", np.zeros(RATE, np.float32), RATE)
    out = tmp_path / "mine.onnx"
    result = runner.invoke(app, ["adapt", str(low_high), "-o", str(out), "--holdout", "0"])
    assert result.exit_code == 0, result.output
    assert "left out 2 clip(s)" in result.output
    assert "broken.wav: unreadable" in result.output and "quiet.wav: no speech found" in result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["fitted_on"] == 16 and "heldout" not in report and len(report["unusable"]) == 2


@pytest.mark.parametrize("layout, message", [
    ({"only": 5}, "two labels or more; found 1"),
    ({"a": 5, "b": 2}, "at least 3 usable clips; too few for b (2)"),
])
def test_too_few_labels_or_clips_is_an_error(tmp_path, layout, message):
    for label, n in layout.items():
        (tmp_path / "d" / label).mkdir(parents=True)
        for i in range(n):
            sf.write(tmp_path / "d" / label / f"{i}.wav", voice(150 + 10 * i), RATE)
    result = runner.invoke(app, ["adapt", str(tmp_path / "d"), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "m.onnx").exists()


def test_bad_options_and_paths_are_messages(tmp_path, low_high):
    missing = runner.invoke(app, ["adapt", str(tmp_path / "none"), "-o", str(tmp_path / "m.onnx")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    suffix = runner.invoke(app, ["adapt", str(low_high), "-o", str(tmp_path / "m.bin")])
    assert suffix.exit_code == 2 and "should end in .onnx" in suffix.output
    not_model = tmp_path / "x.onnx"
    not_model.write_bytes(b"junk")
    bad = runner.invoke(app, ["adapt", str(low_high), "-o", str(tmp_path / "m.onnx"), "--model", str(not_model)])
    assert bad.exit_code == 2 and "not a readable ONNX model" in bad.output


def test_adapt_runs_without_torch(low_high, tmp_path):
    code = ("import sys; from ser_edge.cli import main; sys.argv = ['ser-edge', 'adapt', sys.argv[1], '-o', sys.argv[2]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code\n"
            "assert 'torch' not in sys.modules, 'adapt imported torch'")
    done = subprocess.run([sys.executable, "-c", code, str(low_high), str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_real_recordings_calm_versus_neutral_speaker_independent(tmp_path):
    root = DATA_DIR / "ravdess"
    if not root.is_dir():
        pytest.skip(f"RAVDESS not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding ravdess/)")
    rows = ["path,label,speaker"]
    for f in sorted(root.rglob("03-01-0[12]-*")):  # modality 03 (audio), vocal 01 (speech), emotion 01/02
        rows.append(f"{f},{'neutral' if f.name.split('-')[2] == '01' else 'calm'},{f.parent.name}")
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join(rows) + "\n")
    out = tmp_path / "calm.onnx"
    result = runner.invoke(app, ["adapt", str(manifest), "-o", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert report["speaker_independent"] and report["speakers"] == 12
    # Calm is not a label of the bundled model; the held-out speakers were never fitted on.
    assert report["heldout"]["uar"] > 0.65, report["heldout"]


def test_a_label_whose_clips_are_all_unusable_is_named(low_high, tmp_path):
    (low_high / "quiet").mkdir()
    for n in range(3):
        sf.write(low_high / "quiet" / f"q{n}.wav", np.zeros(RATE, np.float32), RATE)
    result = runner.invoke(app, ["adapt", str(low_high), "-o", str(tmp_path / "m.onnx")])
    assert result.exit_code == 2 and "too few for quiet (0)" in result.output, result.output


def test_info_shows_a_model_with_partial_adaptation_metadata(tmp_path):
    import onnx

    import onnxruntime as ort

    base = onnx.load(str(DEFAULT_MODEL))
    probe = ort.InferenceSession(embedding_model(base).SerializeToString(), providers=["CPUExecutionProvider"])
    dim = OnnxModel(DEFAULT_MODEL).feature_config.dim
    (emb,) = probe.run(["embedding"], {"features": np.zeros((1, 50, dim), np.float32), "lengths": np.array([50])})
    out = write_adapted(base, _random_head(emb.shape[1], 2), ["a", "b"], tmp_path / "x.onnx", {"check": True})
    result = runner.invoke(app, ["info", "--model", str(out)])
    assert result.exit_code == 0 and "adapted" in result.output, result.output


def test_the_k_shot_base_model_is_trained_again_when_the_default_recipe_changed(tmp_path, monkeypatch):
    """A cached base model is reused only with the recipe it was trained with."""
    pytest.importorskip("torch")
    from ser_edge.training import kshot, protocols
    from ser_edge.training.recipes import get_recipe

    class Trained(Exception):
        pass

    def fit(*args, **kwargs):
        raise Trained

    from ser_edge.model import DEFAULT_MODEL, OnnxModel
    from ser_edge.training.export import decision_for, update_metadata

    monkeypatch.setattr(protocols, "fit", fit)
    cached = tmp_path / "base-without-urdu.int8.onnx"
    shutil.copyfile(DEFAULT_MODEL, cached)
    update_metadata(cached, {"ser_edge.decision": "windows"})  # exported when the runtime decided otherwise
    recipe = get_recipe("default").derive(train={"seed": 0, "device": "cpu"})
    made_with = tmp_path / "base-without-urdu.recipe.json"
    made_with.write_text(json.dumps(recipe.to_dict()))
    assert kshot.base_model("urdu", {}, tmp_path, 1) == cached
    # reused, and decided as the runtime now decides with models of its recipe
    assert OnnxModel(cached).decision == decision_for(recipe.train.to_dict()) == "blend"
    made_with.write_text(json.dumps({**json.loads(made_with.read_text()), "augment": []}))  # an older recipe
    with pytest.raises(Trained):
        kshot.base_model("urdu", {}, tmp_path, 1)
    made_with.unlink()  # made before the recipe was recorded
    with pytest.raises(Trained):
        kshot.base_model("urdu", {}, tmp_path, 1)


def test_each_window_gives_one_embedding_and_the_base_label_is_the_shipped_decision(low_high):
    """The head is fitted on window embeddings only (not the pass over each segment), while the
    base's own label is what it gives as it ships (the segment decision)."""
    import onnx

    from ser_edge.adapt import embed_clips, read_labelled
    from ser_edge.model import DEFAULT_MODEL

    clips = read_labelled(low_high)[:3]
    embedded = embed_clips(DEFAULT_MODEL, onnx.load(str(DEFAULT_MODEL)), clips)
    base = Recognizer(DEFAULT_MODEL, threads=1)
    assert base.decision == "blend"
    for clip, vectors, label in zip(clips, embedded.embeddings, embedded.base_labels):
        shipped = base.predict_file(clip.path)
        assert vectors.shape[0] == len(shipped.windows) and label == shipped.label
