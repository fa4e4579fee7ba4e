"""ser-edge beside the anchors a researcher would pick, on the same folds of three corpora.

    python -m ser_edge.training.comparison --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --ravdess ../shared/data/ravdess --whisper ~/.cache/ser-edge/teachers/whisper-base \\
        --out results/comparison [--seeds 0 1 2] [--jobs 2] [--device auto]

Protocols, all speaker-independent and at utterance level (UAR, WA, macro-F1):
- within each corpus: URDU 4 classes, EmoDB 2-s 7 classes, RAVDESS 8 and 4 classes,
  speaker-grouped folds;
- zero-shot, all six ordered pairs, on the 4 shared classes (train on all of one corpus);
- leave one corpus out: train on two corpora, test on the third (4 classes);
- joint: all three corpora pooled (4 classes), speaker-grouped folds, UAR per corpus:
  the protocol the bundled model is judged by.

Test clips never come from the development speakers (`splits.DEVELOPMENT_SPEAKERS`), on
which the recipe was chosen; they are in every training part. Folds depend on the speakers
only (fold seed 0), so every system and every seed is scored on the same test clips.

Systems: ser-edge (the C++ features and the Bi-LSTM-attention recipe; one training per
fold and seed, also scored with its test clips in white, pink and babble noise at 10 dB
in the within-corpus protocols), and the anchors of `anchors.py` (openSMILE functionals +
linear SVM, Whisper-base embeddings + logistic regression; deterministic). Each run is a
JSON file under OUT/runs/, written when it finishes and reused when the command is run
again, so an interrupted comparison resumes where it stopped and the anchors and ser-edge
can be run on different machines into one folder. `--table-only` writes the page from the
runs present.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from functools import partial
from itertools import permutations
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ser_edge.training.corpora import (
    EMODB_LETTERS,
    RAVDESS_EMOTIONS,
    SHARED_LABELS,
    Clip,
    outside,
    read_emodb,
    read_ravdess,
    read_urdu,
    to_shared,
)
from ser_edge.training.metrics import report
from ser_edge.training.splits import adaptation_split, grouped_kfold, is_development, k_shot_split

__all__ = ["Task", "adaptation_tasks", "comparison_tasks", "run_anchor", "run_jobs", "run_ser_edge", "write_page"]

READERS = {"urdu": read_urdu, "emodb": read_emodb, "ravdess": read_ravdess}
TITLES = {"urdu": "URDU", "emodb": "EmoDB 2-s", "ravdess": "RAVDESS"}
SHARED = list(SHARED_LABELS)
NOISE = ("white", "pink", "babble")
NOISE_SNR_DB = 10.0


@dataclass
class Task:
    """One protocol: a pool of clips with labels, and its (train, test) index splits."""

    name: str
    title: str
    kind: str                     # "within", "zero-shot", "loco", "joint", "dev-joint", "dev-cross"
    labels: list[str]
    clips: list[Clip]
    splits: list[tuple[list[int], list[int]]] = field(default_factory=list)
    noise: bool = False           # ser-edge runs also score the test clips in noise
    always: list[list[int]] = field(default_factory=list)  # per split: clips always trained on (adaptation)
    #: Clips of the pool's corpora outside `labels`: a recipe with TrainConfig.own_labels trains
    #: on those of each split's training speakers (never tested on, never in a test speaker's split).
    extra: list[Clip] = field(default_factory=list)

    def test_set(self) -> list[str]:
        """Every test clip's id (corpus/stem), in split order: equal across systems."""
        return [clip_id(self.clips[i]) for _, test in self.splits for i in test]


def clip_id(clip: Clip) -> str:
    """A clip's identity independent of where it is stored and in which container."""
    return f"{clip.corpus}/{clip.path.stem}"


def corpus_of(identity: str) -> str:
    """The corpus of a clip id made by `clip_id`."""
    return identity.partition("/")[0]


def _speaker_folds(clips: Sequence[Clip], k: int, testable: Callable[[str], bool],
                   trainable: Callable[[str], bool] = lambda g: True) -> list[tuple[list[int], list[int]]]:
    """Folds whose test parts cover the clips of the `testable` speakers, grouped by speaker
    (fold seed 0); every other `trainable` clip trains in every fold."""
    eligible = [i for i, c in enumerate(clips) if testable(c.group)]
    inner = grouped_kfold([clips[i].group for i in eligible], k=k, seed=0)
    out = []
    for _, test in inner:
        test_idx = sorted(eligible[j] for j in test)
        held = set(test_idx)
        out.append(([i for i, c in enumerate(clips) if i not in held and trainable(c.group)], test_idx))
    return out


def _evaluation(group: str) -> bool:
    return not is_development(group)


def comparison_tasks(corpora: dict[str, list[Clip]], folds: int = 10) -> list[Task]:
    """The published protocols over the corpora given (any of urdu, emodb, ravdess)."""
    tasks = []
    own = {"urdu": ("urdu", SHARED, "4 classes"), "emodb": ("emodb", list(EMODB_LETTERS.values()), "7 classes"),
           "ravdess": ("ravdess", list(RAVDESS_EMOTIONS.values()), "8 classes")}
    within = [own[c] for c in ("urdu", "emodb", "ravdess") if c in corpora]
    if "ravdess" in corpora:
        within.append(("ravdess4", SHARED, "4 classes"))
    for name, labels, what in within:
        corpus = name.rstrip("4")
        clips = [c for c in corpora[corpus] if c.label in labels] if labels is not SHARED else to_shared(corpora[corpus])
        tasks.append(Task(f"within-{name}", f"within {TITLES[corpus]} ({what})", "within", list(labels), clips,
                          _speaker_folds(clips, folds, _evaluation), noise=True,
                          extra=outside(corpora[corpus], labels)))
    shared = {c: to_shared(clips) for c, clips in corpora.items()}
    for a, b in permutations(sorted(shared), 2):
        pool = shared[a] + shared[b]
        test = [i for i in range(len(shared[a]), len(pool)) if _evaluation(pool[i].group)]
        tasks.append(Task(f"zeroshot-{a}-to-{b}", f"zero-shot {TITLES[a]} → {TITLES[b]} (4 classes)", "zero-shot",
                          SHARED, pool, [(list(range(len(shared[a]))), test)], extra=outside(corpora[a], SHARED)))
    if len(shared) >= 3:
        for c in sorted(shared):
            others = [o for o in sorted(shared) if o != c]
            pool = [x for o in others for x in shared[o]] + shared[c]
            n = len(pool) - len(shared[c])
            test = [i for i in range(n, len(pool)) if _evaluation(pool[i].group)]
            tasks.append(Task(f"loco-{c}", f"{' + '.join(TITLES[o] for o in others)} → {TITLES[c]} (4 classes)",
                              "loco", SHARED, pool, [(list(range(n)), test)], extra=outside((x for o in others for x in corpora[o]), SHARED)))
    if len(shared) >= 2:
        pool = [x for c in sorted(shared) for x in shared[c]]
        tasks.append(Task("joint", f"joint {' + '.join(TITLES[c] for c in sorted(shared))} (4 classes)", "joint",
                          SHARED, pool, _speaker_folds(pool, folds, _evaluation),
                          extra=outside((x for c in sorted(shared) for x in corpora[c]), SHARED)))
    return tasks


ADAPT_FRACTIONS = (0.1, 0.2, 0.3)
ADAPT_SHOTS = (5, 10, 15)


def adaptation_tasks(corpora: dict[str, list[Clip]], draws: int = 3) -> list[Task]:
    """Every ordered pair of corpora on the 4 shared classes: the source corpus plus target
    clips (a class-stratified 10 / 20 / 30 % of the target, or K = 5 / 10 / 15 clips per
    class), drawn `draws` times from the target speakers outside its test half; every setting
    is tested on the same test half (non-development speakers, class-balanced), and "0pct"
    is zero-shot on it. Added clips are always trained on, never used for validation."""
    shared = {c: to_shared(clips) for c, clips in corpora.items()}
    tasks = []
    for a, b in permutations(sorted(shared), 2):
        source, target = shared[a], shared[b]
        pool, n = source + target, len(source)
        groups, names = [c.group for c in target], [c.label for c in target]
        _, test = adaptation_split(groups, names, 0.0, seed=0, testable=_evaluation)
        test_idx = [n + int(i) for i in test]
        base = f"adapt-{a}-to-{b}"
        title = f"{TITLES[a]} → {TITLES[b]}"
        tasks.append(Task(f"{base}-0pct", f"{title}, no target clips", "adapt", SHARED, pool,
                          [(list(range(n)), test_idx)], always=[[]]))
        for draw in range(draws):
            for fraction in ADAPT_FRACTIONS:
                added, _ = adaptation_split(groups, names, fraction, seed=0, draw=draw, testable=_evaluation)
                tasks.append(Task(f"{base}-{round(100 * fraction)}pct-d{draw}", f"{title}, {fraction:.0%} of the target",
                                  "adapt", SHARED, pool, [(list(range(n)), test_idx)],
                                  always=[[n + int(i) for i in added]]))
            for k in ADAPT_SHOTS:
                added = k_shot_split(groups, names, k, test, seed=draw, allow_fewer=True)
                tasks.append(Task(f"{base}-{k}shot-d{draw}", f"{title}, {k} target clips per class", "adapt", SHARED,
                                  pool, [(list(range(n)), test_idx)], always=[[n + int(i) for i in added]]))
    return tasks


# ---------------------------------------------------------------------------- running

_STATE: dict = {}


def _init_worker(tasks: dict[str, Task], device: str, threads: int, overrides: Optional[dict] = None) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    _STATE.update(tasks=tasks, device=device, features={}, overrides=overrides or {})


def _examples(task: Task, indices: Sequence[int], cache, noise=None):
    return [_example(task, task.clips[i], cache, noise) for i in indices]


def _extra_examples(task: Task, speakers: set, cache) -> list:
    """The task's clips outside its classes (label -1) of the given speakers, with their own label."""
    return [_example(task, clip, cache) for clip in task.extra if clip.group in speakers]


def _example(task: Task, clip: Clip, cache, noise=None):
    """One clip of the task as an Example (label -1 outside the task's classes), its features
    computed once per process (in `noise` where given: babble of the clip's corpus's clips)."""
    from ser_edge.training.data import Example, NoiseSpec, Source, babble_talkers

    memo = _STATE.setdefault("features", {})
    key = (str(clip.path), noise, cache.config.to_json())
    if key not in memo:
        spec = NoiseSpec(noise, NOISE_SNR_DB) if noise else None
        talkers = babble_talkers(clip, [c for c in task.clips if c.corpus == clip.corpus]) if noise == "babble" else []
        memo[key] = cache.features(clip.path, spec, talkers), Source(cache, spec, tuple(talkers))
    label = task.labels.index(clip.label) if clip.label in task.labels else -1
    features, source = memo[key]
    return Example(features, label, clip.group, clip.path, own=f"{clip.corpus}:{clip.label}", source=source)


def _in_noise(task: Task, indices: Sequence[int], cache, kind: str, recipe) -> list:
    """The clips in noise; with a baseline, relative to the baseline each test speaker (or
    recording) has in that noise (what a running baseline of a noisy stream would hold)."""
    examples = _examples(task, indices, cache, kind)
    return _own_baseline(recipe.features, recipe.baseline)(examples) if recipe.baseline else examples


def _own_baseline(config, per: str = "utterance"):
    """examples -> the examples relative to the baselines measured on them (per speaker or utterance)."""
    return partial(_relative_to_own, config, per)


def _relative_to_own(config, per: str, examples):
    from ser_edge.training.data import relative_to_baseline, speaker_baselines

    return relative_to_baseline(examples, speaker_baselines(examples, config, per), config, per)


def _then(first, second):
    """The composition second(first(x)) (picklable, unlike a lambda)."""
    return partial(_compose, first, second)


def _compose(first, second, x):
    return second(first(x))


def run_ser_edge(task_name: str, split: int, seed: int, recipe_name: str) -> dict:
    """Train the recipe on one split of a task and score its test clips (and, for tasks with
    noise, the same clips in each noise)."""
    from ser_edge.training.data import FeatureCache, relative_to_baseline, speaker_baselines
    from ser_edge.training.protocols import fit
    from ser_edge.training.recipes import get_recipe

    task: Task = _STATE["tasks"][task_name]
    recipe = get_recipe(recipe_name).derive(train={**_STATE["overrides"], "seed": seed, "device": _STATE["device"]})
    cache = FeatureCache(recipe.features)
    train_idx, test_idx = task.splits[split]
    always = task.always[split] if task.always else []
    start = time.time()
    train_ex, always_ex = _examples(task, train_idx, cache), _examples(task, always, cache)
    if recipe.train.distill > 0 or recipe.train.embed_distill > 0:
        train_ex, always_ex = _with_teacher(task, train_ex, always_ex, recipe.train, seed)
    if recipe.train.frame_distill > 0:
        train_ex, always_ex = _with_teacher_frames(train_ex, always_ex)
    augment, relative = recipe.augmenter(cache), (lambda examples: examples)
    if recipe.baseline == "speaker":  # every speaker's clean clips of the task (test speakers' too: unsupervised)
        baselines = speaker_baselines(_examples(task, range(len(task.clips)), cache), recipe.features)
        relative = partial(relative_to_baseline, baselines=baselines, config=recipe.features)
    elif recipe.baseline:  # each clip, copy and test clip against its own medians
        relative = _own_baseline(recipe.features)
    if recipe.baseline:
        if augment is not None and augment.floors:
            raise ValueError("a recipe with a baseline cannot use a floor augmentation (its copies would be "
                             "added beside the clips, not stand in for them)")
        train_ex, always_ex = relative(train_ex), relative(always_ex)
        augment = _then(augment, relative) if augment is not None else None
    extra_ex = []
    if recipe.train.own_labels > 0 and task.extra:
        extra_ex = relative(_extra_examples(task, {task.clips[i].group for i in train_idx}, cache))
    result = fit(train_ex, recipe.model_config(len(task.labels)), recipe.train, augment=augment, always=always_ex,
                 extra=extra_ex)
    test = relative(_examples(task, test_idx, cache))
    probs = result.predict(test)
    out = _run_record(task, test_idx, probs)
    out.update(system="ser-edge", recipe=recipe_name, seed=seed, best_epoch=result.best_epoch,
               epochs=len(result.history), device=result.device, seconds=round(time.time() - start, 1))
    if task.noise:
        noisy = {kind: result.predict(_in_noise(task, test_idx, cache, kind, recipe)) for kind in NOISE}
        out["noise"] = {kind: p.argmax(1).tolist() for kind, p in noisy.items()}
        out["noise_probabilities"] = {kind: np.round(p, 4).tolist() for kind, p in noisy.items()}
    return out


def _with_teacher(task: Task, train_ex, always_ex, config, seed: int):
    """The training examples with the teacher's targets (fitted on these examples only)."""
    from ser_edge.training.teacher import attach_for_training, embeddings

    vectors = _teacher_outputs("teacher_vectors", embeddings, [*train_ex, *always_ex])
    both = attach_for_training(train_ex, vectors, len(task.labels), config, always=always_ex)
    return both[: len(train_ex)], both[len(train_ex):]


def _with_teacher_frames(train_ex, always_ex):
    """The training examples with the teacher's encoder frames (standardised over them)."""
    from ser_edge.training.teacher import attach_frames, frames

    return attach_frames(train_ex, _teacher_outputs("teacher_frames", frames, [*train_ex, *always_ex]), always_ex)


def _teacher_outputs(key: str, compute, examples) -> dict:
    """{str(path): the teacher's output} through `compute(paths)`, kept per process over every
    task it runs; computed only for the examples' files not seen yet."""
    cached = _STATE.setdefault(key, {})
    missing = sorted({str(e.path) for e in examples} - set(cached))
    if missing:
        cached.update(compute([Path(p) for p in missing]))
    return cached


def _run_record(task: Task, test_idx: Sequence[int], probs: np.ndarray) -> dict:
    return {"task": task.name, "test": [clip_id(task.clips[i]) for i in test_idx],
            "true": [task.labels.index(task.clips[i].label) for i in test_idx],
            "pred": probs.argmax(1).tolist(), "probabilities": np.round(probs, 4).tolist()}


def run_anchor(task: Task, anchor: str, embeddings: dict[str, np.ndarray]) -> list[dict]:
    """Fit the anchor's classifier on each split's training clips, score its test clips."""
    from ser_edge.training.anchors import ANCHORS, make_classifier

    kind = ANCHORS[anchor][1]
    records = []
    for split, (train_idx, test_idx) in enumerate(task.splits):
        train_idx = list(train_idx) + (list(task.always[split]) if task.always else [])
        X = np.stack([embeddings[clip_id(task.clips[i])] for i in train_idx])
        y = [task.labels.index(task.clips[i].label) for i in train_idx]
        clf = make_classifier(kind).fit(X, y)
        Xt = np.stack([embeddings[clip_id(task.clips[i])] for i in test_idx])
        pred = clf.predict(Xt)
        probs = np.eye(len(task.labels))[pred]  # the SVM gives no probabilities: one-hot decisions
        record = _run_record(task, test_idx, probs)
        del record["probabilities"]  # one-hot decisions: the predictions say it all
        record.update(system=anchor, seed=0, split=split)
        records.append(record)
    return records


def run_jobs(jobs: Sequence[tuple[str, int, int, str]], tasks: dict[str, Task], runs: Path, workers: int,
             device: str, log: Callable[[str], None] = print, overrides: Optional[dict] = None) -> None:
    """ser-edge jobs (task, split, seed, recipe) in `workers` processes of one thread each;
    each result is written to `runs` as soon as it is done, and jobs already there are skipped.
    `overrides` changes training options of every recipe (quick checks only)."""
    todo = [j for j in jobs if not _run_path(runs, "ser-edge", *j).exists()]
    log(f"{len(jobs) - len(todo)} of {len(jobs)} ser-edge runs already done; {len(todo)} to run "
        f"in {workers} process(es) on {device}")
    if not todo:
        return
    start = time.time()

    def save(job, record):
        record["split"] = job[1]
        _write_atomic(_run_path(runs, "ser-edge", *job), record)

    if workers <= 1:
        _init_worker(tasks, device, 1, overrides)
        for n, job in enumerate(todo, 1):
            save(job, run_ser_edge(*job))
            log(f"[{n}/{len(todo)}] {job[0]} split {job[1] + 1} seed {job[2]} ({(time.time() - start) / 60:.1f} min)")
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_init_worker,
                             initargs=(tasks, device, 1, overrides)) as pool:
        futures = {pool.submit(run_ser_edge, *job): job for job in todo}
        for n, future in enumerate(as_completed(futures), 1):
            job = futures[future]
            save(job, future.result())
            log(f"[{n}/{len(todo)}] {job[0]} split {job[1] + 1} seed {job[2]} ({(time.time() - start) / 60:.1f} min)")


def _run_path(runs: Path, system: str, task: str, split: int, seed: int, recipe: str = "") -> Path:
    tag = f"-{recipe}" if recipe else ""
    return runs / system / f"{task}{tag}-s{seed}-f{split + 1}.json"


def _write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


# ---------------------------------------------------------------------------- results


def collect(runs: Path, tasks: Sequence[Task]) -> dict:
    """{task: {system: {seed: merged record}}} from the run files, checked against the
    tasks' test clips (every system is scored on the same clips)."""
    out: dict = {}
    for task in tasks:
        expected = task.test_set()
        for system_dir in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
            by_seed: dict = {}
            for path in sorted(system_dir.glob(f"{task.name}-*s*-f*.json")):
                rec = json.loads(path.read_text())
                if rec["task"] != task.name:
                    continue
                name = rec["system"] if rec["system"] != "ser-edge" else f"ser-edge ({rec.get('recipe', '?')})"
                by_seed.setdefault(name, {}).setdefault(rec["seed"], []).append(rec)
            for name, seeds in by_seed.items():
                for seed, recs in seeds.items():
                    if len(recs) != len(task.splits):
                        continue  # unfinished: left out of the page
                    recs.sort(key=lambda r: r["split"])
                    merged = {k: [v for r in recs for v in r[k]] for k in ("test", "true", "pred")}
                    if merged["test"] != expected:
                        raise ValueError(f"{path.parent}: the runs of {name} on {task.name} were scored on other "
                                         "clips than this comparison's folds; remove them or use the same corpora")
                    if "noise" in recs[0]:
                        merged["noise"] = {k: [v for r in recs for v in r["noise"][k]] for k in recs[0]["noise"]}
                    if all("probabilities" in r for r in recs):
                        merged["probabilities"] = [v for r in recs for v in r["probabilities"]]
                    if all("noise_probabilities" in r for r in recs):
                        merged["noise_probabilities"] = {k: [v for r in recs for v in r["noise_probabilities"][k]]
                                                         for k in recs[0]["noise_probabilities"]}
                    out.setdefault(task.name, {}).setdefault(name, {})[seed] = merged
        for name, seeds in list(out.get(task.name, {}).items()):
            ensemble = _ensemble(seeds)
            if ensemble is not None:
                out[task.name][f"{name[:-1]} ×{len(seeds)})"] = {0: ensemble}
    return out


def _ensemble(seeds: dict) -> Optional[dict]:
    """The seeds' models as one ensemble (their probabilities averaged), where 2+ seeds give
    probabilities on every split; None otherwise. Noisy test clips are averaged the same way
    where every seed kept their probabilities (older runs kept labels only)."""
    if len(seeds) < 2 or not all("probabilities" in m for m in seeds.values()):
        return None
    first = next(iter(seeds.values()))
    mean = np.mean([np.asarray(m["probabilities"]) for m in seeds.values()], axis=0)
    out = {"test": first["test"], "true": first["true"], "pred": mean.argmax(1).tolist(),
           "probabilities": mean.tolist()}
    if all("noise_probabilities" in m for m in seeds.values()):
        noisy = {k: np.mean([np.asarray(m["noise_probabilities"][k]) for m in seeds.values()], axis=0)
                 for k in first["noise_probabilities"]}
        out["noise"] = {k: p.argmax(1).tolist() for k, p in noisy.items()}
    return out


def _scores(task: Task, merged: dict) -> dict:
    r = report(merged["true"], merged["pred"], task.labels)
    corpora = [corpus_of(t) for t in merged["test"]]
    if len(set(corpora)) > 1:
        which = np.array(corpora)
        true, pred = np.array(merged["true"]), np.array(merged["pred"])
        r["by_corpus"] = {c: report(true[which == c], pred[which == c], task.labels)["uar"] for c in sorted(set(corpora))}
        r["noise_by_corpus"] = {
            k: {c: report(true[which == c], np.asarray(p)[which == c], task.labels)["uar"] for c in sorted(set(corpora))}
            for k, p in merged.get("noise", {}).items()}
    r["noise"] = {k: report(merged["true"], p, task.labels)["uar"] for k, p in merged.get("noise", {}).items()}
    return r


def _cell(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{100 * values[0]:.1f}"
    return f"{100 * statistics.fmean(values):.1f} ± {100 * statistics.stdev(values):.1f}"


def summarise(tasks: Sequence[Task], results: dict) -> dict:
    """{task: {system: {"uar": [per seed], "wa": [...], "macro_f1": [...], "by_corpus": {c: [...]}, "noise": {k: [...]}}}}"""
    out: dict = {}
    for task in tasks:
        for system, seeds in results.get(task.name, {}).items():
            entry: dict = {"uar": [], "wa": [], "macro_f1": [], "by_corpus": {}, "noise": {}, "noise_by_corpus": {},
                           "seeds": []}
            for seed in sorted(seeds):
                s = _scores(task, seeds[seed])
                entry["seeds"].append(seed)
                for k in ("uar", "wa", "macro_f1"):
                    entry[k].append(s[k])
                for c, v in s.get("by_corpus", {}).items():
                    entry["by_corpus"].setdefault(c, []).append(v)
                for c, v in s["noise"].items():
                    entry["noise"].setdefault(c, []).append(v)
                for k, by in s.get("noise_by_corpus", {}).items():
                    for c, v in by.items():
                        entry["noise_by_corpus"].setdefault(k, {}).setdefault(c, []).append(v)
            out.setdefault(task.name, {})[system] = entry
    return out


def write_page(tasks: Sequence[Task], summary: dict, costs: dict, out: Path, meta: dict) -> str:
    """OUT/COMPARISON.md: a table per protocol, every system on the same test clips, and
    OUT/comparison.png: mean UAR over the protocols against cost and size."""
    lines = ["# ser-edge beside the anchors, on three corpora", "",
             "UAR (mean per-class recall) in %, speaker-independent and utterance level; ser-edge is",
             "the mean ± sd over its training seeds, the anchors are deterministic. Every system is",
             "scored on the same test clips; test speakers never include the development speakers",
             "the recipe was chosen on (splits.DEVELOPMENT_SPEAKERS), who are in every training part.",
             f"Chance: 25.0 (4 classes), 14.3 (7), 12.5 (8). {meta.get('note', '')}", ""]
    systems = sorted({s for t in summary.values() for s in t}, key=lambda s: (not s.startswith("ser-edge"), s))
    for task in tasks:
        rows = summary.get(task.name)
        if not rows or task.kind == "adapt":
            continue
        n_test = len(task.test_set())
        folds = f"{len(task.splits)} speaker-grouped folds" if len(task.splits) > 1 else "one split"
        lines += [f"## {task.title}", "", f"{folds}; {n_test} test clips.", ""]
        corpora = sorted({c for e in rows.values() for c in e["by_corpus"]})
        noise = sorted({c for e in rows.values() for c in e["noise"]})
        head = ["system", "UAR", "WA", "macro-F1"] + [f"UAR {TITLES.get(c, c)}" for c in corpora] + \
            [f"UAR {k} {NOISE_SNR_DB:g} dB" for k in noise]
        lines += ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
        for system in systems:
            e = rows.get(system)
            if e is None:
                continue
            cells = [_cell(e["uar"]), _cell(e["wa"]), _cell(e["macro_f1"])]
            cells += [_cell(e["by_corpus"][c]) if c in e["by_corpus"] else "-" for c in corpora]
            cells += [_cell(e["noise"][k]) if k in e["noise"] else "-" for k in noise]
            lines.append(f"| {system} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += adaptation_section([t for t in tasks if t.kind == "adapt"], summary, systems)
    overview = overview_rows([t for t in tasks if t.kind != "adapt"], summary)
    lines += ["## Overview", "", "Mean UAR over the protocols every system ran, with cost: feature (and encoder) "
              "CPU seconds per second of audio on one core, and size of what must be shipped (the model; for "
              "an anchor its encoder's model file and a 4-class linear classifier; libraries not counted).", "",
              "| system | protocols | mean UAR | s per s of audio | size MB |", "|---|---:|---:|---:|---:|"]
    for system, (n, mean, complete) in overview.items():
        c = costs.get(_cost_key(system), {})
        lines.append(f"| {system} | {n}{'' if complete else ' (not all: not comparable)'} | {100 * mean:.1f} | "
                     f"{c.get('seconds_per_second', float('nan')):.4f} | {c.get('size_mb', float('nan')):.3g} |")
    lines += ["", "![UAR against cost and size](comparison.png)", ""]
    text = "\n".join(lines)
    (out / "COMPARISON.md").write_text(text)
    _plot(overview, costs, out / "comparison.png")
    return text


def adaptation_section(tasks: Sequence[Task], summary: dict, systems: Sequence[str]) -> list[str]:
    """A table per system: UAR by direction (rows) and amount of target data (columns),
    mean ± sd over the draws of the added clips."""
    if not tasks:
        return []
    directions: dict[str, dict[str, list[Task]]] = {}
    for t in tasks:
        base, _, rest = t.name.rpartition("-")
        if rest.startswith("d") and rest[1:].isdigit():
            base, _, setting = base.rpartition("-")
        else:
            setting = rest
        directions.setdefault(base, {}).setdefault(setting, []).append(t)
    settings = ["0pct"] + [f"{round(100 * f)}pct" for f in ADAPT_FRACTIONS] + [f"{k}shot" for k in ADAPT_SHOTS]
    head = [s.replace("pct", " %").replace("shot", "-shot") for s in settings]
    lines = ["## Adaptation with target clips (4 classes)", "",
             "Source corpus plus a class-stratified share of the target (10 / 20 / 30 % of it) or K clips per",
             "class, from target speakers outside its test half; every cell of a row is tested on the same",
             "test half (non-development speakers, chosen for a balanced class mix). Added clips are always",
             "trained on; early stopping validates on source speakers only. Cells: UAR in %, mean ± sd over",
             f"{max(len(v) for d in directions.values() for v in d.values())} draws of the added clips "
             "(ser-edge: one training per draw).", ""]
    for base, by_setting in directions.items():
        test = by_setting["0pct"][0]
        counts = {lab: sum(1 for _, te in test.splits for i in te if test.clips[i].label == lab) for lab in test.labels}
        lines.append(f"- {test.title.split(',')[0]}: test half {', '.join(f'{k} {v}' for k, v in counts.items())}.")
    lines.append("")
    for system in systems:
        if not any(system in summary.get(t.name, {}) for t in tasks):
            continue
        lines += [f"**{system}**", "", "| direction | " + " | ".join(head) + " |", "|---|" + "---:|" * len(head)]
        for base, by_setting in directions.items():
            cells = []
            for setting in settings:
                values = [summary[t.name][system]["uar"][0] for t in by_setting.get(setting, [])
                          if system in summary.get(t.name, {})]
                cells.append(_cell(values) if values else "-")
            lines.append(f"| {by_setting['0pct'][0].title.split(',')[0]} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def overview_rows(tasks: Sequence[Task], summary: dict) -> dict[str, tuple[int, float, bool]]:
    """system -> (number of protocols, mean UAR over them with seeds averaged, complete):
    a complete system ran every protocol; the others' means cover fewer protocols and are
    not comparable (the figure leaves them out)."""
    out = {}
    names = [t.name for t in tasks if t.name in summary]
    systems = {s for t in names for s in summary[t]}
    for system in sorted(systems, key=lambda s: (not s.startswith("ser-edge"), s)):
        uars = [statistics.fmean(summary[t][system]["uar"]) for t in names if system in summary[t]]
        out[system] = (len(uars), statistics.fmean(uars), len(uars) == len(names))
    return out


def _shape_key(recipe_name: str, members: int) -> str:
    """The costs.json entry of ser-edge models of a recipe, `members` of them averaged: keyed by what
    sets their size and cost (values per frame times 1 + the delta orders, LSTM and dense sizes,
    frame pooling, window statistics), so recipes of one shape share it."""
    from ser_edge.training.recipes import get_recipe

    m = get_recipe(recipe_name).model_config(len(SHARED))
    shape = (f"{m.input_dim}x{1 + m.deltas} in, {m.hidden1}/{m.hidden2}/{m.dense}, pool {m.subsample}"
             + (", stats" if m.stats else ""))
    return f"ser-edge{f' ×{members}' if members > 1 else ''} [{shape}]"


def _cost_key(system: str) -> str:
    """The costs.json entry of a system: an anchor's name, or for "ser-edge (NAME[ ×N])" its
    shape and ensemble size (`_shape_key`)."""
    if not system.startswith("ser-edge"):
        return system
    name, _, members = system[len("ser-edge ("):-1].partition(" ×")
    try:
        return _shape_key(name, int(members or 1))
    except ValueError:  # a recipe this version does not know
        return system


def _plot(overview: dict, costs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, label in ((axes[0], "seconds_per_second", "seconds per second of audio (one core, log)"),
                           (axes[1], "size_mb", "size of model + encoder, MB (log)")):
        for system, (_, mean, complete) in overview.items():
            c = costs.get(_cost_key(system))
            if not complete or not c or not c.get(key):
                continue
            ax.scatter(c[key], 100 * mean, s=40)
            ax.annotate(system, (c[key], 100 * mean), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel("mean UAR over protocols, %")
        ax.grid(alpha=0.3)
    fig.suptitle("mean speaker-independent UAR over every protocol against cost (systems that ran them all)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---------------------------------------------------------------------------- costs


def ser_edge_cost(recipe_name: str, clips: Sequence[Clip], members: int = 1) -> dict:
    """Seconds per second of audio on one core for the C++ features plus an int8 model of the
    recipe's shape (`members` models averaged in one graph) over 2 s windows every 0.5 s and
    one pass over the whole clip (the shipped path: the windows for live displays, the pass
    deciding the clip as one speech segment), and the int8 model's size. The model is exported
    untrained: its size and the work per window depend on its shape, not on its weights."""
    import tempfile

    import torch

    from ser_edge.audio import load
    from ser_edge.features import extract
    from ser_edge.model import OnnxModel
    from ser_edge.training.export import export_onnx, quantise_int8
    from ser_edge.training.model import BiLstmAttention, Ensemble
    from ser_edge.training.recipes import get_recipe

    recipe = get_recipe(recipe_name)
    config = recipe.features
    torch.manual_seed(0)
    models = [BiLstmAttention(recipe.model_config(len(SHARED))) for _ in range(members)]
    with tempfile.TemporaryDirectory() as folder:
        fp32 = export_onnx(models[0] if members == 1 else Ensemble(models), config, SHARED, Path(folder) / "m.onnx")
        model_path = quantise_int8(fp32, Path(folder) / "m.int8.onnx")
        model = OnnxModel(model_path, threads=1)
        size = model_path.stat().st_size / 1e6
    audio = [load(c.path, 16000) for c in clips]
    seconds = sum(len(a) for a in audio) / 16000
    start = time.process_time()
    for a in audio:
        feats = extract(a, config)
        for s in range(0, max(1, len(feats) - 200 + 1), 50):
            model.score(feats[s : s + 200])
        model.score(feats)
    return {"seconds_per_second": (time.process_time() - start) / seconds, "size_mb": size}


# ---------------------------------------------------------------------------- command


def read_corpora(paths: dict[str, Optional[Path]], recipe_name: str, log: Callable[[str], None] = print
                 ) -> dict[str, list[Clip]]:
    """The corpora given, without the clips the feature front end cannot use (unreadable or
    too short): they are left out for every system, and named."""
    from ser_edge.training.data import FeatureCache, load_examples
    from ser_edge.training.recipes import get_recipe

    cache = FeatureCache(get_recipe(recipe_name).features)
    corpora = {}
    for name, path in paths.items():
        if path is None:
            continue
        clips = READERS[name](path)
        labels = sorted({c.label for c in clips})
        examples, skipped = load_examples(clips, labels, cache, progress=True)
        for p, reason in skipped:
            log(f"left out: {reason}")
        kept = {e.path for e in examples}
        corpora[name] = [c for c in clips if c.path in kept]
    return corpora


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in READERS:
        parser.add_argument(f"--{name}", type=Path, help=f"the {TITLES[name]} folder")
    parser.add_argument("--out", type=Path, default=Path("results/comparison"))
    parser.add_argument("--recipe", default="default", help="ser-edge training recipe")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--folds", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=1, help="training processes (one thread each)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--systems", nargs="*", default=None,
                        help="ser-edge and/or anchor names (default: ser-edge and every anchor whose "
                             "requirements are met)")
    parser.add_argument("--whisper", type=Path, default=None, help="Whisper-base folder (CTranslate2 format)")
    parser.add_argument("--draws", type=int, default=3,
                        help="draws of the added target clips per adaptation setting (0: no adaptation protocol)")
    parser.add_argument("--table-only", action="store_true", help="run nothing; write the page from OUT/runs")
    parser.add_argument("--tasks", nargs="*", default=None, metavar="TASK",
                        help="run only these protocols (names as in OUT/folds.json, e.g. joint loco-urdu "
                             "zeroshot-emodb-to-urdu), in the order given; the page still shows every protocol")
    parser.add_argument("--max-epochs", type=int, default=None, help=argparse.SUPPRESS)  # quick checks only
    args = parser.parse_args(argv)
    paths = {n: getattr(args, n) for n in READERS}
    if not any(paths.values()):
        parser.error("give at least one corpus (--urdu, --emodb, --ravdess)")
    start = time.time()
    corpora = read_corpora(paths, args.recipe)
    tasks = comparison_tasks(corpora, args.folds)
    if args.draws > 0 and len(corpora) >= 2:
        tasks += adaptation_tasks(corpora, args.draws)
    by_name = {t.name: t for t in tasks}
    runs = args.out / "runs"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "folds.json").write_text(json.dumps(
        {t.name: [[clip_id(t.clips[i]) for i in test] for _, test in t.splits] for t in tasks}, indent=0))
    costs_path = args.out / "costs.json"
    costs = json.loads(costs_path.read_text()) if costs_path.exists() else {}
    if not args.table_only:
        systems = args.systems
        if systems is None:
            from ser_edge.training.anchors import ANCHORS

            systems = ["ser-edge"] + [a for a in ANCHORS if "whisper" not in a or args.whisper]
        chosen = tasks
        if args.tasks is not None:
            unknown = [n for n in args.tasks if n not in by_name]
            if unknown:
                parser.error(f"unknown tasks {unknown}; choose from {', '.join(by_name)}")
            chosen = [by_name[n] for n in args.tasks]
        if "ser-edge" in systems:
            # Adaptation cells vary by draw (each draw trains with its own data): one seed there.
            jobs = [(t.name, s, seed, args.recipe) for t in chosen for seed in (args.seeds[:1] if t.kind == "adapt"
                                                                                 else args.seeds)
                    for s in range(len(t.splits))]
            if args.tasks is None:
                jobs.sort(key=lambda j: -len(by_name[j[0]].splits[j[1]][0]))  # longest first
            run_jobs(jobs, by_name, runs, args.jobs, args.device,
                     overrides={"max_epochs": args.max_epochs} if args.max_epochs else None)
            sample = [c for clips in corpora.values() for c in clips[:: max(1, len(clips) // 20)]]
            for members in sorted({1, len(args.seeds)}):  # one model, and the seeds' models averaged
                key = _shape_key(args.recipe, members)
                if key not in costs:
                    costs[key] = ser_edge_cost(args.recipe, sample, members)
        for anchor in [s for s in systems if s != "ser-edge"]:
            run_anchor_system(anchor, chosen, corpora, runs, costs, args.whisper)
        costs_path.write_text(json.dumps(costs, indent=2))
    summary = summarise(tasks, collect(runs, tasks))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    note = f"Corpora: {', '.join(f'{TITLES[c]} {len(v)} clips' for c, v in corpora.items())}."
    note += "".join(f" ser-edge ({name}) is the `default` recipe." for name in _ser_edge_recipes(summary)
                    if name != "default" and _same_recipe(name, "default"))
    print(write_page(tasks, summary, costs, args.out, {"note": note}))
    print(f"took {(time.time() - start) / 60:.1f} min", file=sys.stderr)
    return 0


def _ser_edge_recipes(summary: dict) -> list[str]:
    names = {s for t in summary.values() for s in t if s.startswith("ser-edge (")}
    return sorted(n[len("ser-edge ("):-1] for n in names)


def _same_recipe(a: str, b: str) -> bool:
    from ser_edge.training.recipes import get_recipe

    try:
        ra, rb = get_recipe(a), get_recipe(b)
    except ValueError:
        return False
    return (ra.model_config(4), ra.train, ra.features.to_json(), ra.augment) == \
        (rb.model_config(4), rb.train, rb.features.to_json(), rb.augment)


def run_anchor_system(anchor: str, tasks: Sequence[Task], corpora: dict[str, list[Clip]], runs: Path,
                      costs: dict, whisper: Optional[Path]) -> None:
    """Embed every clip once (cached by content), then every task's splits; costs measured
    on a sample of clips."""
    from ser_edge.audio import load
    from ser_edge.training.anchors import ANCHORS, cost_per_second, embed_clips

    factory = ANCHORS[anchor][0]
    embedder = factory(whisper) if "whisper" in anchor else factory()
    if all(all(_run_path(runs, anchor, t.name, s, 0).exists() for s in range(len(t.splits))) for t in tasks) \
            and anchor in costs:
        return
    clips = [c for cs in corpora.values() for c in cs]
    X, skipped = embed_clips(embedder, [c.path for c in clips], progress=True)[:2]
    bad = {str(p) for p, _ in skipped}
    kept = [c for c in clips if str(c.path) not in bad]
    if len(kept) != len(X):
        raise RuntimeError("embeddings are not aligned with the clips")
    embeddings = {clip_id(c): x for c, x in zip(kept, X)}
    if bad:
        raise RuntimeError(f"{anchor}: {len(bad)} clip(s) could not be embedded, e.g. {sorted(bad)[:3]}")
    for task in tasks:
        for record in run_anchor(task, anchor, embeddings):
            _write_atomic(_run_path(runs, anchor, task.name, record["split"], 0), record)
    sample = [load(c.path, 16000) for cs in corpora.values() for c in cs[:: max(1, len(cs) // 20)]]
    seconds = cost_per_second(embedder, sample)
    costs[anchor] = {"seconds_per_second": seconds,
                     "size_mb": anchor_size_mb(getattr(embedder, "model_bytes", 0), X.shape[1])}


def anchor_size_mb(model_bytes: int, dim: int, classes: int = 4) -> float:
    """What an anchor ships: its encoder's model file plus a linear classifier on `dim`
    values for `classes` classes with its standardisation (float64); the feature
    libraries themselves are not counted (nor is ser-edge's C++ core)."""
    return (model_bytes + 8 * (dim * classes + classes + 2 * dim)) / 1e6


if __name__ == "__main__":
    raise SystemExit(main())
