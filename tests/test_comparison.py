"""The comparison runner: every protocol on the same test clips for every system, never a
development speaker in a test part, resumable, and a page with what was measured."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from ser_edge.training import comparison  # noqa: E402
from ser_edge.training.corpora import EMODB_LETTERS, RAVDESS_EMOTIONS, read_emodb, read_ravdess  # noqa: E402
from ser_edge.training.splits import is_development  # noqa: E402

EMODB_SPEAKERS = ("03", "08", "09", "10", "11", "14")  # 11 and 14 are development speakers
RAVDESS_ACTORS = ("01", "02", "03", "04", "05", "06")  # 01-04 are development speakers


def _tone(path, freq, seconds=0.6, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(int(freq))
    sf.write(path, 0.2 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(len(t)), rate)


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    (root / "emodb").mkdir()
    for s in EMODB_SPEAKERS:
        for n, letter in enumerate(EMODB_LETTERS):
            _tone(root / "emodb" / f"{s}a0{n % 2 + 1}{letter}a.wav", 150 + 40 * n + int(s))
    for a in RAVDESS_ACTORS:
        (root / "ravdess" / f"Actor_{a}").mkdir(parents=True)
        for e in RAVDESS_EMOTIONS:
            _tone(root / "ravdess" / f"Actor_{a}" / f"03-01-{e}-01-01-01-{a}.flac", 120 + 35 * int(e) + int(a))
    return root


def test_every_protocol_is_built_on_evaluation_speakers_only(corpora):
    tasks = comparison.comparison_tasks({"emodb": read_emodb(corpora / "emodb"),
                                         "ravdess": read_ravdess(corpora / "ravdess")}, folds=3)
    names = [t.name for t in tasks]
    assert names == ["within-emodb", "within-ravdess", "within-ravdess4", "zeroshot-emodb-to-ravdess",
                     "zeroshot-ravdess-to-emodb", "joint"]
    for task in tasks:
        tested = [task.clips[i] for _, test in task.splits for i in test]
        assert tested and not any(is_development(c.group) for c in tested)
        assert len(set(task.test_set())) == len(task.test_set())  # each clip tested once
        for train, test in task.splits:
            assert not {task.clips[i].group for i in train} & {task.clips[i].group for i in test}
        if task.kind in ("within", "joint"):
            # every evaluation clip is tested; development speakers train in every fold
            assert len(tested) == sum(1 for c in task.clips if not is_development(c.group))
            for train, _ in task.splits:
                assert {c.group for c in task.clips if is_development(c.group)} <= {task.clips[i].group for i in train}


def test_adaptation_tasks_share_a_test_half_and_add_clips_from_other_speakers(corpora):
    clips = {"emodb": read_emodb(corpora / "emodb"), "ravdess": read_ravdess(corpora / "ravdess")}
    tasks = comparison.adaptation_tasks(clips, draws=2)
    assert len(tasks) == 2 * (1 + 2 * 6)
    by_direction: dict = {}
    for t in tasks:
        (train, test), = t.splits
        added = t.always[0]
        by_direction.setdefault(t.name.split("-")[1], set()).add(tuple(test))
        assert not set(added) & set(test) and not set(added) & set(train)
        assert not {t.clips[i].group for i in added} & {t.clips[i].group for i in test}
        assert all(t.clips[i].corpus == t.clips[test[0]].corpus for i in added)
    assert all(len(tests) == 1 for tests in by_direction.values())


def test_the_command_runs_resumes_and_writes_the_page(corpora, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cmp"
    argv = ["--emodb", str(corpora / "emodb"), "--ravdess", str(corpora / "ravdess"), "--out", str(out),
            "--systems", "ser-edge", "--seeds", "0", "--folds", "2", "--draws", "1", "--max-epochs", "1",
            "--device", "cpu"]
    assert comparison.main(argv) == 0
    runs = sorted((out / "runs" / "ser-edge").glob("*.json"))
    assert len(runs) == 2 + 2 + 2 + 2 + 2 + 2 * 7
    page = (out / "COMPARISON.md").read_text()
    for title in ("within EmoDB 2-s (7 classes)", "within RAVDESS (8 classes)", "zero-shot RAVDESS → EmoDB 2-s",
                  "joint EmoDB 2-s + RAVDESS", "Adaptation with target clips", "UAR white 10 dB"):
        assert title in page
    assert (out / "comparison.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["joint"]["ser-edge (default)"]["by_corpus"]) == {"emodb", "ravdess"}
    record = json.loads(runs[0].read_text())
    assert len(record["test"]) == len(record["pred"]) == len(record["probabilities"])

    capsys.readouterr()
    mtimes = [p.stat().st_mtime_ns for p in runs]
    assert comparison.main(argv) == 0  # everything is reused
    assert "0 to run" in capsys.readouterr().out
    assert [p.stat().st_mtime_ns for p in runs] == mtimes

    # --tasks runs only the protocols named
    only = tmp_path / "only"
    assert comparison.main([str(only) if a == str(out) else a for a in argv] + ["--tasks", "joint"]) == 0
    assert {p.name.split("-")[0] for p in (only / "runs" / "ser-edge").glob("*.json")} == {"joint"}
    with pytest.raises(SystemExit):
        comparison.main(argv + ["--tasks", "nope"])
    assert "unknown tasks ['nope']" in capsys.readouterr().err

    # a run scored on other clips than the folds is refused, not silently mixed in
    record["test"] = record["test"][::-1]
    runs[0].write_text(json.dumps(record))
    with pytest.raises(ValueError, match="other clips"):
        comparison.main(argv + ["--table-only"])


def test_evaluate_all_says_what_is_missing(corpora, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from ser_edge.cli import app

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "all", "-o", str(tmp_path / "o")])
    assert result.exit_code == 2 and "at least one corpus" in result.output
    result = runner.invoke(app, ["evaluate", "all", "--emodb", str(corpora / "emodb"), "--system", "whisper-logreg",
                                 "--whisper", str(tmp_path / "no-model"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert "get-whisper-base" in result.output and "Traceback" not in result.output


def test_seeds_with_probabilities_also_count_as_one_ensemble():
    seeds = {
        0: {"test": ["a", "b", "c"], "true": [0, 1, 1], "pred": [0, 0, 1],
            "probabilities": [[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]},
        1: {"test": ["a", "b", "c"], "true": [0, 1, 1], "pred": [1, 1, 1],
            "probabilities": [[0.4, 0.6], [0.1, 0.9], [0.45, 0.55]]},
    }
    ensemble = comparison._ensemble(seeds)
    assert ensemble["pred"] == [0, 1, 1]  # the argmax of the mean, not a vote of the labels
    np.testing.assert_allclose(ensemble["probabilities"], [[0.65, 0.35], [0.35, 0.65], [0.325, 0.675]])
    assert comparison._ensemble({0: seeds[0]}) is None
    del seeds[1]["probabilities"]
    assert comparison._ensemble(seeds) is None
    seeds[1]["probabilities"] = [[0.4, 0.6], [0.1, 0.9], [0.45, 0.55]]
    seeds[0]["noise_probabilities"] = {"pink": [[0.9, 0.1], [0.3, 0.7], [0.7, 0.3]]}
    seeds[1]["noise_probabilities"] = {"pink": [[0.2, 0.8], [0.6, 0.4], [0.6, 0.4]]}
    assert comparison._ensemble(seeds)["noise"] == {"pink": [0, 1, 0]}
    del seeds[1]["noise_probabilities"]  # runs from before noisy probabilities were kept
    assert "noise" not in comparison._ensemble(seeds)
    assert comparison._cost_key("whisper-logreg") == "whisper-logreg"


def test_costs_are_kept_per_model_shape_and_ensemble_size():
    """Recipes of one shape share a cost entry; deltas (a 3x wider first LSTM input), other
    sizes and other ensemble sizes get their own."""
    key = comparison._cost_key
    assert key("ser-edge (multicond ×3)") == key("ser-edge (level-no-deltas ×3)") == key("ser-edge (adv-speaker ×3)")
    assert key("ser-edge (multicond ×3)") != key("ser-edge (multicond-deltas ×3)") == key("ser-edge (combo-level ×3)")
    assert key("ser-edge (multicond)") != key("ser-edge (multicond ×3)")
    assert key("ser-edge (combo-level)") != key("ser-edge (combo-large)")
    assert "x3 in" in key("ser-edge (multicond-deltas)") and "x1 in" in key("ser-edge (multicond)")
    assert key("ser-edge (no-such-recipe)") == "ser-edge (no-such-recipe)"


def test_the_cost_of_a_recipe_is_measured_on_an_export_of_its_shape(tmp_path):
    """Size and time come from an int8 export of the recipe's model: deltas make it larger, three
    members about three times one; the time is per second of the audio given."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    path = tmp_path / "a.wav"
    sf.write(path, 0.1 * rng.standard_normal(16000 * 3).astype(np.float32), 16000)
    clips = [comparison.Clip(path, "angry", "s1", "urdu")]
    one = comparison.ser_edge_cost("multicond", clips)
    wide = comparison.ser_edge_cost("multicond-deltas", clips)
    three = comparison.ser_edge_cost("multicond", clips, members=3)
    assert 0 < one["seconds_per_second"] < 1 and 0.2 < one["size_mb"] < 1.0
    assert wide["size_mb"] > 1.15 * one["size_mb"]
    assert 2.7 * one["size_mb"] < three["size_mb"] < 3.2 * one["size_mb"]


def test_noisy_scores_per_corpus_and_the_clean_plus_noise_rule():
    from ser_edge.training import ablation

    task = comparison.Task("dev-joint", "t", "dev-joint", ["a", "b"], [], [])
    merged = {"test": ["x/1", "x/2", "y/1", "y/2"], "true": [0, 1, 0, 1], "pred": [0, 1, 0, 0],
              "noise": {"white": [0, 0, 1, 1]}}
    scores = comparison._scores(task, merged)
    assert scores["by_corpus"] == {"x": 1.0, "y": 0.5}
    assert scores["noise_by_corpus"] == {"white": {"x": 0.5, "y": 0.5}}
    clean = {"mean": [0.5, 0.7]}
    assert ablation.rule_score(clean, "clean") == pytest.approx(0.6)
    assert ablation.rule_score(clean, "clean+noise") is None  # no noisy figures: not a candidate
    noisy = {**clean, "mean babble 10 dB": [0.4, 0.4], "mean pink 10 dB": [0.2, 0.2], "mean white 10 dB": [0.3, 0.1]}
    assert ablation.rule_score(noisy, "clean+noise") == pytest.approx((0.6 + (0.4 + 0.2 + 0.2) / 3) / 2)


def test_a_development_row_gets_one_noisy_mean_per_kind_over_the_same_six_columns():
    from types import SimpleNamespace

    from ser_edge.training import ablation

    tasks = [SimpleNamespace(name=n) for n in ("dev-joint", "dev-cross-emodb", "dev-cross-ravdess", "dev-cross-urdu")]
    kinds = ("babble", "pink", "white")
    summary = {"dev-joint": {"s": {"by_corpus": {c: [0.6] for c in ("emodb", "ravdess", "urdu")},
                                   "noise_by_corpus": {k: {c: [0.3] for c in ("emodb", "ravdess", "urdu")}
                                                       for k in kinds}}}}
    for c in ("emodb", "ravdess", "urdu"):
        summary[f"dev-cross-{c}"] = {"s": {"uar": [0.4], "noise": {k: [0.1 * (1 + kinds.index(k))] for k in kinds}}}
    scores = ablation.row_scores(tasks, summary, "s")
    assert scores["mean"] == [pytest.approx(0.5)]
    assert scores["mean babble 10 dB"] == [pytest.approx((3 * 0.3 + 3 * 0.1) / 6)]
    assert scores["mean white 10 dB"] == [pytest.approx((3 * 0.3 + 3 * 0.3) / 6)]
    del summary["dev-cross-urdu"]["s"]["noise"]  # a row scored clean only has no noisy means
    assert not any(k.endswith("10 dB") for k in ablation.row_scores(tasks, summary, "s"))


def test_the_clean_plus_noise_rule_can_choose_a_row_that_is_worse_clean(tmp_path):
    from types import SimpleNamespace

    from ser_edge.training import ablation

    tasks = [SimpleNamespace(name=n) for n in ("dev-joint", "dev-cross-emodb", "dev-cross-ravdess", "dev-cross-urdu")]

    def entries(clean, noisy):
        kinds = ("babble", "pink", "white")
        out = {"dev-joint": {"by_corpus": {c: [clean] for c in ("emodb", "ravdess", "urdu")},
                             "noise_by_corpus": {k: {c: [noisy] for c in ("emodb", "ravdess", "urdu")} for k in kinds}}}
        for c in ("emodb", "ravdess", "urdu"):
            out[f"dev-cross-{c}"] = {"uar": [clean], "noise": {k: [noisy] for k in kinds}}
        return out

    summary: dict = {}
    for system, (clean, noisy) in {"ser-edge (level-no-deltas)": (0.45, 0.25),
                                   "ser-edge (multicond)": (0.43, 0.33)}.items():
        for task, entry in entries(clean, noisy).items():
            summary.setdefault(task, {})[system] = entry
    rows = ["level-no-deltas", "multicond"]
    assert ablation.write_table(tasks, summary, rows, tmp_path / "a", "clean")[1] == "level-no-deltas"
    text, best = ablation.write_table(tasks, summary, rows, tmp_path / "b", "clean+noise")
    assert best == "multicond" and "| score |" in text and "mean white 10 dB" in text
    assert json.loads((tmp_path / "b" / "choice.json").read_text())["rule"] == "clean+noise"


def test_a_row_that_needs_other_recordings_of_the_test_speaker_is_shown_but_never_chosen(tmp_path):
    from types import SimpleNamespace

    from ser_edge.training import ablation

    assert ablation.transductive("baseline") and not ablation.transductive("baseline-utt")
    assert not ablation.transductive("multicond")
    tasks = [SimpleNamespace(name=n) for n in ("dev-joint", "dev-cross-emodb", "dev-cross-ravdess", "dev-cross-urdu")]
    summary: dict = {}
    for system, uar in {"ser-edge (multicond)": 0.40, "ser-edge (baseline)": 0.50, "ser-edge (baseline-utt)": 0.38}.items():
        summary.setdefault("dev-joint", {})[system] = {"by_corpus": {c: [uar] for c in ("emodb", "ravdess", "urdu")}}
        for c in ("emodb", "ravdess", "urdu"):
            summary.setdefault(f"dev-cross-{c}", {})[system] = {"uar": [uar]}
    text, best = ablation.write_table(tasks, summary, ["multicond", "baseline", "baseline-utt"], tmp_path, "clean")
    assert best == "multicond" and "| baseline |" in text and "Row baseline needs other recordings" in text


def test_paired_differences_are_per_seed_and_count_the_seeds_that_improve():
    from types import SimpleNamespace

    from ser_edge.training import ablation

    tasks = [SimpleNamespace(name=n) for n in ("dev-joint", "dev-cross-emodb", "dev-cross-ravdess", "dev-cross-urdu")]
    summary: dict = {}
    for system, per_seed in {"ser-edge (level-no-deltas)": [0.40, 0.40, 0.40],
                             "ser-edge (multicond)": [0.43, 0.38, 0.45]}.items():
        summary.setdefault("dev-joint", {})[system] = {"by_corpus": {c: per_seed for c in ("emodb", "ravdess", "urdu")}}
        for c in ("emodb", "ravdess", "urdu"):
            summary.setdefault(f"dev-cross-{c}", {})[system] = {"uar": per_seed}
    lines = ablation.paired_lines(tasks, summary, ["level-no-deltas", "multicond"], "clean")
    row = [line for line in lines if line.startswith("| multicond |")]
    assert row == ["| multicond | level-no-deltas | +3.0, -2.0, +5.0 | +3.0, -2.0, +5.0 | 2 of 3 |"]
    assert ablation.paired_lines(tasks, summary, ["multicond"], "clean") == []  # its parent is not shown


def test_speaker_intervals_are_centred_on_the_rules_score_difference():
    """interval_lines' Δ is the same score difference the table's rule computes, for one model
    (mean of its seeds) and for the seeds' ensemble; the interval holds it."""
    from pathlib import Path

    from ser_edge.training import ablation
    from ser_edge.training.corpora import Clip

    rng = np.random.default_rng(3)
    corpora = ("emodb", "ravdess", "urdu")
    clips = {c: [Clip(Path(f"{c}{s}_{i}.wav"), "angry", str(s), c) for s in range(4) for i in range(8)]
             for c in corpora}
    labels = ["angry", "happy", "neutral", "sad"]
    pool = [x for c in corpora for x in clips[c]]
    tasks = [comparison.Task("dev-joint", "t", "dev-joint", labels, pool, [([], list(range(len(pool))))],
                             noise=True)]
    tasks += [comparison.Task(f"dev-cross-{c}", "t", "dev-cross", labels, clips[c], [([], list(range(32)))], noise=True)
              for c in corpora]

    def record(task, skill):
        true = rng.integers(0, 4, len(task.clips))
        guess = lambda: np.where(rng.random(len(true)) < skill, true, rng.integers(0, 4, len(true))).tolist()
        probs = np.eye(4)[guess()] * 0.9 + 0.025
        return {"test": [comparison.clip_id(c) for c in task.clips], "true": true.tolist(), "pred": probs.argmax(1).tolist(),
                "probabilities": probs.tolist(), "noise": {k: guess() for k in comparison.NOISE},
                "noise_probabilities": {k: (np.eye(4)[guess()]).tolist() for k in comparison.NOISE}}

    results: dict = {}
    for task in tasks:
        truth = None
        for system, skill in (("ser-edge (level-no-deltas)", 0.5), ("ser-edge (multicond)", 0.7)):
            seeds = {}
            for seed in range(3):
                rec = record(task, skill)
                truth = truth or rec["true"]
                rec["true"] = truth
                seeds[seed] = rec
            results.setdefault(task.name, {})[system] = seeds
            results[task.name][f"{system[:-1]} ×3)"] = {0: comparison._ensemble(seeds)}
    summary = comparison.summarise(tasks, results)
    rows = ["level-no-deltas", "multicond"]
    expected = [ablation.rule_score(ablation.row_scores(tasks, summary, f"ser-edge (multicond{x})"), "clean+noise")
                - ablation.rule_score(ablation.row_scores(tasks, summary, f"ser-edge (level-no-deltas{x})"),
                                      "clean+noise") for x in ("", " ×3")]
    lines = ablation.interval_lines(tasks, results, rows, "clean+noise", draws=300)
    row = next(line for line in lines if line.startswith("| multicond |")).strip("|").split("|")
    for delta, interval, want in ((row[2], row[3], expected[0]), (row[5], row[6], expected[1])):
        low, high = (float(v) for v in interval.split(" to "))
        assert float(delta) == pytest.approx(100 * want, abs=0.051)
        assert low <= float(delta) <= high
    assert ablation.interval_lines(tasks, results, ["multicond"], "clean") == []  # its parent is not shown


def test_clips_outside_the_shared_classes_are_offered_to_the_training_side_only(corpora):
    from ser_edge.training.ablation import dev_tasks

    clips = {"emodb": read_emodb(corpora / "emodb"), "ravdess": read_ravdess(corpora / "ravdess")}
    tasks = {t.name: t for t in comparison.comparison_tasks(clips, folds=3)}
    assert not tasks["within-emodb"].extra and not tasks["within-ravdess"].extra  # every class is a class there
    assert {c.label for c in tasks["within-ravdess4"].extra} == {"calm", "fearful", "disgust", "surprised"}
    assert {c.corpus for c in tasks["zeroshot-emodb-to-ravdess"].extra} == {"emodb"}  # the source's only
    assert {c.label for c in tasks["zeroshot-emodb-to-ravdess"].extra} == {"boredom", "disgust", "fear"}
    joint = tasks["joint"]
    assert len(joint.extra) == sum(len(v) for v in clips.values()) - len(joint.clips)
    assert not {c.path for c in joint.extra} & {c.path for c in joint.clips}
    dev = {t.name: t for t in dev_tasks(clips)}
    assert dev["dev-joint"].extra and all(is_development(c.group) for c in dev["dev-joint"].extra)
    assert {c.corpus for c in dev["dev-cross-emodb"].extra} == {"ravdess"}  # never the tested corpus


def test_a_run_with_own_labels_trains_on_the_extra_clips_of_its_training_speakers(corpora, monkeypatch, tmp_path):
    from ser_edge.training import protocols

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    clips = {"emodb": read_emodb(corpora / "emodb"), "ravdess": read_ravdess(corpora / "ravdess")}
    task = next(t for t in comparison.comparison_tasks(clips, folds=3) if t.name == "joint")
    seen = {}

    def fit(examples, model_config, config, log=None, augment=None, always=(), extra=()):
        seen.update(extra=list(extra), examples=list(examples))
        from ser_edge.training.model import BiLstmAttention
        from ser_edge.training.trainer import TrainResult

        return TrainResult(model=BiLstmAttention(model_config).eval())

    monkeypatch.setattr(protocols, "fit", fit)
    comparison._init_worker({"joint": task}, "cpu", 1)
    record = comparison.run_ser_edge("joint", 0, 0, "own-labels")
    train_idx, test_idx = task.splits[0]
    speakers = {task.clips[i].group for i in train_idx}
    assert seen["extra"] and {e.group for e in seen["extra"]} <= speakers
    assert all(e.label == -1 and e.own.split(":")[1] not in task.labels for e in seen["extra"])
    assert all(e.own == f"{e.group.split(':')[0]}:{task.labels[e.label]}" for e in seen["examples"])
    assert len(record["test"]) == len(test_idx)
    comparison._STATE.clear()
    comparison._init_worker({"joint": task}, "cpu", 1)
    comparison.run_ser_edge("joint", 0, 0, "multicond")
    assert seen["extra"] == []  # a recipe without the head gets none
    comparison._STATE.clear()
