"""Evaluation protocols measure what they say: added clips are trained on, development
speakers are never tested, noise is set against speech, caches follow the feature core."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from ser_edge.features import FeatureConfig  # noqa: E402
from ser_edge.training import data as data_module  # noqa: E402
from ser_edge.training import protocols  # noqa: E402
from ser_edge.training.corpora import Clip  # noqa: E402
from ser_edge.training.data import Example, FeatureCache, NoiseSpec, babble_talkers  # noqa: E402
from ser_edge.training.model import BiLstmAttention, ModelConfig  # noqa: E402
from ser_edge.training.noise import active_power, mix_at_snr  # noqa: E402
from ser_edge.training.splits import DEVELOPMENT_SPEAKERS, is_development  # noqa: E402
from ser_edge.training.trainer import TrainConfig, TrainResult  # noqa: E402

LABELS = ["angry", "happy", "neutral", "sad"]


def _examples(corpus: str, speakers: int, per_class: int, rng: np.random.Generator) -> list[Example]:
    out = []
    for s in range(speakers):
        for y in range(len(LABELS)):
            for n in range(per_class):
                feats = rng.standard_normal((30, 3)).astype(np.float32)
                out.append(Example(feats, y, f"{corpus}:{s:02d}", Path(f"/{corpus}/{s}_{y}_{n}.wav")))
    return out


class _Recorder:
    """Stands in for train_model: records what each run trained and validated on."""

    def __init__(self) -> None:
        self.runs: list[tuple[list[Example], list[Example]]] = []

    def __call__(self, train, val, model_config, config, log=None, progress=False):
        self.runs.append((list(train), list(val)))
        return TrainResult(model=BiLstmAttention(model_config).eval())


def test_adaptation_trains_on_every_added_clip_and_validates_on_source_only(monkeypatch):
    rng = np.random.default_rng(0)
    source, target = _examples("src", 7, 3, rng), _examples("tgt", 6, 5, rng)
    recorder = _Recorder()
    monkeypatch.setattr(protocols, "train_model", recorder)
    config = ModelConfig(input_dim=3, n_classes=4, hidden1=4, hidden2=4, dense=4)
    outcomes = protocols.adaptation(source, target, LABELS, config, TrainConfig(), fractions=(0.0, 0.3),
                                    shots=(2,), draws=2)
    assert [len(o.training_clips) for o in outcomes.values()] == [1, 2, 2]
    runs = iter(recorder.runs)
    for name, outcome in outcomes.items():
        for reported in outcome.training_clips:
            train, val = next(runs)
            added = [e for e in train if e.group.startswith("tgt:")]
            # the clips reported as added are exactly the target clips trained on
            assert Counter(LABELS[e.label] for e in added) == {k: v for k, v in reported.items() if v}
            assert all(e.group.startswith("src:") for e in val)
            if name == "2-shot":
                assert reported == {label: 2 for label in LABELS}
    # the test part is the same for every setting and draw, and never trained on
    first = outcomes["0%"].paths
    assert all(o.paths == first * len(o.training_clips) for o in outcomes.values())
    trained = {e.path for train, _ in recorder.runs for e in train}
    assert not trained & {Path(p) for p in first}


def test_within_corpus_tests_only_the_testable_speakers_and_trains_on_the_rest(monkeypatch):
    rng = np.random.default_rng(1)
    examples = _examples("ravdess", 8, 2, rng)
    recorder = _Recorder()
    monkeypatch.setattr(protocols, "train_model", recorder)
    config = ModelConfig(input_dim=3, n_classes=4, hidden1=4, hidden2=4, dense=4)
    outcome = protocols.within_corpus(examples, LABELS, config, TrainConfig(), k=3,
                                      testable=lambda g: not is_development(g))
    dev = {f"ravdess:{s}" for s in DEVELOPMENT_SPEAKERS["ravdess"]}
    tested = outcome.paths
    assert len(tested) == len(set(tested)) == sum(1 for e in examples if e.group not in dev)
    for train, val in recorder.runs:
        seen = {e.group for e in train + val}
        assert dev & {e.group for e in examples} <= seen  # development speakers always train


def test_per_corpus_scores_and_merged_folds():
    a, b = protocols.Outcome(LABELS), protocols.Outcome(LABELS)
    ex = [Example(np.zeros((30, 3), np.float32), y, f"{c}:1", Path(f"/{c}{y}")) for c in ("x", "y") for y in range(4)]
    a.add(ex[:4], np.eye(4))
    b.add(ex[4:], np.roll(np.eye(4), 1, axis=1))
    a.merge(b)
    summary = a.summary()
    assert summary["by_corpus"]["x"]["uar"] == 1.0 and summary["by_corpus"]["y"]["uar"] == 0.0
    assert summary["uar"] == 0.5 and summary["folds"] == 2
    assert [row["pred"] for row in a.clips()][4:] == ["happy", "neutral", "sad", "angry"]


def test_babble_uses_five_different_speakers():
    pool = [Clip(Path(f"/c/{s}_{n}.wav"), "angry", f"{s}", "c") for s in range(8) for n in range(6)]
    for clip in pool[:12]:
        talkers = babble_talkers(clip, pool)
        speakers = {p.stem.split("_")[0] for p in talkers}
        assert len(talkers) == 5 and len(speakers) == 5 and clip.speaker not in speakers


def test_snr_is_set_against_speech_not_padding():
    rng = np.random.default_rng(2)
    speech = 0.1 * rng.standard_normal(16000).astype(np.float32)
    padded = np.concatenate([speech, np.zeros(16000, np.float32)])
    assert active_power(padded) == pytest.approx(active_power(speech), rel=1e-6)
    noise = rng.standard_normal(len(padded)).astype(np.float32)
    mixed = mix_at_snr(padded, noise, 10.0)
    added = mixed - padded
    snr = 10 * np.log10(np.mean(speech.astype(np.float64) ** 2) / np.mean(added.astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.05)  # over the whole clip it would have been 3 dB lower


def test_the_feature_cache_follows_the_feature_core(tmp_path, monkeypatch):
    wav = tmp_path / "a.wav"
    sf.write(wav, 0.1 * np.sin(np.arange(16000) / 5.0), 16000)
    cache = FeatureCache(FeatureConfig(), root=tmp_path / "cache")
    first = cache._key(wav, None, ())
    monkeypatch.setattr(data_module, "_CORE_KEY", "another build of the core")
    assert cache._key(wav, None, ()) != first
    assert cache._key(wav, NoiseSpec("white", 10.0), ()) != cache._key(wav, None, ())


def test_clips_outside_the_classes_train_only_with_their_speakers_in_the_training_part(monkeypatch):
    rng = np.random.default_rng(1)
    examples = _examples("a", 7, 3, rng)
    extra = [Example(e.features, -1, e.group, Path(str(e.path).replace(".wav", "-x.wav")), own="a:calm")
             for e in _examples("a", 8, 1, rng)]  # speaker a:07 has no clip in `examples`
    recorder = _Recorder()
    monkeypatch.setattr(protocols, "train_model", recorder)
    config = ModelConfig(input_dim=3, n_classes=4, hidden1=4, hidden2=4, dense=4)
    protocols.fit(examples, config, TrainConfig(own_labels=0.5), extra=extra)
    (train, val), = recorder.runs
    added = [e for e in train if e.label == -1]
    speakers = {e.group for e in train if e.label >= 0}
    assert added and {e.group for e in added} == speakers  # every training speaker's, no one else's
    assert not {e.group for e in val} & {e.group for e in added} and all(e.label >= 0 for e in val)
    assert "a:07" not in {e.group for e in added}


def test_every_model_of_an_ensemble_gets_the_clips_outside_the_classes(monkeypatch):
    rng = np.random.default_rng(2)
    examples = _examples("a", 7, 2, rng)
    extra = [Example(e.features, -1, e.group, Path(str(e.path) + ".x"), own="a:calm") for e in examples[::4]]
    recorder = _Recorder()
    monkeypatch.setattr(protocols, "train_model", recorder)
    config = ModelConfig(input_dim=3, n_classes=4, hidden1=4, hidden2=4, dense=4)
    protocols.fit_ensemble(examples, config, TrainConfig(own_labels=0.5), 2, extra=extra)
    assert len(recorder.runs) == 2
    for train, val in recorder.runs:
        assert {e.group for e in train if e.label == -1} == {e.group for e in train if e.label >= 0}
