"""Evaluation protocols, all speaker-independent and at utterance level.

1. within-corpus: speaker-grouped k-fold (or leave-one-speaker-out);
2. zero-shot cross-corpus: train on one corpus, test on all of another;
3. adaptation: a share of the target corpus (or K clips per class), from speakers kept
   out of its test part, added to the source training set;
4. noise: the test clips mixed with white, pink or babble noise at a given SNR.

Each training run holds out a speaker-grouped validation set from its own training
speakers for early stopping, so no test speaker ever influences a model.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from ser_edge.training.data import Example
from ser_edge.training.metrics import report
from ser_edge.training.model import ModelConfig
from ser_edge.training.splits import (
    adaptation_split,
    grouped_kfold,
    k_shot_split,
    leave_one_speaker_out,
    validation_split,
)
from ser_edge.training.trainer import TrainConfig, TrainResult, predict, train_model

__all__ = ["Outcome", "adaptation", "fit", "within_corpus", "zero_shot"]

Log = Optional[Callable[[str], None]]
Augment = Optional[Callable[[list[Example]], list[Example]]]


@dataclass
class Outcome:
    """Predictions of one protocol run, pooled over its folds, and what produced them."""

    labels: list[str]
    y_true: list[int] = field(default_factory=list)
    y_pred: list[int] = field(default_factory=list)
    fold_uars: list[float] = field(default_factory=list)
    histories: list[list[dict]] = field(default_factory=list)
    noisy: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # condition -> (true, pred)
    training_clips: dict[str, int] = field(default_factory=dict)  # what was added, per class

    def add(self, true: Sequence[int], pred: Sequence[int]) -> None:
        self.y_true += list(map(int, true))
        self.y_pred += list(map(int, pred))
        self.fold_uars.append(report(true, pred, self.labels)["uar"])

    def summary(self) -> dict:
        out = report(self.y_true, self.y_pred, self.labels)
        out["folds"] = len(self.fold_uars)
        if len(self.fold_uars) > 1:
            out["fold_uar_mean"] = statistics.fmean(self.fold_uars)
            out["fold_uar_std"] = statistics.stdev(self.fold_uars)
        out["noise"] = {name: report(t, p, self.labels) for name, (t, p) in self.noisy.items()}
        out["epochs"] = [len(h) for h in self.histories]
        if self.training_clips:
            out["target_clips_added"] = self.training_clips
        return out


def fit(examples: Sequence[Example], model_config: ModelConfig, train_config: TrainConfig,
        log: Log = None, val_fraction: float = 1 / 7, progress: bool = False,
        augment: Augment = None) -> TrainResult:
    """Train on `examples`, early-stopping on a speaker-disjoint, class-mixed `val_fraction` of
    them; `augment` adds copies of the training part (never of the validation part)."""
    groups = [e.group for e in examples]
    train_idx, val_idx = validation_split(groups, [e.label for e in examples], val_fraction, seed=train_config.seed)
    missing = set(range(model_config.n_classes)) - {examples[i].label for i in train_idx}
    if missing:
        warnings.warn(f"classes {sorted(missing)} have no training clips; the model cannot learn them", stacklevel=2)
    train = [examples[i] for i in train_idx]
    if augment is not None:
        train = train + augment(train)
    return train_model(train, [examples[i] for i in val_idx], model_config, train_config, log, progress=progress)


def _predict(result: TrainResult, examples: Sequence[Example]) -> np.ndarray:
    return predict(result.model, examples).argmax(axis=1)


def within_corpus(examples: Sequence[Example], labels: Sequence[str], model_config: ModelConfig,
                  train_config: TrainConfig, k: int = 10, loso: bool = False,
                  noisy: Optional[dict[str, Sequence[Example]]] = None, log: Log = None,
                  augment: Augment = None) -> Outcome:
    """Speaker-grouped k-fold (or LOSO); `noisy` maps a condition name to the same examples
    (same order) with noise mixed in, scored with each fold's model on its test speakers."""
    groups = [e.group for e in examples]
    folds = leave_one_speaker_out(groups) if loso else grouped_kfold(groups, k=k, seed=train_config.seed)
    outcome = Outcome(list(labels))
    for n, (train_idx, test_idx) in enumerate(folds, start=1):
        if log:
            log(f"fold {n}/{len(folds)}: {len(train_idx)} training clips, {len(test_idx)} test clips")
        result = fit([examples[i] for i in train_idx], model_config, train_config, log, augment=augment)
        outcome.histories.append(result.history)
        test = [examples[i] for i in test_idx]
        outcome.add([e.label for e in test], _predict(result, test))
        for name, noisy_examples in (noisy or {}).items():
            noisy_test = [noisy_examples[i] for i in test_idx]
            if [e.path for e in noisy_test] != [e.path for e in test]:
                raise ValueError(f"noisy examples '{name}' are not aligned with the clean ones")
            true, pred = outcome.noisy.setdefault(name, ([], []))
            true += [e.label for e in noisy_test]
            pred += _predict(result, noisy_test).tolist()
    return outcome


def zero_shot(source: Sequence[Example], target: Sequence[Example], labels: Sequence[str],
              model_config: ModelConfig, train_config: TrainConfig, log: Log = None,
              augment: Augment = None) -> Outcome:
    """Train on all of `source`, test on all of `target` (same label indices)."""
    result = fit(source, model_config, train_config, log, augment=augment)
    outcome = Outcome(list(labels))
    outcome.histories.append(result.history)
    outcome.add([e.label for e in target], _predict(result, target))
    return outcome


def adaptation(source: Sequence[Example], target: Sequence[Example], labels: Sequence[str],
               model_config: ModelConfig, train_config: TrainConfig,
               fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3), shots: Sequence[int] = (5, 10, 15),
               log: Log = None, augment: Augment = None) -> dict[str, Outcome]:
    """Progressive adaptation (a fraction of the target corpus) and K-shot (K clips per
    class), each added to the source training set and tested on the target speakers held
    out for testing: the same test speakers for every setting (fraction 0 is zero-shot on
    that test part)."""
    groups = [e.group for e in target]
    _, test_idx = adaptation_split(groups, 0.0, seed=train_config.seed)
    test = [target[i] for i in test_idx]
    settings: list[tuple[str, np.ndarray]] = []
    for fraction in fractions:
        adapt_idx, same_test = adaptation_split(groups, fraction, seed=train_config.seed)
        assert np.array_equal(same_test, test_idx)
        settings.append((f"{round(100 * fraction)}%", adapt_idx))
    for k in shots:
        # A class may have fewer than k clips outside the test speakers: it then gives all
        # it has, and the counts are recorded with the result.
        settings.append((f"{k}-shot", k_shot_split(groups, [labels[e.label] for e in target], k, test_idx,
                                                   seed=train_config.seed, allow_fewer=True)))
    outcomes = {}
    for name, adapt_idx in settings:
        if log:
            log(f"adaptation {name}: source {len(source)} + target {len(adapt_idx)} clips; test {len(test)} clips")
        result = fit(list(source) + [target[i] for i in adapt_idx], model_config, train_config, log,
                     augment=augment)
        outcome = Outcome(list(labels))
        outcome.histories.append(result.history)
        outcome.add([e.label for e in test], _predict(result, test))
        added = np.bincount([target[i].label for i in adapt_idx], minlength=len(labels))
        outcome.training_clips = {label: int(n) for label, n in zip(labels, added)}
        outcomes[name] = outcome
    return outcomes
