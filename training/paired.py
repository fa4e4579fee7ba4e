"""Two systems on the same test clips: the UAR difference and how far other speakers could move it.

    python -m ser_edge.training.paired --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --ravdess ../shared/data/ravdess --runs results/comparison/runs \\
        --a "ser-edge (adv-speaker ×3)" --b "ser-edge (multicond ×3)" [--tasks joint loco-urdu ...]

    python -m ser_edge.training.paired --cards candidate/card_scores.json ser_edge/models/card_scores.json

compares two bundled-model cards (training/bundle.py) on their held-out clips instead: the
labels each card's fold models gave through the shipped path (int8; `--column` for another),
one item per corpus, the mean over the corpora as the card's mean.

The spread over training seeds says how much a recipe moves with its seed; it says nothing
of how much a difference between two recipes would move with other test speakers, which on
these corpora (10 to 29 speakers each) is the larger uncertainty. This resamples the test
speakers: each draw takes, from each corpus, as many of its test speakers as it has, with
replacement (a speaker drawn twice counts twice in every protocol that tests it; one draw
serves every protocol, so protocols sharing speakers move together), and scores both
systems on the same draw. It prints, per protocol and for the mean over the
protocols, the difference A - B in UAR points with a 95 % interval over the draws and the
share of draws in which A is ahead. A system with several seeds (one model per seed) is
scored as the mean of its seeds' UARs; "name ×N" is the seeds' ensemble (see comparison.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["Paired", "bootstrap", "card_items", "main", "paired_item", "paired_items", "weighted_uar"]


@dataclass
class Paired:
    """One protocol's test clips as both systems labelled them (one row per seed)."""

    task: str
    speakers: list[str]          # per test clip
    true: np.ndarray             # [clips]
    pred_a: np.ndarray           # [seeds of A, clips]
    pred_b: np.ndarray           # [seeds of B, clips]
    weight: float = 1.0          # its share in the mean over the items (normalised over them)


def weighted_uar(true: np.ndarray, pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """UAR of `pred` [seeds, clips] for each row of clip `weights` [draws, clips], averaged
    over the seeds: [draws]. A class with no weight in a draw is left out of that draw's UAR
    (its recall is undefined), as `metrics.report` leaves out classes absent from the test."""
    classes = np.unique(true)
    recalls = np.zeros((len(weights), len(pred), len(classes)))
    for k, c in enumerate(classes):
        mask = true == c
        w = weights[:, mask]                                        # [draws, clips of c]
        hits = (pred[:, mask] == c).astype(np.float64)              # [seeds, clips of c]
        support = w.sum(1, keepdims=True)                           # [draws, 1]
        with np.errstate(invalid="ignore", divide="ignore"):
            recalls[:, :, k] = (w @ hits.T) / support               # nan where the class has no weight
    present = (~np.isnan(recalls)).sum(2)
    with np.errstate(invalid="ignore", divide="ignore"):  # nan where a draw holds none of the clips
        uar = np.where(present > 0, np.nansum(recalls, axis=2) / present, np.nan)
    return uar.mean(1)


def bootstrap(items: Sequence[Paired], draws: int = 2000, seed: int = 0) -> dict:
    """{"tasks": {task: {"a", "b", "delta", "low", "high", "ahead"}}, "mean": {...}}: UARs on
    the test clips as they are, the difference A - B, its 2.5 and 97.5 percentiles over
    speaker draws, and the share of draws with A ahead (UARs as fractions)."""
    if len({item.task for item in items}) != len(items):
        raise ValueError("two items share a name: name each protocol, noise and corpus part apart")
    speakers = sorted({s for item in items for s in item.speakers})
    index = {s: i for i, s in enumerate(speakers)}
    rng = np.random.default_rng(seed)
    counts = np.zeros((draws, len(speakers)))
    for corpus in sorted({s.split(":")[0] for s in speakers}):  # each corpus keeps its number of speakers
        members = [index[s] for s in speakers if s.split(":")[0] == corpus]
        counts[:, members] = rng.multinomial(len(members), np.full(len(members), 1 / len(members)), size=draws)
    out: dict = {"tasks": {}, "speakers": len(speakers), "draws": draws}
    deltas = []
    for item in items:
        clips = np.array([index[s] for s in item.speakers])
        ones = np.ones((1, len(clips)))
        a, b = weighted_uar(item.true, item.pred_a, ones)[0], weighted_uar(item.true, item.pred_b, ones)[0]
        w = counts[:, clips]
        d = weighted_uar(item.true, item.pred_a, w) - weighted_uar(item.true, item.pred_b, w)
        deltas.append(d)
        out["tasks"][item.task] = _summary(a, b, d)
    if items:
        weights = np.array([item.weight for item in items], dtype=np.float64)
        a = float(np.average([t["a"] for t in out["tasks"].values()], weights=weights))
        b = float(np.average([t["b"] for t in out["tasks"].values()], weights=weights))
        stacked, w = np.stack(deltas), weights[:, None]
        tested = np.where(np.isnan(stacked), 0.0, w)  # a protocol with no speaker in a draw drops out of it
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(tested.sum(0) > 0, np.nansum(stacked * w, axis=0) / tested.sum(0), np.nan)
        out["mean"] = _summary(a, b, mean)
    return out


def _summary(a: float, b: float, d: np.ndarray) -> dict:
    d = d[~np.isnan(d)]  # a draw without any test speaker of this protocol says nothing of it
    return {"a": float(a), "b": float(b), "delta": float(a - b), "low": float(np.percentile(d, 2.5)),
            "high": float(np.percentile(d, 97.5)), "ahead": float(np.mean(d > 0))}


def paired_items(results: dict, groups: dict[str, str], a: str, b: str,
                 tasks: Optional[Sequence[str]] = None) -> list[Paired]:
    """The protocols (in `tasks` order, default: every one) where both systems have runs, from
    `comparison.collect`'s {task: {system: {seed: merged record}}}; `groups` maps clip ids to
    speakers."""
    items = []
    for task in tasks if tasks is not None else list(results):
        item = paired_item(results, groups, task, a, b)
        if item is not None:
            items.append(item)
    return items


def paired_item(results: dict, groups: dict[str, str], task: str, a: str, b: str, noise: Optional[str] = None,
                corpus: Optional[str] = None, weight: float = 1.0, name: Optional[str] = None) -> Optional[Paired]:
    """One protocol's `Paired` (its clips in `noise` where given, only `corpus`'s clips where
    given), or None where either system lacks runs (or noisy labels) there."""
    systems = results.get(task, {})
    if a not in systems or b not in systems:
        return None
    merged = [list(systems[a].values()), list(systems[b].values())]
    if noise is not None and not all("noise" in m and noise in m["noise"] for side in merged for m in side):
        return None
    from ser_edge.training.comparison import corpus_of

    first = merged[0][0]
    keep = np.array([corpus is None or corpus_of(t) == corpus for t in first["test"]])
    preds = [np.stack([np.asarray(m["pred"] if noise is None else m["noise"][noise])[keep] for m in side])
             for side in merged]
    return Paired(name or task, [groups[t] for t, k in zip(first["test"], keep) if k],
                  np.asarray(first["true"])[keep], preds[0], preds[1], weight)


def card_items(a: dict, b: dict, column: str = "int8") -> list[Paired]:
    """One `Paired` per corpus from two bundle cards' per-clip rows (card_scores.json: "clips"
    with clip, corpus, speaker, true and the label of each scoring), on the clips both scored;
    raises ValueError when they were not scored on the same clips."""
    rows = [{r["clip"]: r for r in card["clips"]} for card in (a, b)]
    if set(rows[0]) != set(rows[1]):
        raise ValueError(f"the cards hold different clips ({len(rows[0])} and {len(rows[1])}, "
                         f"{len(set(rows[0]) ^ set(rows[1]))} in one only): build both on the same corpora and folds")
    if any(column not in r for side in rows for r in side.values()):
        known = sorted(k for k in set.intersection(*(set(r) for side in rows for r in side.values()))
                       - {"clip", "corpus", "speaker", "true"}
                       if all(isinstance(r[k], (str, type(None))) for side in rows for r in side.values()))
        raise ValueError(f"a card has no {column!r} labels; choose one of {', '.join(known)}")
    items = []
    for corpus in sorted({r["corpus"] for r in rows[0].values()}):
        clips = sorted(c for c, r in rows[0].items() if r["corpus"] == corpus)
        labels = sorted({rows[0][c]["true"] for c in clips})
        code = {label: i for i, label in enumerate(labels)}
        pred = [np.array([[code.get(side[c][column], -1) for c in clips]]) for side in rows]  # None (no speech): -1
        items.append(Paired(corpus, [f"{corpus}:{rows[0][c]['speaker']}" for c in clips],
                            np.array([code[rows[0][c]["true"]] for c in clips]), pred[0], pred[1]))
    return items


def format_table(result: dict, a: str, b: str) -> str:
    lines = [f"A = {a}, B = {b}; UAR %, Δ = A - B with a 95 % interval over {result['draws']} draws of the "
             f"{result['speakers']} test speakers", "",
             "| protocol | A | B | Δ | 95 % interval | draws with A ahead |", "|---|---:|---:|---:|---|---:|"]
    rows = list(result["tasks"].items()) + ([(f"mean of {len(result['tasks'])}", result["mean"])]
                                            if "mean" in result else [])
    for name, r in rows:
        lines.append(f"| {name} | {100 * r['a']:.1f} | {100 * r['b']:.1f} | {100 * r['delta']:+.1f} | "
                     f"{100 * r['low']:+.1f} to {100 * r['high']:+.1f} | {100 * r['ahead']:.0f} % |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ser_edge.training.comparison import READERS, TITLES, clip_id, collect, comparison_tasks

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in READERS:
        parser.add_argument(f"--{name}", type=Path, help=f"the {TITLES[name]} folder")
    parser.add_argument("--runs", type=Path, default=Path("results/comparison/runs"),
                        help="the comparison's run folder")
    parser.add_argument("--a", help='a system as the comparison page names it, e.g. '
                        '"ser-edge (adv-speaker ×3)", "ser-edge (multicond)", "whisper-logreg"')
    parser.add_argument("--b", help="the system A is measured against")
    parser.add_argument("--cards", nargs=2, type=Path, metavar=("A", "B"), default=None,
                        help="instead: two bundle cards' card_scores.json (A, then B), held-out clips per corpus")
    parser.add_argument("--column", default="int8", help="with --cards: the labels compared (int8, fp32, "
                        "torch_whole_clip)")
    parser.add_argument("--tasks", nargs="*", default=None, metavar="TASK",
                        help="protocols to compare (default: every published one where both have runs)")
    parser.add_argument("--draws", type=int, default=2000, help="speaker draws")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.draws < 100:
        parser.error("--draws must be at least 100")
    if args.cards is not None:
        return _cards(args)
    if not args.a or not args.b:
        parser.error("give the two systems (--a and --b), or two cards (--cards A B)")
    paths = {n: getattr(args, n) for n in READERS}
    if not any(paths.values()):
        parser.error("give the corpora the runs were made on (--urdu, --emodb, --ravdess)")
    missing = [str(p) for p in paths.values() if p is not None and not p.is_dir()]
    if missing:
        parser.error(f"no such corpus folder: {', '.join(missing)}")
    if not args.runs.is_dir():
        parser.error(f"no run folder {args.runs}: run `python -m ser_edge.training.comparison` first")
    corpora = {n: READERS[n](p) for n, p in paths.items() if p is not None}
    tasks = comparison_tasks(corpora)
    names = [t.name for t in tasks]
    if args.tasks is not None:
        unknown = [t for t in args.tasks if t not in names]
        if unknown:
            parser.error(f"unknown protocols {unknown}; choose from {', '.join(names)}")
    groups = {clip_id(c): c.group for clips in corpora.values() for c in clips}
    try:
        results = collect(args.runs, tasks)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    items = paired_items(results, groups, args.a, args.b, args.tasks)
    if not items:
        known = sorted({s for systems in results.values() for s in systems})
        print(f"error: no protocol has runs of both {args.a!r} and {args.b!r}; systems with runs: "
              f"{', '.join(known) or 'none'}", file=sys.stderr)
        return 2
    result = bootstrap(items, args.draws)
    print(format_table(result, args.a, args.b))
    if args.json is not None:
        args.json.write_text(json.dumps({"a": args.a, "b": args.b, **result}, indent=1))
    return 0


def _cards(args) -> int:
    names = [args.a or str(args.cards[0]), args.b or str(args.cards[1])]
    try:
        cards = [json.loads(Path(p).read_text()) for p in args.cards]
        items = card_items(*cards, column=args.column)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: cannot compare the cards {args.cards[0]} and {args.cards[1]}: {error}", file=sys.stderr)
        return 2
    result = bootstrap(items, args.draws)
    print(format_table(result, *names))
    if args.json is not None:
        args.json.write_text(json.dumps({"a": names[0], "b": names[1], "column": args.column, **result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
