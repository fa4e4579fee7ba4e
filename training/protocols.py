"""Evaluation protocols, all speaker-independent and at utterance level.

1. within-corpus: speaker-grouped k-fold (or leave-one-speaker-out);
2. zero-shot cross-corpus: train on one corpus, test on all of another;
3. adaptation: a share of the target corpus (or K clips per class), from speakers kept
   out of its test part, added to the source training set;
4. noise: the test clips mixed with white, pink or babble noise at a given SNR.

Each training run holds out a speaker-grouped validation set from its own training
speakers for early stopping, so no test speaker ever influences a model. Target clips
added for adaptation are always trained on; validation comes from the source speakers.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass, field, replace
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
from ser_edge.training.trainer import TrainConfig, TrainResult, train_model

__all__ = ["Outcome", "adaptation", "fit", "training_split", "within_corpus", "zero_shot"]

Log = Optional[Callable[[str], None]]
Augment = Optional[Callable[[list[Example]], list[Example]]]


@dataclass
class Outcome:
    """Predictions of one protocol run, pooled over its folds, and what produced them."""

    labels: list[str]
    y_true: list[int] = field(default_factory=list)
    y_pred: list[int] = field(default_factory=list)
    corpora: list[str] = field(default_factory=list)  # the corpus of each test clip
    paths: list[str] = field(default_factory=list)    # each test clip, in the order of y_true
    probabilities: list[list[float]] = field(default_factory=list)
    fold_uars: list[float] = field(default_factory=list)
    histories: list[list[dict]] = field(default_factory=list)
    noisy: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)  # condition -> (true, pred)
    training_clips: list[dict[str, int]] = field(default_factory=list)  # per run: target clips trained on, per class

    def add(self, test: Sequence[Example], probabilities: np.ndarray) -> None:
        true = [e.label for e in test]
        pred = probabilities.argmax(axis=1).tolist()
        self.y_true += true
        self.y_pred += pred
        self.corpora += [e.group.partition(":")[0] for e in test]
        self.paths += [str(e.path) for e in test]
        self.probabilities += np.round(probabilities, 5).tolist()
        self.fold_uars.append(report(true, pred, self.labels)["uar"])

    def summary(self) -> dict:
        out = report(self.y_true, self.y_pred, self.labels)
        out["folds"] = len(self.fold_uars)
        if len(self.fold_uars) > 1:
            out["fold_uar_mean"] = statistics.fmean(self.fold_uars)
            out["fold_uar_std"] = statistics.stdev(self.fold_uars)
        corpora = sorted(set(self.corpora))
        if len(corpora) > 1:
            which = np.array(self.corpora)
            true, pred = np.array(self.y_true), np.array(self.y_pred)
            out["by_corpus"] = {c: report(true[which == c], pred[which == c], self.labels) for c in corpora}
        out["noise"] = {name: report(t, p, self.labels) for name, (t, p) in self.noisy.items()}
        out["epochs"] = [len(h) for h in self.histories]
        if self.training_clips:
            out["target_clips_trained_on"] = self.training_clips
        return out

    def save(self, path) -> None:
        """Write this outcome as JSON (for resuming an interrupted evaluation)."""
        import json
        from dataclasses import asdict
        from pathlib import Path

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(path)

    @classmethod
    def load(cls, path) -> "Outcome":
        import json
        from pathlib import Path

        data = json.loads(Path(path).read_text())
        data["noisy"] = {k: (list(t), list(p)) for k, (t, p) in data.get("noisy", {}).items()}
        return cls(**data)

    def merge(self, other: "Outcome") -> None:
        """Append another run's (a fold's or a draw's) predictions to this outcome."""
        for name in ("y_true", "y_pred", "corpora", "paths", "probabilities", "fold_uars", "histories",
                     "training_clips"):
            getattr(self, name).extend(getattr(other, name))
        for name, (t, p) in other.noisy.items():
            true, pred = self.noisy.setdefault(name, ([], []))
            true += t
            pred += p

    def clips(self) -> list[dict]:
        """One row per test clip: path, corpus, true and predicted label, probabilities."""
        return [{"path": p, "corpus": c, "true": self.labels[t], "pred": self.labels[q], "probabilities": pr}
                for p, c, t, q, pr in zip(self.paths, self.corpora, self.y_true, self.y_pred, self.probabilities)]


def training_split(examples: Sequence[Example], seed: int, val_fraction: float = 1 / 7,
                   always: Sequence[Example] = ()) -> tuple[list[Example], list[Example]]:
    """(train, validation): a speaker-disjoint, class-mixed `val_fraction` of the clips of
    `examples` for early stopping, the rest for training; every clip of `always` (target
    clips added for adaptation) is trained on, never used for validation."""
    groups = [e.group for e in examples]
    train_idx, val_idx = validation_split(groups, [e.label for e in examples], val_fraction, seed=seed)
    return [examples[i] for i in train_idx] + list(always), [examples[i] for i in val_idx]


def fit(examples: Sequence[Example], model_config: ModelConfig, train_config: TrainConfig,
        log: Log = None, val_fraction: float = 1 / 7, progress: bool = False,
        augment: Augment = None, always: Sequence[Example] = (), extra: Sequence[Example] = ()) -> TrainResult:
    """Train on `examples` (and all of `always`), early-stopping on a speaker-disjoint,
    class-mixed `val_fraction` of the clips of `examples`; `augment` adds copies of the
    training part, `always` and `extra` clips included (never of the validation part), and
    with a floor (`Augmenter.extend`) its floored copies stand in for the clips themselves.
    `extra`: clips outside the task's classes
    (label -1, for `TrainConfig.own_labels`); those of the training part's speakers are
    trained on, the others (validation speakers' and any not in `examples`) left out."""
    train, val = training_split(examples, train_config.seed, val_fraction, always)
    if extra:  # the speakers of the training part proper (not of target clips added for adaptation)
        speakers = {e.group for e in train[: len(train) - len(always)]}
        train = train + [e for e in extra if e.group in speakers]
    missing = set(range(model_config.n_classes)) - {e.label for e in train}
    if missing:
        warnings.warn(f"classes {sorted(missing)} have no training clips; the model cannot learn them", stacklevel=2)
    if augment is not None:  # an Augmenter with a floor trains on its floored copies instead of the clips
        extend = getattr(augment, "extend", None)
        train = extend(train) if extend is not None else train + augment(train)
    return train_model(train, val, model_config, train_config, log, progress=progress)


def fit_ensemble(examples: Sequence[Example], model_config: ModelConfig, train_config: TrainConfig, members: int,
                 log: Log = None, augment: Augment = None, always: Sequence[Example] = (),
                 extra: Sequence[Example] = ()):
    """`members` models fitted like `fit` with seeds seed, seed+1, ... (each with its own
    validation part); returns (the model: one, or an Ensemble of them, and the TrainResults)."""
    from dataclasses import replace

    from ser_edge.training.model import Ensemble

    results = [fit(examples, model_config, replace(train_config, seed=train_config.seed + k), log=log,
                   augment=augment, always=always, extra=extra) for k in range(members)]
    model = results[0].model if members == 1 else Ensemble([r.model.cpu() for r in results]).eval()
    return model, results


def _folds(examples: Sequence[Example], k: int, seed: int, loso: bool,
           testable: Optional[Callable[[str], bool]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Speaker-grouped folds whose test parts cover the clips of the `testable` speakers
    (all speakers by default); the other speakers' clips are in every training part."""
    groups = [e.group for e in examples]
    eligible = np.array([i for i, g in enumerate(groups) if testable is None or testable(g)], dtype=np.int64)
    sub = [groups[i] for i in eligible]
    inner = leave_one_speaker_out(sub) if loso else grouped_kfold(sub, k=k, seed=seed)
    folds = []
    for _, test in inner:
        test_idx = eligible[test]
        mask = np.ones(len(groups), dtype=bool)
        mask[test_idx] = False
        folds.append((np.flatnonzero(mask), np.sort(test_idx)))
    return folds


def within_corpus(examples: Sequence[Example], labels: Sequence[str], model_config: ModelConfig,
                  train_config: TrainConfig, k: int = 10, loso: bool = False,
                  noisy: Optional[dict[str, Sequence[Example]]] = None, log: Log = None,
                  augment: Augment = None, testable: Optional[Callable[[str], bool]] = None,
                  folds: Optional[Sequence[int]] = None, done: Optional[Callable[[int, Outcome], None]] = None
                  ) -> Outcome:
    """Speaker-grouped k-fold (or LOSO); `noisy` maps a condition name to the same examples
    (same order) with noise mixed in, scored with each fold's model on its test speakers.
    With `testable`, only those speakers are ever tested on (the others always train).
    `folds` runs only those fold numbers (1-based); `done(n, outcome_of_fold_n)` is called
    after each fold (to save it, for resuming)."""
    outcome = Outcome(list(labels))
    splits = _folds(examples, k, train_config.seed, loso, testable)
    for n, (train_idx, test_idx) in enumerate(splits, start=1):
        if folds is not None and n not in folds:
            continue
        if log:
            log(f"fold {n}/{len(splits)}: {len(train_idx)} training clips, {len(test_idx)} test clips")
        result = fit([examples[i] for i in train_idx], model_config, train_config, log, augment=augment)
        fold = Outcome(list(labels))
        fold.histories.append(result.history)
        test = [examples[i] for i in test_idx]
        fold.add(test, result.predict(test))
        for name, noisy_examples in (noisy or {}).items():
            noisy_test = [noisy_examples[i] for i in test_idx]
            if [e.path for e in noisy_test] != [e.path for e in test]:
                raise ValueError(f"noisy examples '{name}' are not aligned with the clean ones")
            fold.noisy[name] = ([e.label for e in noisy_test], _predict(result, noisy_test).tolist())
        if done is not None:
            done(n, fold)
        outcome.merge(fold)
    return outcome


def _predict(result: TrainResult, examples: Sequence[Example]) -> np.ndarray:
    return result.predict(examples).argmax(axis=1)


def zero_shot(source: Sequence[Example], target: Sequence[Example], labels: Sequence[str],
              model_config: ModelConfig, train_config: TrainConfig, log: Log = None,
              augment: Augment = None) -> Outcome:
    """Train on all of `source`, test on all of `target` (same label indices)."""
    result = fit(source, model_config, train_config, log, augment=augment)
    outcome = Outcome(list(labels))
    outcome.histories.append(result.history)
    outcome.add(target, result.predict(target))
    return outcome


def adaptation(source: Sequence[Example], target: Sequence[Example], labels: Sequence[str],
               model_config: ModelConfig, train_config: TrainConfig,
               fractions: Sequence[float] = (0.0, 0.1, 0.2, 0.3), shots: Sequence[int] = (5, 10, 15),
               draws: int = 3, log: Log = None, augment: Augment = None,
               testable: Optional[Callable[[str], bool]] = None) -> dict[str, Outcome]:
    """Progressive adaptation (a class-stratified fraction of the target corpus) and K-shot
    (K clips per class), each added to the source training set and tested on the target
    speakers held out for testing: the same test clips for every setting and draw
    (fraction 0 is zero-shot on that test part). Every added clip is trained on: early
    stopping validates on source speakers only. Each setting is repeated with `draws`
    different random draws of the added clips (and training seeds); its outcome pools them,
    with one entry per draw in `fold_uars`."""
    groups = [e.group for e in target]
    names = [labels[e.label] for e in target]
    _, test_idx = adaptation_split(groups, names, 0.0, seed=train_config.seed, testable=testable)
    test = [target[i] for i in test_idx]
    outcomes = {}
    settings = [(f"{round(100 * f)}%", f, None) for f in fractions] + [(f"{k}-shot", None, k) for k in shots]
    for name, fraction, k in settings:
        outcome = Outcome(list(labels))
        for draw in range(1 if fraction == 0.0 else draws):
            if k is None:
                adapt_idx, same_test = adaptation_split(groups, names, fraction, seed=train_config.seed, draw=draw,
                                                        testable=testable)
                assert np.array_equal(same_test, test_idx)
            else:
                # A class may have fewer than k clips outside the test speakers: it then gives
                # all it has, and the counts are recorded with the result.
                adapt_idx = k_shot_split(groups, names, k, test_idx, seed=1000 * train_config.seed + draw,
                                         allow_fewer=True)
            added = [target[i] for i in adapt_idx]
            if log:
                log(f"adaptation {name}, draw {draw + 1}: source {len(source)} + target {len(added)} clips; "
                    f"test {len(test)} clips")
            config = replace(train_config, seed=train_config.seed + draw)
            result = fit(source, model_config, config, log, augment=augment, always=added)
            outcome.histories.append(result.history)
            outcome.add(test, result.predict(test))
            counts = np.bincount([e.label for e in added], minlength=len(labels))
            outcome.training_clips.append({label: int(n) for label, n in zip(labels, counts)})
        outcomes[name] = outcome
    return outcomes
