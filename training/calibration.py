"""Calibration of the bundled model: one temperature, fitted on held-out speakers.

    python -m ser_edge.training.calibration --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --ravdess ../shared/data/ravdess

The bundle command leaves each cross-validation fold's int8 model in build/default-model/
and the fold of every held-out clip in ser_edge/models/card_scores.json. Each held-out
clip is scored by its fold's model through the shipped path (voice-activity gate, each
speech segment decided as its model asks: see `clip_parts`); a clip's probabilities are
the weighted mean of its parts' softmax(logits / T), exactly what `Recognizer` computes
once the temperature T is in the graph.

- Held-out estimate (cross-fitted): for each fold, T is fitted (negative log-likelihood)
  on the *other* folds' clips and applied to this fold's; expected calibration error (ECE,
  10 equal-width confidence bins, top label) and UAR before and after, and a reliability
  plot, go to results/calibration/.
- The shipped model: T fitted on every fold's held-out clips is written into the graph
  (`logits` = raw logits x 1/T; metadata `ser_edge.temperature`), so `score`, `listen` and
  `--min-confidence` read calibrated probabilities.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

__all__ = ["clip_parts", "ece", "fit_temperature", "fold_recognizers", "held_out_clips", "set_temperature",
           "tempered"]


def tempered(parts: np.ndarray, temperature: float, weights: Optional[np.ndarray] = None) -> np.ndarray:
    """Clip probabilities: the mean over a clip's parts [n, k] (its segments' or windows'
    probabilities) of softmax(log p / T), weighted by `weights` [n] (equal by default)."""
    z = np.log(np.clip(parts, 1e-12, 1.0)) / temperature
    z -= z.max(1, keepdims=True)
    p = np.exp(z)
    return np.average(p / p.sum(1, keepdims=True), axis=0, weights=weights)


def clip_parts(prediction, labels: Sequence[str], decision: str) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """What `Recognizer` averages into a recording's probabilities ([n, k] probabilities and
    [n] weights): its segments' decisions weighted by duration, or with decision="windows"
    its windows, equally, or with "blend" each segment's pass and its windows, half of the
    segment's weight each (so a temperature applied to every part's logits is what
    `Recognizer` computes); None when it found no speech."""
    if not prediction.events:
        return None
    if decision == "windows":
        parts = np.array([[w.probabilities[lab] for lab in labels] for w in prediction.windows])
        return parts, np.ones(len(parts))
    if decision == "blend":
        rows, weights = [], []
        for e in prediction.events:
            rows.append([e.pass_probabilities[lab] for lab in labels])
            weights.append(e.weight / 2 if e.windows else e.weight)
            rows += [[w.probabilities[lab] for lab in labels] for w in e.windows]
            weights += [e.weight / (2 * len(e.windows))] * len(e.windows)
        return np.array(rows), np.array(weights)
    return (np.array([[e.probabilities[lab] for lab in labels] for e in prediction.events]),
            np.array([e.weight for e in prediction.events]))


def fit_temperature(clips: Sequence[np.ndarray], labels: Sequence[int], low: float = 0.05,
                    high: float = 20.0, weights: Optional[Sequence[np.ndarray]] = None) -> float:
    """The T minimising the clips' negative log-likelihood (a grid over log T, then golden
    section around its best point); `weights`: each clip's parts' weights (see `tempered`)."""
    weights = list(weights) if weights is not None else [None] * len(clips)

    def nll(log_t: float) -> float:
        t = float(np.exp(log_t))
        return -float(np.mean([np.log(max(tempered(w, t, v)[y], 1e-12)) for w, v, y in zip(clips, weights, labels)]))

    grid = np.linspace(np.log(low), np.log(high), 41)
    values = [nll(g) for g in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(40):
        c, d = b - ratio * (b - a), a + ratio * (b - a)
        if nll(c) < nll(d):
            b = d
        else:
            a = c
    return float(np.exp((a + b) / 2))


def ece(probs: np.ndarray, labels: Sequence[int], bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error of the top label over equal-width confidence bins, and the bins."""
    probs = np.asarray(probs)
    labels = np.asarray(labels)
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    total, table = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence <= hi)
        if not inside.any():
            continue
        gap = abs(correct[inside].mean() - confidence[inside].mean())
        total += inside.mean() * gap
        table.append({"low": float(lo), "high": float(hi), "clips": int(inside.sum()),
                      "confidence": float(confidence[inside].mean()), "accuracy": float(correct[inside].mean())})
    return float(total), table


def set_temperature(path: Path, temperature: float, out: Optional[Path] = None) -> Path:
    """Write the model with its logits divided by `temperature` (replacing an earlier one)."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    raw = "logits_before_temperature"
    if not any(raw in n.output for n in graph.node):
        for node in graph.node:
            node.output[:] = [raw if o == "logits" else o for o in node.output]
            node.input[:] = [raw if i == "logits" else i for i in node.input]
        graph.node.append(helper.make_node("Mul", [raw, "temperature.inverse"], ["logits"], name="/temperature/Mul"))
    kept = [i for i in graph.initializer if i.name != "temperature.inverse"]
    del graph.initializer[:]
    graph.initializer.extend(kept + [numpy_helper.from_array(np.array(1.0 / temperature, np.float32),
                                                             "temperature.inverse")])
    from ser_edge.model import set_metadata

    meta = {p.key: p.value for p in model.metadata_props}
    meta["ser_edge.temperature"] = repr(float(temperature))
    set_metadata(model, meta)
    onnx.checker.check_model(model)
    out = Path(out or path)
    onnx.save(model, str(out))
    return out


def _uar(probs: np.ndarray, labels: Sequence[int], k: int) -> float:
    from ser_edge.training.metrics import report

    return report(labels, np.asarray(probs).argmax(1), [str(c) for c in range(k)])["uar"]


def _plot(before: list[dict], after: list[dict], path: Path, titles: tuple[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, table, title in zip(axes, (before, after), titles):
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
        centres = [(b["low"] + b["high"]) / 2 for b in table]
        ax.bar(centres, [b["accuracy"] for b in table], width=0.09, alpha=0.6, label="accuracy")
        ax.plot([b["confidence"] for b in table], [b["accuracy"] for b in table], "o-", color="C1",
                label="accuracy at mean confidence")
        for b, x in zip(table, centres):
            ax.annotate(str(b["clips"]), (x, 0.02), ha="center", fontsize=7)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence of the top label")
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("accuracy")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def held_out_clips(card_scores: Path, corpora: dict) -> tuple[list[dict], dict]:
    """The bundle's held-out rows (clip id, corpus, true label, fold, int8 label...) from its
    card_scores.json, and {clip id: Clip} of the corpora given; every row's clip must be there."""
    from ser_edge.training.comparison import clip_id

    rows = json.loads(Path(card_scores).read_text())["clips"]
    by_id = {clip_id(c): c for clips in corpora.values() for c in clips}
    missing = [r["clip"] for r in rows if r["clip"] not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} clips of {card_scores} are not in the corpora given (first: {missing[0]})")
    return rows, by_id


def fold_recognizers(work: Path, rows: Sequence[dict], vad=None):
    """(Recognizer of fold N's int8 model in `work`, the indices of the rows held out by it), fold by fold.
    `vad`: the voice-activity gate's VadConfig (default: the runtime's)."""
    from ser_edge.recognizer import Recognizer
    from ser_edge.stream import VadConfig

    for fold in sorted({r["fold"] for r in rows}):
        yield (Recognizer(Path(work) / f"fold{fold}.int8.onnx", threads=1, vad=vad or VadConfig()),
               [i for i, r in enumerate(rows) if r["fold"] == fold])


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ser_edge.model import DEFAULT_MODEL
    from ser_edge.training.comparison import READERS, read_corpora
    from ser_edge.training.corpora import SHARED_LABELS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in READERS:
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("build/default-model"))
    parser.add_argument("--out", type=Path, default=Path("results/calibration"))
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL.parent,
                        help="folder of default.int8.onnx, card_scores.json and MODEL_CARD.md (default: the "
                             "bundled model's)")
    args = parser.parse_args(argv)
    labels = list(SHARED_LABELS)  # the bundled model's classes, in its order
    corpora = read_corpora({n: getattr(args, n) for n in READERS}, "default", log=lambda s: None)
    try:
        rows, by_id = held_out_clips(args.models / "card_scores.json", corpora)
    except ValueError as err:
        parser.error(str(err))
    scored: list[Optional[tuple[np.ndarray, np.ndarray]]] = [None] * len(rows)
    for rec, held_out in fold_recognizers(args.work, rows):
        for i in held_out:
            scored[i] = clip_parts(rec.predict_file(by_id[rows[i]["clip"]].path), labels, rec.decision)
    keep = [i for i, s in enumerate(scored) if s is not None]  # clips without speech have no probabilities
    y = np.array([labels.index(rows[i]["true"]) for i in keep])
    folds = np.array([rows[i]["fold"] for i in keep])
    w = [scored[i][0] for i in keep]
    v = [scored[i][1] for i in keep]
    before = np.array([tempered(x, 1.0, u) for x, u in zip(w, v)])
    after = np.zeros_like(before)
    per_fold = {}
    for fold in sorted(set(folds)):
        others = np.flatnonzero(folds != fold)
        t = fit_temperature([w[j] for j in others], y[others], weights=[v[j] for j in others])
        per_fold[int(fold)] = t
        for j in np.flatnonzero(folds == fold):
            after[j] = tempered(w[j], t, v[j])
    shipped_t = fit_temperature(w, y, weights=v)
    ece_before, table_before = ece(before, y)
    ece_after, table_after = ece(after, y)
    by_corpus = {}
    for corpus in sorted({rows[i]["corpus"] for i in keep}):
        m = np.array([rows[i]["corpus"] == corpus for i in keep])
        by_corpus[corpus] = {"ece_before": ece(before[m], y[m])[0], "ece_after": ece(after[m], y[m])[0],
                             "uar_before": _uar(before[m], y[m], len(labels)),
                             "uar_after": _uar(after[m], y[m], len(labels))}
    result = {"clips": len(keep), "no_speech": len(rows) - len(keep), "temperature": shipped_t,
              "fold_temperatures": per_fold, "ece_before": ece_before, "ece_after": ece_after,
              "nll_before": -float(np.mean(np.log(np.clip(before[np.arange(len(y)), y], 1e-12, 1)))),
              "nll_after": -float(np.mean(np.log(np.clip(after[np.arange(len(y)), y], 1e-12, 1)))),
              "uar_before": _uar(before, y, len(labels)), "uar_after": _uar(after, y, len(labels)),
              "by_corpus": by_corpus, "bins_before": table_before, "bins_after": table_after}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration.json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(table_before, table_after, args.out / "reliability.png",
          (f"as trained: ECE {100 * ece_before:.1f} %", f"temperature (cross-fitted): ECE {100 * ece_after:.1f} %"))
    set_temperature(args.models / "default.int8.onnx", shipped_t)
    text = section(result)
    (args.out / "CALIBRATION.md").write_text("# Calibration of the bundled model\n\n" + text + "\n")
    card_path = args.models / "MODEL_CARD.md"
    card_path.write_text(with_section(card_path.read_text(), "Calibration", text, before="Recipe"))
    print(text)
    return 0


def with_section(card: str, title: str, text: str, before: str) -> str:
    """The card with its `## title` section replaced by `text` (inserted before `## before`)."""
    marker = f"\n## {title}\n"
    if marker in card:
        head, _, rest = card.partition(marker)
        tail = rest[rest.index("\n## "):] if "\n## " in rest else ""
        return head + marker + text + tail
    at = card.index(f"\n## {before}")
    return card[:at] + marker + text + card[at:]


def section(result: dict) -> str:
    """The model card's calibration section."""
    rows = "\n".join(f"| {c} | {100 * v['ece_before']:.1f} | {100 * v['ece_after']:.1f} | {100 * v['uar_before']:.1f} | "
                     f"{100 * v['uar_after']:.1f} |" for c, v in result["by_corpus"].items())
    return f"""
The graph divides its logits by a temperature T = {result['temperature']:.3f}, fitted on the
held-out clips of the {len(result['fold_temperatures'])} folds above (negative log-likelihood of each clip's
probabilities: its speech segments' decisions weighted by duration), so that its probabilities, and `--min-confidence`, come closer to
how often it is right; the gain is small where the model was already close, and it is not
the same for every corpus (below). Held-out effect, cross-fitted (each fold's T fitted on the other folds:
{', '.join(f'{t:.2f}' for t in result['fold_temperatures'].values())}), {result['clips']} clips with speech:
expected calibration error (top label, 10 bins) {100 * result['ece_before']:.1f} % before and
{100 * result['ece_after']:.1f} % after; negative log-likelihood {result['nll_before']:.3f} → {result['nll_after']:.3f};
UAR {100 * result['uar_before']:.1f} → {100 * result['uar_after']:.1f} (the weighted mean of several segments'
tempered probabilities can change a clip's label).

| held-out speakers of | ECE before % | ECE after % | UAR before | UAR after |
|---|---:|---:|---:|---:|
{rows}

Reliability plot and bins: results/calibration/ (`python -m ser_edge.training.calibration`).
"""


if __name__ == "__main__":
    raise SystemExit(main())
