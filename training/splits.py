"""Speaker-independent splits: no speaker is ever on both sides.

`grouped_kfold` and `leave_one_speaker_out` give test folds that together cover every
clip exactly once; `adaptation_split` and `k_shot_split` take target-corpus clips for
training from speakers that are kept out of the target's test part. `DEVELOPMENT_SPEAKERS`
are never tested on in published figures: choices are made on them.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Optional, Sequence

import numpy as np

__all__ = ["DEVELOPMENT_SPEAKERS", "adaptation_split", "grouped_kfold", "is_development", "k_shot_split",
           "leave_one_speaker_out", "validation_split"]

Fold = tuple[np.ndarray, np.ndarray]  # (train indices, test indices)

#: Speakers set aside for development: recipes and model choices are compared on these
#: alone (see ablation.py), and no published test figure is computed on them, so every
#: published figure comes from speakers that no choice has seen. About a quarter of each
#: corpus, both genders where the corpus has them, every class present:
#: URDU M2 (angry 28), M7 (happy 28), M20, F9, M21 (neutral 10 + 4 + 4), M24 (sad 38);
#: EmoDB 11 (male) and 14 (female), each with all 7 classes; RAVDESS actors 01, 03 (male) and 02, 04 (female).
DEVELOPMENT_SPEAKERS: dict[str, frozenset[str]] = {
    "urdu": frozenset({"M2", "M7", "M20", "F9", "M21", "M24"}),
    "emodb": frozenset({"11", "14"}),
    "ravdess": frozenset({"01", "02", "03", "04"}),
}


def is_development(group: str) -> bool:
    """Whether a speaker group ("corpus:speaker") is one of the development speakers."""
    corpus, _, speaker = group.partition(":")
    return speaker in DEVELOPMENT_SPEAKERS.get(corpus, frozenset())


def _by_group(groups: Sequence[str]) -> dict[str, list[int]]:
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    return dict(members)


def _fold(test_idx: np.ndarray, n: int) -> Fold:
    """(the other indices, test_idx) for n items."""
    mask = np.ones(n, dtype=bool)
    mask[test_idx] = False
    return np.flatnonzero(mask), test_idx


def grouped_kfold(groups: Sequence[str], k: int = 10, seed: int = 0) -> list[Fold]:
    """k folds grouped by speaker, balanced by clip count.

    Speakers are shuffled (seeded), then each, largest first, joins the fold with the
    fewest clips so far. With fewer speakers than k, there are as many folds as speakers.
    """
    members = _by_group(groups)
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    if len(members) < 2:
        raise ValueError(f"speaker-grouped folds need at least 2 speakers, got {len(members)}")
    k = min(k, len(members))
    rng = np.random.default_rng(seed)
    order = list(members)
    rng.shuffle(order)
    order.sort(key=lambda g: -len(members[g]))  # stable: ties keep the shuffled order
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in order:
        smallest = min(range(k), key=lambda f: (len(folds[f]), f))
        folds[smallest].extend(members[g])
    return [_fold(np.array(sorted(test), dtype=np.int64), len(groups)) for test in folds]


def leave_one_speaker_out(groups: Sequence[str]) -> list[Fold]:
    """One fold per speaker: that speaker's clips are the test set."""
    members = _by_group(groups)
    return [_fold(np.array(members[g], dtype=np.int64), len(groups)) for g in sorted(members)]


def _class_mix(y: np.ndarray, idx: Sequence[int], classes: np.ndarray) -> np.ndarray:
    chosen = y[np.asarray(idx, dtype=np.int64)]
    return np.array([np.mean(chosen == c) if len(chosen) else 0.0 for c in classes])


def adaptation_split(groups: Sequence[str], labels: Sequence, fraction: float, seed: int = 0,
                     test_fraction: float = 0.5, draw: int = 0, tries: int = 200,
                     testable: Optional[Callable[[str], bool]] = None) -> tuple[np.ndarray, np.ndarray]:
    """Target-corpus indices (adapt, test) with disjoint speakers.

    The test part is about `test_fraction` of the clips, whole speakers: of `tries` seeded
    draws of speakers, the one whose class mix is closest to the whole target's (total
    variation distance) is kept, so that a corpus whose speakers each hold one or two
    classes (URDU) does not test on a lopsided half. It depends on `seed` only, so every
    `fraction` and `draw` is tested on the same clips. The adaptation set is `fraction`
    of the target, stratified by class (each class gives round(fraction * its clips), or
    all its clips outside the test speakers when it has fewer), drawn from the other
    speakers; `draw` picks another random subset with the same test part. `testable`, when
    given, says which speaker groups may be in the test part (e.g. not the development ones).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    members = _by_group(groups)
    if len(members) < 2:
        raise ValueError("adaptation needs at least 2 target speakers")
    y = np.asarray(labels)
    classes = np.unique(y)
    overall = _class_mix(y, range(len(y)), classes)
    rng = np.random.default_rng(seed)
    n = len(groups)
    candidates = sorted(g for g in members if testable is None or testable(g))
    best, best_score = None, None
    for _ in range(tries):
        test: list[int] = []
        for g in rng.permutation(candidates):
            if len(test) >= test_fraction * n:
                break
            test.extend(members[g])
        if len(test) == n:
            continue  # every speaker in the test part: nothing left to adapt with
        score = 0.5 * float(np.abs(_class_mix(y, test, classes) - overall).sum())
        if best_score is None or score < best_score:
            best, best_score = sorted(test), score
    if best is None:
        raise ValueError("no speakers left for adaptation; lower test_fraction")
    test_idx = np.array(best, dtype=np.int64)
    test_groups = {groups[i] for i in test_idx}
    pick = np.random.default_rng([seed, draw, 1])
    chosen: list[int] = []
    for c in classes:
        pool = [i for i in range(n) if y[i] == c and groups[i] not in test_groups]
        want = min(int(round(fraction * int(np.sum(y == c)))), len(pool))
        chosen.extend(pick.choice(pool, size=want, replace=False).tolist() if want else [])
    return np.array(sorted(chosen), dtype=np.int64), test_idx


def k_shot_split(groups: Sequence[str], labels: Sequence[str], k: int, test: np.ndarray,
                 seed: int = 0, allow_fewer: bool = False) -> np.ndarray:
    """k clips per class, from speakers absent from the `test` indices (seeded).

    A class with fewer than k such clips raises ValueError, or with `allow_fewer` gives
    all it has.
    """
    test_groups = {groups[i] for i in test}
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, (g, y) in enumerate(zip(groups, labels)):
        if g not in test_groups:
            by_label[y].append(i)
    rng = np.random.default_rng(seed)
    chosen = []
    for y in sorted(set(labels)):
        candidates = by_label.get(y, [])
        if len(candidates) < k and not allow_fewer:
            raise ValueError(f"class {y!r} has only {len(candidates)} clips outside the test speakers; "
                             f"cannot take {k}")
        chosen.extend(rng.choice(candidates, size=min(k, len(candidates)), replace=False).tolist())
    return np.array(sorted(chosen), dtype=np.int64)


def validation_split(groups: Sequence[str], labels: Sequence[int], fraction: float = 1 / 7, seed: int = 0,
                     tries: int = 200) -> Fold:
    """(train, validation) indices with disjoint speakers, for early stopping.

    Speakers are drawn in seeded random orders until about `fraction` of the clips are
    set aside; of `tries` such draws, the one whose class mix is closest to the whole
    set's (total variation distance), with no class missing if possible, is kept. A
    corpus where a few speakers hold most of one class (URDU's) would otherwise often get
    a validation set of one speaker and one class, and early stopping would follow it.
    """
    members = _by_group(groups)
    if len(members) < 2:
        raise ValueError(f"a validation split needs at least 2 speakers, got {len(members)}")
    y = np.asarray(labels)
    classes = np.unique(y)
    overall = np.array([np.mean(y == c) for c in classes])
    target = max(1, int(round(fraction * len(groups))))
    rng = np.random.default_rng(seed)
    names = sorted(members)
    best, best_score = None, None
    for _ in range(tries):
        chosen: list[int] = []
        for g in rng.permutation(names):
            if len(chosen) >= target:
                break
            if len(chosen) + len(members[g]) > 2 * target and chosen:
                continue  # a speaker that would double the set is left for training
            chosen.extend(members[g])
        if len({groups[i] for i in chosen}) == len(members):
            continue  # every speaker in validation: nothing left to train on
        share = np.array([np.mean(y[chosen] == c) for c in classes])
        score = (int((share == 0).sum()), 0.5 * float(np.abs(share - overall).sum()))
        if best_score is None or score < best_score:
            best, best_score = sorted(chosen), score
    if best is None:
        raise ValueError("no speaker-disjoint validation split leaves speakers for training")
    return _fold(np.array(best, dtype=np.int64), len(groups))
