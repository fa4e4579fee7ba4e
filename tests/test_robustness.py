"""The bundled model in noise: held-out recordings mixed with noise and scored through the shipped path."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from conftest import DATA_DIR  # noqa: E402
from ser_edge.model import DEFAULT_MODEL  # noqa: E402
from ser_edge.training.metrics import report_with_misses  # noqa: E402
from ser_edge.training.robustness import main  # noqa: E402


def uar_with_misses(true, pred, labels):
    return report_with_misses(true, pred, labels)["uar"]


def test_a_recording_without_speech_counts_as_wrong():
    labels = ["a", "b"]
    assert uar_with_misses(["a", "b"], ["a", "b"], labels) == 1.0
    assert uar_with_misses(["a", "b"], ["a", None], labels) == 0.5
    assert uar_with_misses(["a", "a", "b"], [None, "a", "b"], labels) == 0.75


def test_noise_sweep_on_real_held_out_recordings(tmp_path):
    """Ten EmoDB recordings as one fold: at 40 dB the bundled model gives (nearly) the labels it
    gives them clean; at -10 dB of white noise the labels move; the card gains its section."""
    for corpus in ("urdu", "emodb-2s", "ravdess"):
        if not (DATA_DIR / corpus).is_dir():
            pytest.skip(f"{corpus} not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding the corpora)")
    from ser_edge.recognizer import Recognizer
    from ser_edge.training.comparison import clip_id, read_corpora
    from ser_edge.training.corpora import to_shared

    corpora = read_corpora({"emodb": DATA_DIR / "emodb-2s"}, "default", log=lambda s: None)
    clips = to_shared(corpora["emodb"])[::30][:10]
    rec = Recognizer(DEFAULT_MODEL, threads=1)
    rows = [{"clip": clip_id(c), "corpus": c.corpus, "true": c.label, "fold": 1,
             "int8": rec.predict_file(c.path).label} for c in clips]
    models = tmp_path / "models"
    models.mkdir()
    (models / "card_scores.json").write_text(json.dumps({"clips": rows}))
    (models / "MODEL_CARD.md").write_text("# card\n\n## How good\ntext\n\n## Recipe\nr\n")
    work = tmp_path / "work"
    work.mkdir()
    shutil.copyfile(DEFAULT_MODEL, work / "fold1.int8.onnx")
    argv = ["--urdu", str(DATA_DIR / "urdu"), "--emodb", str(DATA_DIR / "emodb-2s"), "--ravdess",
            str(DATA_DIR / "ravdess"), "--work", str(work), "--out", str(tmp_path / "out"), "--models", str(models)]
    assert main(argv + ["--snr", "40", "-10"]) == 0
    result = json.loads((tmp_path / "out" / "robustness.json").read_text())
    entry = result["by_corpus"]["emodb"]
    assert entry["clips"] == 10 and set(result["kinds"]) == {"white", "pink", "babble"}
    clean, labels = entry["clean"], result["labels"]
    assert labels["clean"] == [r["int8"] for r in rows]
    for kind in ("white", "pink", "babble"):  # 40 dB below the speech: (nearly) the clean labels
        assert sum(a == b for a, b in zip(labels[f"{kind}@40"], labels["clean"])) >= 8, (kind, labels)
    assert sum(a == b for a, b in zip(labels["white@-10"], labels["clean"])) <= 5, labels
    card = (models / "MODEL_CARD.md").read_text()
    assert "## In noise" in card and card.index("## In noise") < card.index("## Recipe")
    assert np.isclose(clean, uar_with_misses([r["true"] for r in rows], [r["int8"] for r in rows],
                                             ["angry", "happy", "neutral", "sad"]))


def test_rescore_scores_the_held_out_recordings_again_without_training(tmp_path, monkeypatch, capsys):
    """`bundle --rescore` (after a runtime change): every held-out row gets the labels its fold's
    fp32 and int8 models give now through Recognizer; the card's held-out table and the model's
    training metadata are rewritten with the words saying how they were scored, the rest of the
    card kept; the folds are those of
    card_scores.json; without a finished build, or with a card that has no such table, it exits 2
    saying what is missing and writes nothing."""
    for corpus in ("urdu", "emodb-2s", "ravdess"):
        if not (DATA_DIR / corpus).is_dir():
            pytest.skip(f"{corpus} not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding the corpora)")
    from ser_edge.model import OnnxModel
    from ser_edge.recognizer import Recognizer
    from ser_edge.training import bundle
    from ser_edge.training.comparison import clip_id, read_corpora
    from ser_edge.training.corpora import to_shared

    corpora = read_corpora({"emodb": DATA_DIR / "emodb-2s"}, "default", log=lambda s: None)
    clips = to_shared(corpora["emodb"])[::40][:6]
    rows = [{"clip": clip_id(c), "corpus": c.corpus, "speaker": c.speaker, "true": c.label, "fold": 2,
             "torch_whole_clip": c.label, "fp32": "stale", "int8": "stale", "windows": 0} for c in clips]
    models, work = tmp_path / "models", tmp_path / "work"
    models.mkdir()
    work.mkdir()
    stale_scores = json.dumps({"summary": {"uar_int8": {}}, "scores": {}, "clips": rows})
    (models / "card_scores.json").write_text(stale_scores)
    shutil.copyfile(DEFAULT_MODEL, models / "default.int8.onnx")
    table = bundle.QUALITY_HEADER + "\n|---|\n| stale |\n\nint8 and fp32 ...\nPer-class recall (int8): {}.\n"
    head = "# card\n\nint8 by dynamic\nquantisation (DynamicQuantizeLSTM, MatMulInteger). Stale words on\nwindows.\n\n"
    card = head + bundle.QUALITY_SECTION + "\nProtocol: stale words.\n\n" + table + "\nkept text\n"
    monkeypatch.setattr(bundle, "_calibrate_and_test_in_noise", lambda args: None)
    argv = ["--urdu", str(DATA_DIR / "urdu"), "--emodb", str(DATA_DIR / "emodb-2s"), "--ravdess",
            str(DATA_DIR / "ravdess"), "--work", str(work), "--models", str(models), "--rescore"]
    assert bundle.main(argv) == 2  # no card
    assert "MODEL_CARD.md is missing" in capsys.readouterr().err
    (models / "MODEL_CARD.md").write_text("# a card without the table\n")
    assert bundle.main(argv) == 2
    assert "no held-out section" in capsys.readouterr().err
    (models / "MODEL_CARD.md").write_text(card)
    assert bundle.main(argv) == 2  # no fold models
    assert "folds [2]" in capsys.readouterr().err and (models / "card_scores.json").read_text() == stale_scores
    shutil.copyfile(DEFAULT_MODEL, work / "fold2.onnx")
    shutil.copyfile(DEFAULT_MODEL, work / "fold2.int8.onnx")
    assert bundle.main(argv) == 0
    saved = json.loads((models / "card_scores.json").read_text())
    expected = [Recognizer(DEFAULT_MODEL).predict_file(c.path).label for c in clips]
    assert [r["int8"] for r in saved["clips"]] == expected == [r["fp32"] for r in saved["clips"]]
    assert saved["summary"]["int8_fp32_agreement"] == 1.0
    uar = uar_with_misses([r["true"] for r in rows], expected, ["angry", "happy", "neutral", "sad"])
    assert saved["summary"]["uar_int8"] == {"emodb": round(uar, 4)}
    assert OnnxModel(models / "default.int8.onnx").training["uar_int8"] == {"emodb": round(uar, 4)}
    new_card = (models / "MODEL_CARD.md").read_text()
    assert "stale" not in new_card and f"| {100 * uar:.1f} |" in new_card
    shipped = OnnxModel(DEFAULT_MODEL).decision
    fresh_head = head.replace("Stale words on\nwindows.", bundle.RUNTIME_SENTENCE[shipped])
    assert new_card.startswith(fresh_head + bundle.QUALITY_SECTION + "\nProtocol: joint: ")
    assert new_card.endswith("\n\nkept text\n")
    assert bundle.SHIPPED_PATH[shipped] in new_card.replace("\n", " ")  # the words say how they were scored
    from ser_edge.stream import CONTEXT_S

    # ... and they are the runtime's defaults
    assert Recognizer(DEFAULT_MODEL).decision == shipped == "blend"
    assert f"with {CONTEXT_S:g} s of" in bundle.SHIPPED_PATH[shipped]
    assert saved["summary"]["protocol"].startswith("joint: ") and "context" in saved["summary"]["protocol"]
    # --decision first writes another decision into the fold models and the shipped model.
    assert bundle.main(argv + ["--decision", "segment"]) == 0
    assert {OnnxModel(p).decision for p in (work / "fold2.onnx", work / "fold2.int8.onnx",
                                            models / "default.int8.onnx")} == {"segment"}
    saved = json.loads((models / "card_scores.json").read_text())
    assert [r["int8"] for r in saved["clips"]] == [
        Recognizer(DEFAULT_MODEL, decision="segment").predict_file(c.path).label for c in clips]
    assert bundle.SHIPPED_PATH["segment"] in (models / "MODEL_CARD.md").read_text().replace("\n", " ")
    # Fold models that ask to be decided by their windows are scored so, and the card says so.
    import onnx

    from ser_edge.model import set_metadata

    graph = onnx.load(str(DEFAULT_MODEL))
    set_metadata(graph, {**{p.key: p.value for p in graph.metadata_props}, "ser_edge.decision": "windows"})
    for name in ("fold2.onnx", "fold2.int8.onnx"):
        onnx.save(graph, str(work / name))
    assert bundle.main(argv) == 0
    saved = json.loads((models / "card_scores.json").read_text())
    windows = [Recognizer(DEFAULT_MODEL, decision="windows").predict_file(c.path).label for c in clips]
    assert [r["int8"] for r in saved["clips"]] == windows
    card = (models / "MODEL_CARD.md").read_text().replace("\n", " ")
    assert bundle.SHIPPED_PATH["windows"] in card and bundle.RUNTIME_SENTENCE["windows"].replace("\n", " ") in card
    assert bundle.SHIPPED_PATH["segment"] not in card and "mean of the windows" in saved["summary"]["protocol"]


def test_the_bundle_command_refuses_a_bad_ensemble_size_before_any_work(tmp_path, capsys):
    from ser_edge.training import bundle

    with pytest.raises(SystemExit) as stop:
        bundle.main(["--urdu", str(tmp_path), "--emodb", str(tmp_path), "--ravdess", str(tmp_path), "--ensemble", "0"])
    assert stop.value.code == 2 and "--ensemble must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        bundle.main(["--urdu", str(tmp_path), "--emodb", str(tmp_path), "--ravdess", str(tmp_path), "--decision",
                     "blend"])
    assert stop.value.code == 2 and "--decision goes with --rescore" in capsys.readouterr().err


def test_the_bundle_command_sends_calibration_and_noise_to_the_folders_it_is_given(tmp_path, monkeypatch):
    """`bundle --models DIR --results R`: the calibration and the noise sweep read and write the
    candidate in DIR and put their pages under R, so a candidate never touches the bundled model."""
    import argparse

    from ser_edge.training import bundle, calibration, robustness

    seen = {}
    monkeypatch.setattr(calibration, "main", lambda argv: seen.setdefault("calibration", argv))
    monkeypatch.setattr(robustness, "main", lambda argv: seen.setdefault("robustness", argv))
    args = argparse.Namespace(urdu=tmp_path / "u", emodb=tmp_path / "e", ravdess=tmp_path / "r", work=tmp_path / "w",
                              models=tmp_path / "candidate", results=tmp_path / "pages")
    bundle._calibrate_and_test_in_noise(args)
    for name in ("calibration", "robustness"):
        argv = seen[name]
        options = dict(zip(argv[::2], argv[1::2]))
        assert options["--models"] == str(tmp_path / "candidate") and options["--work"] == str(tmp_path / "w")
        assert options["--out"] == str(tmp_path / "pages" / name)


def test_an_interrupted_bundle_goes_on_from_the_next_fold(tmp_path, monkeypatch, capsys):
    """A build stopped in its second fold, run again with the same arguments, trains only the
    folds it had not finished (and the shipped model), and the kept fold's held-out rows are
    those the first run scored; another seed, or --fresh, trains every fold again."""
    for corpus in ("urdu", "emodb-2s", "ravdess"):
        if not (DATA_DIR / corpus).is_dir():
            pytest.skip(f"{corpus} not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding the corpora)")
    from ser_edge.training import bundle

    real_read, real_fit = bundle.read_corpora, bundle.fit_ensemble
    monkeypatch.setattr(bundle, "read_corpora", lambda *a, **k: {c: clips[::40] for c, clips in real_read(*a, **k).items()})
    monkeypatch.setattr(bundle, "_calibrate_and_test_in_noise", lambda args: None)
    calls = []

    def fit(*a, **k):
        calls.append(len(a[0]))
        if stop_at and len(calls) == stop_at:
            raise KeyboardInterrupt
        return real_fit(*a, **k)

    monkeypatch.setattr(bundle, "fit_ensemble", fit)
    work, models = tmp_path / "work", tmp_path / "models"
    argv = ["--urdu", str(DATA_DIR / "urdu"), "--emodb", str(DATA_DIR / "emodb-2s"), "--ravdess", str(DATA_DIR / "ravdess"),
            "--folds", "2", "--ensemble", "1", "--max-epochs", "1", "--device", "cpu", "--work", str(work),
            "--models", str(models)]
    stop_at = 2  # the second fold's training
    with pytest.raises(KeyboardInterrupt):
        bundle.main(argv)
    assert (work / "fold1.rows.json").is_file() and not (work / "fold2.rows.json").exists()
    first = json.loads((work / "fold1.rows.json").read_text())["rows"]
    assert first and all(r["fold"] == 1 and "int8" in r and "fp32" in r for r in first)

    calls.clear()
    stop_at = 0
    capsys.readouterr()
    assert bundle.main(argv) == 0
    assert "fold 1: kept from an interrupted build" in capsys.readouterr().out
    assert len(calls) == 2  # fold 2, then the shipped model on every clip
    saved = json.loads((models / "card_scores.json").read_text())["clips"]
    assert [r for r in saved if r["fold"] == 1] == first and {r["fold"] for r in saved} == {1, 2}
    assert "kept from an interrupted run" in (models / "MODEL_CARD.md").read_text()

    for again in (["--seed", "1"], ["--fresh"]):
        calls.clear()
        assert bundle.main(argv + again) == 0
        assert len(calls) == 3, again  # both folds and the shipped model
        assert "kept from an interrupted run" not in (models / "MODEL_CARD.md").read_text()
