"""The paired comparison of two systems with speaker-bootstrap intervals (training/paired.py)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from conftest import DATA_DIR
from ser_edge.training.metrics import report
from ser_edge.training.paired import Paired, bootstrap, main, weighted_uar


def _random(n=60, classes=4, seeds=3, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, classes, n)
    pred = np.where(rng.random((seeds, n)) < 0.5, true, rng.integers(0, classes, (seeds, n)))
    return true, pred


def test_weighted_uar_with_unit_weights_is_the_mean_of_the_seeds_uars():
    true, pred = _random()
    expected = np.mean([report(true, p, list("abcd"))["uar"] for p in pred])
    assert weighted_uar(true, pred, np.ones((1, len(true))))[0] == pytest.approx(expected)


def test_a_weight_of_two_counts_a_clip_twice():
    true, pred = _random(seeds=1)
    weights = np.ones(len(true))
    weights[:10] = 2
    doubled = np.concatenate([np.arange(len(true)), np.arange(10)])
    expected = report(true[doubled], pred[0][doubled], list("abcd"))["uar"]
    assert weighted_uar(true, pred, weights[None])[0] == pytest.approx(expected)


def test_a_class_missing_from_a_draw_is_left_out_not_counted_as_zero():
    true = np.array([0, 0, 1, 1])
    pred = np.array([[0, 0, 0, 0]])
    weights = np.array([[1.0, 1.0, 0.0, 0.0],   # only class 0 drawn: recall 1
                        [0.0, 0.0, 0.0, 0.0]])  # nothing drawn: undefined
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = weighted_uar(true, pred, weights)
    assert out[0] == 1.0 and np.isnan(out[1])


def _item(task, speakers, true, a, b):
    return Paired(task, speakers, np.asarray(true), np.asarray(a)[None], np.asarray(b)[None])


def test_the_same_predictions_differ_by_nothing_in_every_draw():
    true, pred = _random(seeds=1)
    speakers = [f"x:{i % 6}" for i in range(len(true))]
    r = bootstrap([_item("t", speakers, true, pred[0], pred[0])], draws=200)
    assert r["tasks"]["t"]["delta"] == 0 and r["tasks"]["t"]["low"] == 0 == r["tasks"]["t"]["high"]
    assert r["tasks"]["t"]["ahead"] == 0


def test_a_system_always_right_leads_by_the_whole_uar_in_every_draw():
    true, _ = _random(seeds=1)
    speakers = [f"x:{i % 6}" for i in range(len(true))]
    wrong = (true + 1) % 4
    r = bootstrap([_item("t", speakers, true, true, wrong)], draws=200)
    assert r["tasks"]["t"] == {"a": 1.0, "b": 0.0, "delta": 1.0, "low": 1.0, "high": 1.0, "ahead": 1.0}
    assert r["mean"]["delta"] == 1.0


def test_the_interval_reflects_disagreement_between_speakers():
    """A wins on half the speakers and loses on the other half: the interval straddles zero."""
    true = np.tile(np.arange(4), 20)
    speakers = [f"x:{i // 8}" for i in range(len(true))]  # 10 speakers, 8 clips each, every class
    good = np.array([int(s.split(":")[1]) < 5 for s in speakers])
    a = np.where(good, true, (true + 1) % 4)
    b = np.where(~good, true, (true + 1) % 4)
    r = bootstrap([_item("t", speakers, true, a, b)], draws=1000)["tasks"]["t"]
    assert r["delta"] == 0 and r["low"] < -0.2 and r["high"] > 0.2 and 0.3 < r["ahead"] < 0.7


def test_each_corpus_keeps_its_number_of_speakers_in_every_draw():
    """Protocols of one corpus are never left without test speakers by a draw."""
    true = np.tile(np.arange(4), 6)
    a_speakers = [f"a:{i % 3}" for i in range(len(true))]
    b_speakers = ["b:0"] * len(true)  # one speaker: every draw must hold it
    items = [_item("on-a", a_speakers, true, true, true), _item("on-b", b_speakers, true, true, (true + 1) % 4)]
    r = bootstrap(items, draws=300)
    assert r["tasks"]["on-b"]["low"] == 1.0 and r["speakers"] == 4


@pytest.fixture
def corpora_dir():
    if not all((DATA_DIR / c).is_dir() for c in ("urdu", "emodb-2s")):
        pytest.skip(f"corpora not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding urdu/ and emodb-2s/)")
    return DATA_DIR


def _write_runs(runs, system, recipe, task, true, pred):
    from ser_edge.training.comparison import _run_path, clip_id

    record = {"task": task.name, "split": 0, "seed": 0, "system": system, "recipe": recipe,
              "test": [clip_id(task.clips[i]) for i in task.splits[0][1]], "true": true, "pred": pred}
    path = _run_path(runs, system, task.name, 0, 0, recipe)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_the_command_compares_two_systems_on_the_published_folds(corpora_dir, tmp_path, capsys):
    from ser_edge.training.comparison import READERS, comparison_tasks

    corpora = {"urdu": READERS["urdu"](corpora_dir / "urdu"), "emodb": READERS["emodb"](corpora_dir / "emodb-2s")}
    task = next(t for t in comparison_tasks(corpora) if t.name == "zeroshot-emodb-to-urdu")
    true = [task.labels.index(task.clips[i].label) for i in task.splits[0][1]]
    _write_runs(tmp_path, "ser-edge", "right", task, true, true)
    _write_runs(tmp_path, "ser-edge", "wrong", task, true, [(t + 1) % 4 for t in true])
    out_json = tmp_path / "paired.json"
    rc = main(["--urdu", str(corpora_dir / "urdu"), "--emodb", str(corpora_dir / "emodb-2s"), "--runs", str(tmp_path),
               "--a", "ser-edge (right)", "--b", "ser-edge (wrong)", "--draws", "200", "--json", str(out_json)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| zeroshot-emodb-to-urdu | 100.0 | 0.0 | +100.0 |" in text
    assert json.loads(out_json.read_text())["tasks"]["zeroshot-emodb-to-urdu"]["ahead"] == 1.0


def test_the_command_names_the_systems_it_has_when_one_is_missing(corpora_dir, tmp_path, capsys):
    from ser_edge.training.comparison import READERS, comparison_tasks

    corpora = {"urdu": READERS["urdu"](corpora_dir / "urdu"), "emodb": READERS["emodb"](corpora_dir / "emodb-2s")}
    task = next(t for t in comparison_tasks(corpora) if t.name == "zeroshot-emodb-to-urdu")
    true = [task.labels.index(task.clips[i].label) for i in task.splits[0][1]]
    _write_runs(tmp_path, "ser-edge", "right", task, true, true)
    rc = main(["--urdu", str(corpora_dir / "urdu"), "--emodb", str(corpora_dir / "emodb-2s"), "--runs", str(tmp_path),
               "--a", "ser-edge (right)", "--b", "whisper-logreg"])
    assert rc == 2
    assert "systems with runs: ser-edge (right)" in capsys.readouterr().err


def test_the_command_refuses_missing_inputs_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--a", "x", "--b", "y"])
    assert stop.value.code == 2 and "give the corpora" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--urdu", str(tmp_path / "nowhere"), "--a", "x", "--b", "y"])
    assert "no such corpus folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--urdu", str(tmp_path), "--runs", str(tmp_path / "none"), "--a", "x", "--b", "y"])
    assert "no run folder" in capsys.readouterr().err


def _card(rows) -> dict:
    return {"clips": [{"clip": f"{corpus}/{i}", "corpus": corpus, "speaker": speaker, "true": true, "int8": pred,
                       "fp32": pred} for i, (corpus, speaker, true, pred) in enumerate(rows)]}


def test_two_cards_are_compared_per_corpus_on_their_held_out_clips(tmp_path, capsys):
    from ser_edge.training.paired import card_items

    truth = [("emodb", s, t) for s in "ab" for t in ("angry", "sad")] + [("urdu", s, t) for s in "cde"
                                                                          for t in ("angry", "sad")]
    good = _card([(c, s, t, t) for c, s, t in truth])
    no_speech = _card([(c, s, t, None if c == "urdu" and t == "sad" else t) for c, s, t in truth])
    items = card_items(good, no_speech)
    assert [i.task for i in items] == ["emodb", "urdu"] and items[1].speakers[:2] == ["urdu:c", "urdu:c"]
    result = bootstrap(items, draws=200)
    assert result["tasks"]["emodb"]["delta"] == 0.0
    assert result["tasks"]["urdu"]["delta"] == pytest.approx(0.5)   # no speech found counts as a miss
    assert result["mean"]["delta"] == pytest.approx(0.25) and result["mean"]["ahead"] == 1.0
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text(json.dumps(good))
    b.write_text(json.dumps(no_speech))
    assert main(["--cards", str(a), str(b), "--draws", "200"]) == 0
    assert "| mean of 2 | 100.0 | 75.0 | +25.0 |" in capsys.readouterr().out
    b.write_text(json.dumps(_card([(c, s, t, t) for c, s, t in truth[:-1]])))
    assert main(["--cards", str(a), str(b)]) == 2
    assert "different clips" in capsys.readouterr().err
    assert main(["--cards", str(a), str(tmp_path / "missing.json")]) == 2
    assert "cannot compare the cards" in capsys.readouterr().err
