"""The development check: fold models trained once and cached, every held-out development clip
scored through the runtime with each decision, the lead-in probe, and its table."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from conftest import quiet, voiced  # noqa: E402
from ser_edge.recognizer import Recognizer  # noqa: E402
from ser_edge.training import devcheck  # noqa: E402
from ser_edge.training.ablation import dev_tasks  # noqa: E402
from ser_edge.training.corpora import read_emodb, read_ravdess  # noqa: E402
from ser_edge.training.recipes import get_recipe  # noqa: E402
from ser_edge.training.splits import is_development  # noqa: E402

RATE = 16000


def _clip(path, f0, lead_s, seed):
    sf.write(path, np.concatenate([quiet(lead_s, seed), voiced(1.2, f0, seed), quiet(0.3, seed + 1)]), RATE)


@pytest.fixture(scope="module")
def corpus_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    (root / "emodb").mkdir()
    for s in ("11", "14", "03"):  # 11 and 14 are development speakers
        for n, letter in enumerate("WFNT"):  # anger, happiness, neutral, sadness
            _clip(root / "emodb" / f"{s}a0{n % 2 + 1}{letter}a.wav", 110 + 45 * n + int(s), 0.6, 10 * n + int(s))
    for a in ("01", "02", "03", "04", "05"):  # 01-04 are development actors
        (root / "ravdess" / f"Actor_{a}").mkdir(parents=True)
        for n, e in enumerate(("01", "03", "04", "05")):  # neutral, happy, sad, angry
            _clip(root / "ravdess" / f"Actor_{a}" / f"03-01-{e}-01-01-01-{a}.wav", 120 + 40 * n + int(a), 1.0,
                  100 + 10 * n + int(a))
    return root


@pytest.fixture(scope="module")
def corpora(corpus_root):
    return {"emodb": read_emodb(corpus_root / "emodb"), "ravdess": read_ravdess(corpus_root / "ravdess")}


def test_fold_models_are_trained_once_and_every_held_out_clip_is_scored_each_way(corpora, tmp_path, monkeypatch):
    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    task = dev_tasks(corpora)[0]
    assert all(is_development(c.group) for c in task.clips)
    recipe = get_recipe("multicond-deltas").derive(
        model={"hidden1": 8, "hidden2": 4, "dense": 4}, train={"max_epochs": 1, "device": "cpu"})
    said = []
    paths = devcheck.fold_models(task, recipe, tmp_path / "dev", members=2, log=said.append)
    assert [p.name for p in paths] == [f"fold{n}.int8.onnx" for n in range(len(task.splits))]
    assert len(said) == len(task.splits)
    again = []
    assert devcheck.fold_models(task, recipe, tmp_path / "dev", members=2, log=again.append) == paths
    assert again == []  # cached: nothing trained the second time
    with pytest.raises(ValueError, match="another recipe, ensemble size"):  # never scores models of another row
        devcheck.fold_models(task, recipe, tmp_path / "dev", members=3)
    with pytest.raises(ValueError, match="another recipe, ensemble size"):
        devcheck.fold_models(task, recipe.derive(train={"max_epochs": 2}), tmp_path / "dev", members=2)

    rows = devcheck.score_clips(task, paths, lead_in=True, path=True, floors=True)
    held_out = [task.clips[i] for _, test in task.splits for i in test]
    assert [r["clip"] for r in rows] == [str(c.path) for c in held_out]
    assert [r["speaker"] for r in rows] == [c.group for c in held_out]
    for row, (clip, path) in zip(rows, [(task.clips[i], p) for (_, test), p in zip(task.splits, paths) for i in test]):
        assert row["true"] == clip.label and row["corpus"] == clip.corpus
        for decision in ("segment", "windows", "blend"):
            assert row[decision] == Recognizer(str(path), decision=decision).predict_file(clip.path).label
        assert set(devcheck.LEAD_INS) <= set(row) and {row[c] for c in devcheck.LEAD_INS} <= set(task.labels)
        assert {row[c] for c in devcheck.PATHS} <= set(task.labels) and len(row["p 44.1 kHz path"]) == 4
        assert {row[c] for c in devcheck.floor_columns()} <= set(task.labels) | {None}
        assert row["p segment"] == pytest.approx(
            [Recognizer(str(path), decision="segment").predict_file(clip.path).probabilities[k] for k in task.labels])
    lines = devcheck.path_lines(rows)
    assert [line.split(":")[0] for line in lines] == list(devcheck.PATHS)
    assert all(f"of {len(rows)} clips" in line for line in lines)
    text = devcheck.table(rows, task.labels, [*devcheck.DECISIONS, *devcheck.LEAD_INS])
    assert text.splitlines()[0].startswith("| corpus | clips | segment | windows | blend | whole clip | first segment")
    assert [line.split("|")[1].strip() for line in text.splitlines()[2:]] == ["emodb", "ravdess", "mean"]


def test_the_table_gives_each_corpus_uar_and_their_mean():
    labels = ["angry", "sad"]
    rows = [{"corpus": "a", "true": "angry", "x": "angry"}, {"corpus": "a", "true": "sad", "x": "angry"},
            {"corpus": "b", "true": "angry", "x": "angry"}, {"corpus": "b", "true": "sad", "x": None}]
    lines = devcheck.table(rows, labels, ["x", "not scored"]).splitlines()
    assert lines[0] == "| corpus | clips | x |"  # a column no row has is left out
    assert lines[2] == "| a | 2 | 50.0 |" and lines[3] == "| b | 2 | 50.0 |"  # no label: a miss
    assert lines[4] == "| mean | | **50.0** |"


def test_the_command_writes_a_table_and_rows_per_task(corpus_root, tmp_path, monkeypatch, capsys):
    import json

    from ser_edge.training import recipes

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    small = recipes.get_recipe("multicond-deltas").derive(model={"hidden1": 8, "hidden2": 4, "dense": 4},
                                                          train={"max_epochs": 1})
    monkeypatch.setattr(recipes, "get_recipe", lambda name: small)
    out = tmp_path / "dev"
    assert devcheck.main(["--emodb", str(corpus_root / "emodb"), "--ravdess", str(corpus_root / "ravdess"),
                          "--out", str(out), "--members", "1", "--cross"]) == 0
    page = (out / "DEVCHECK.md").read_text()
    tasks = ["dev-joint", "dev-cross-emodb", "dev-cross-ravdess"]
    assert [line.split(":")[0][3:] for line in page.splitlines() if line.startswith("## ")] == tasks
    for task in tasks:
        saved = json.loads((out / task / "rows.json").read_text())
        assert saved["task"] == task and saved["members"] == 1 and saved["clips"]
        assert (out / task / "fold0.int8.onnx").exists()
    cross = json.loads((out / "dev-cross-emodb" / "rows.json").read_text())["clips"]
    assert {r["corpus"] for r in cross} == {"emodb"}  # tested on the corpus it was not trained on
    assert "dev-cross-ravdess" in capsys.readouterr().out


def test_the_command_needs_two_corpora(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        devcheck.main(["--emodb", str(tmp_path), "--out", str(tmp_path / "out")])
    assert stop.value.code == 2 and "at least two corpora" in capsys.readouterr().err


def test_two_checks_on_the_same_clips_are_compared_by_paired():
    from ser_edge.training.paired import bootstrap, card_items

    clips = [{"clip": f"c{i}.wav", "corpus": "emodb", "speaker": f"emodb:{i % 3}", "true": ("angry", "sad")[i % 2],
              "segment": ("angry", "sad")[i % 2], "windows": "angry"} for i in range(12)]
    a = {"row": "a", "clips": clips}
    b = {"row": "b", "clips": [{**c, "segment": "angry"} for c in clips]}
    items = card_items(a, b, column="segment")
    result = bootstrap(items, draws=200)
    assert result["mean"]["delta"] == pytest.approx(0.5) and result["mean"]["ahead"] == 1.0
    with pytest.raises(ValueError, match="choose one of segment, windows"):
        card_items(a, b, column="int8")


def test_a_sound_server_path_resamples_shifts_and_quantises():
    x = voiced(1.0)
    for k in range(4):
        y, rate = devcheck.through_a_sound_server(x, RATE, k)
        lead = 97 + 113 * k
        assert rate == 44100 and abs(len(y) - lead - len(x) * 44100 / RATE) <= 2
        assert not y[:lead].any() and np.array_equal(y, np.round(y * 32767) / 32767)
        # the same sound: its spectrum's peak where the file's is
        spectrum = np.abs(np.fft.rfft(y[lead:]))
        assert abs(np.argmax(spectrum) / len(y[lead:]) * rate - 150.0) < 3.0
