"""Calibration: the temperature fit, the calibration error, and the temperature in the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from ser_edge.model import DEFAULT_MODEL, OnnxModel  # noqa: E402
from ser_edge.training.calibration import ece, fit_temperature, set_temperature, tempered, with_section  # noqa: E402


def _overconfident(n=3000, k=4, true_t=2.0, seed=0):
    """One-window clips whose reported probabilities are softmax(z) while the labels follow
    softmax(z / true_t): the model is overconfident by a temperature of true_t."""
    rng = np.random.default_rng(seed)
    z = 2.5 * rng.standard_normal((n, k))
    reported = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    truth = np.exp(z / true_t) / np.exp(z / true_t).sum(1, keepdims=True)
    labels = np.array([rng.choice(k, p=p) for p in truth])
    return [p[None] for p in reported], labels


def test_the_fitted_temperature_recovers_an_overconfidence():
    clips, labels = _overconfident(true_t=2.0)
    t = fit_temperature(clips, labels)
    assert 1.7 < t < 2.3
    before = np.array([tempered(c, 1.0) for c in clips])
    after = np.array([tempered(c, t) for c in clips])
    assert ece(after, labels)[0] < 0.5 * ece(before, labels)[0]


def test_a_calibrated_model_keeps_a_temperature_near_one_and_a_small_error():
    clips, labels = _overconfident(true_t=1.0, seed=1)
    assert 0.85 < fit_temperature(clips, labels) < 1.15
    assert ece(np.array([tempered(c, 1.0) for c in clips]), labels)[0] < 0.04


def test_tempering_averages_the_windows_after_scaling():
    windows = np.array([[0.7, 0.3], [0.2, 0.8]])
    expected = np.mean([np.array([0.7, 0.3]) ** 0.5 / (0.7**0.5 + 0.3**0.5),
                        np.array([0.2, 0.8]) ** 0.5 / (0.2**0.5 + 0.8**0.5)], axis=0)
    np.testing.assert_allclose(tempered(windows, 2.0), expected)


def test_segments_are_weighted_by_duration_after_scaling():
    segments, weights = np.array([[0.7, 0.3], [0.2, 0.8]]), np.array([3.0, 1.0])
    scaled = [np.array(p) ** 0.5 / np.sum(np.array(p) ** 0.5) for p in segments]
    np.testing.assert_allclose(tempered(segments, 2.0, weights), 0.75 * scaled[0] + 0.25 * scaled[1])


def test_the_calibrated_parts_of_a_recording_are_what_the_recognizer_averages():
    """clip_parts + tempered(T = 1) reproduce Recognizer's probabilities, for either decision."""
    from ser_edge.audio import load
    from ser_edge.recognizer import Recognizer
    from ser_edge.training.calibration import clip_parts

    x = load(Path(__file__).resolve().parents[1] / "examples" / "demo.wav")
    for decision in ("segment", "windows", "blend"):
        rec = Recognizer(decision=decision)
        p = rec.predict(x, 16000)
        parts, weights = clip_parts(p, rec.model.labels, rec.decision)
        assert len(parts) == {"segment": len(p.events), "windows": len(p.windows),
                              "blend": len(p.events) + sum(len(e.windows) for e in p.events)}[decision]
        np.testing.assert_allclose(tempered(parts, 1.0, weights), [p.probabilities[k] for k in rec.model.labels],
                                   atol=1e-6)
    assert clip_parts(Recognizer().predict(np.zeros(16000, np.float32), 16000), ["a"], "segment") is None


def test_a_temperature_on_the_parts_is_the_temperature_in_the_graph(tmp_path):
    """What the calibration fits (tempered parts of the raw model) is what Recognizer gives with
    the temperature in the graph, for every decision (the blend's two halves each tempered)."""
    from ser_edge.audio import load
    from ser_edge.recognizer import Recognizer
    from ser_edge.training.calibration import clip_parts

    raw = set_temperature(DEFAULT_MODEL, 1.0, tmp_path / "raw.onnx")
    hot = set_temperature(raw, 2.5, tmp_path / "hot.onnx")
    x = load(Path(__file__).resolve().parents[1] / "examples" / "demo.wav")
    for decision in ("segment", "windows", "blend"):
        before = Recognizer(raw, decision=decision)
        parts, weights = clip_parts(before.predict(x, 16000), before.model.labels, decision)
        after = Recognizer(hot, decision=decision).predict(x, 16000)
        np.testing.assert_allclose(tempered(parts, 2.5, weights), [after.probabilities[k] for k in before.model.labels],
                                   atol=1e-5)


def test_the_temperature_goes_into_the_graph_and_replaces_an_earlier_one(tmp_path):
    raw = set_temperature(DEFAULT_MODEL, 1.0, tmp_path / "raw.onnx")
    hot = set_temperature(raw, 2.0, tmp_path / "hot.onnx")
    again = set_temperature(hot, 2.0, tmp_path / "again.onnx")  # not 4: it replaces, it does not stack
    x = np.random.default_rng(0).standard_normal((3, 120, 43)).astype(np.float32)
    lengths = np.array([120, 80, 60])
    p1, a1 = OnnxModel(raw, threads=1).run(x, lengths)
    p2, a2 = OnnxModel(hot, threads=1).run(x, lengths)
    p3, _ = OnnxModel(again, threads=1).run(x, lengths)
    expected = np.sqrt(p1) / np.sqrt(p1).sum(1, keepdims=True)
    np.testing.assert_allclose(p2, expected, atol=1e-5)
    np.testing.assert_allclose(p3, p2, atol=1e-6)
    np.testing.assert_allclose(a2, a1)
    assert OnnxModel(hot).temperature == 2.0 and OnnxModel(raw).temperature == 1.0


def test_the_card_section_is_replaced_or_inserted():
    card = "# m\n\n## How good\nx\n\n## Recipe\nr\n"
    once = with_section(card, "Calibration", "\nT = 1\n", before="Recipe")
    assert once == "# m\n\n## How good\nx\n\n## Calibration\n\nT = 1\n\n## Recipe\nr\n"
    twice = with_section(once, "Calibration", "\nT = 2\n", before="Recipe")
    assert twice.count("## Calibration") == 1 and "T = 2" in twice and "T = 1" not in twice


def test_the_calibration_command_writes_into_the_models_folder_it_is_given(tmp_path):
    """A candidate build (`bundle --models DIR`): the temperature goes into DIR's model and
    card, the calibration page into --out, and the package's bundled model is left as it was."""
    import hashlib
    import json
    import shutil

    from conftest import DATA_DIR
    from ser_edge.training.calibration import main
    from ser_edge.training.comparison import clip_id, read_corpora
    from ser_edge.training.corpora import to_shared

    for corpus in ("urdu", "emodb-2s", "ravdess"):
        if not (DATA_DIR / corpus).is_dir():
            pytest.skip(f"{corpus} not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding the corpora)")
    shipped = hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest()
    clips = to_shared(read_corpora({"emodb": DATA_DIR / "emodb-2s"}, "default", log=lambda s: None)["emodb"])[::25][:12]
    rows = [{"clip": clip_id(c), "corpus": c.corpus, "true": c.label, "fold": 1 + k % 2} for k, c in enumerate(clips)]
    models, work = tmp_path / "candidate", tmp_path / "work"
    models.mkdir()
    work.mkdir()
    (models / "card_scores.json").write_text(json.dumps({"clips": rows}))
    (models / "MODEL_CARD.md").write_text("# card\n\n## How good\ntext\n\n## Recipe\nr\n")
    raw = set_temperature(DEFAULT_MODEL, 1.0, models / "default.int8.onnx")
    for fold in (1, 2):
        shutil.copyfile(raw, work / f"fold{fold}.int8.onnx")
    argv = ["--urdu", str(DATA_DIR / "urdu"), "--emodb", str(DATA_DIR / "emodb-2s"), "--ravdess",
            str(DATA_DIR / "ravdess"), "--work", str(work), "--out", str(tmp_path / "page"), "--models", str(models)]
    assert main(argv) == 0
    result = json.loads((tmp_path / "page" / "calibration.json").read_text())
    assert result["clips"] + result["no_speech"] == len(rows)
    assert OnnxModel(models / "default.int8.onnx").temperature == pytest.approx(result["temperature"], rel=1e-5)
    card = (models / "MODEL_CARD.md").read_text()
    assert "## Calibration" in card and card.index("## Calibration") < card.index("## Recipe")
    assert hashlib.sha256(DEFAULT_MODEL.read_bytes()).hexdigest() == shipped
