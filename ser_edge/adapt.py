"""Adapting a model to a user's own labels and voices from a few clips, without torch.

The base model's pooled attention vector (the input of its dense layer: what the Bi-LSTMs
and the attention have made of a window) becomes an extra graph output, `embedding`. Every
clip goes through the path that ships (voice-activity gate, analysis windows over speech)
and each of its windows gives one embedding. A multinomial logistic regression (L2,
class-balanced, every clip weighing the same whatever its number of windows) is fitted on
them with numpy, and written into the base graph in place of the old output layer: the
result is one ordinary ser-edge ONNX file with the new labels, the same features, windows
and checks, and the window embeddings still available as an output. Its metadata asks the
runtime to decide each segment by the mean of its windows (`decision` "windows"), as the
head was fitted; the base's own figures are its shipped decision (the model's own, e.g. "blend").

    from ser_edge.adapt import adapt, read_labelled
    clips = read_labelled("my-clips/")          # one sub-folder per label, or a CSV manifest
    result = adapt(clips, "mine.onnx")          # 30 % held out (by speaker when given)
    result.report["heldout"]["uar"]
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import numpy.typing as npt

from ser_edge.model import DEFAULT_MODEL, OnnxModel, set_metadata, softmax

__all__ = ["AdaptError", "Adapted", "Head", "LabelledClip", "MIN_CLIPS", "adapt", "embedding_model", "fit_head",
           "holdout_split", "read_labelled", "write_adapted"]

#: Fewest usable clips a label needs (one can be held out and two still fit the head).
MIN_CLIPS = 3
EMBEDDING = "embedding"


class AdaptError(Exception):
    """The adaptation data or options cannot give a model: the message says what to change."""


@dataclass(frozen=True)
class LabelledClip:
    path: Path
    label: str
    speaker: Optional[str] = None


# ----------------------------------------------------------------------------- data


def read_labelled(data: str | os.PathLike[str]) -> list[LabelledClip]:
    """Clips from a folder with one sub-folder per label (audio found at any depth below
    each), or from a CSV manifest with columns path,label[,speaker] (a header row naming
    them is optional; relative paths are relative to the manifest's folder)."""
    from ser_edge.scoring import AUDIO_SUFFIXES

    data = Path(data)
    if data.is_dir():
        clips = []
        for folder in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES)
            clips += [LabelledClip(f, folder.name) for f in files]
        if not clips:
            raise AdaptError(f"{data} holds no audio in sub-folders: put each label's clips in a sub-folder "
                             "named after the label (for example {data}/calm/*.wav, {data}/tense/*.wav), or give "
                             "a CSV manifest path,label[,speaker]")
        return clips
    if not data.is_file():
        raise AdaptError(f"{data} does not exist: give a folder with one sub-folder per label or a CSV manifest")
    try:
        text = data.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise AdaptError(f"cannot read the manifest {data} ({err}); it must be a UTF-8 CSV file "
                         "with columns path,label[,speaker]") from err
    rows = [r for r in csv.reader(text.splitlines()) if r and any(v.strip() for v in r)]
    if rows and [v.strip().lower() for v in rows[0][:2]] == ["path", "label"]:
        header = [v.strip().lower() for v in rows[0]]
        rows = rows[1:]
    else:
        header = ["path", "label", "speaker"]
    clips = []
    for n, row in enumerate(rows, 1):
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise AdaptError(f"{data}, row {n}: {','.join(row)!r} needs at least a path and a label")
        values = dict(zip(header, (v.strip() for v in row)))
        path = Path(values["path"])
        clips.append(LabelledClip(path if path.is_absolute() else data.parent / path, values["label"],
                                  values.get("speaker") or None))
    if not clips:
        raise AdaptError(f"the manifest {data} lists no clips")
    return clips


def holdout_split(clips: Sequence[LabelledClip], fraction: float, seed: int = 0,
                  tries: int = 200) -> tuple[list[int], list[int]]:
    """Indices of the clips to fit on and of the held-out clips. With speakers (every clip
    has one) the parts share no speaker and hold about `fraction` of the clips; otherwise
    each label gives round(fraction * n) clips, at least one. Every label keeps a clip in
    both parts, or an AdaptError says why it cannot."""
    if not 0 < fraction < 1:
        raise AdaptError(f"the held-out fraction must be between 0 and 1, got {fraction}")
    labels = sorted({c.label for c in clips})
    rng = np.random.default_rng(seed)
    if all(c.speaker for c in clips):
        speakers = sorted({c.speaker for c in clips})
        if len(speakers) < 2:
            raise AdaptError("every clip is from one speaker: a speaker-disjoint held-out part needs two or more; "
                             "leave the speaker column empty to hold out clips instead")
        best = None
        for _ in range(tries):
            order = rng.permutation(speakers)
            held: set[str] = set()
            for s in order:
                if sum(c.speaker in held for c in clips) >= fraction * len(clips):
                    break
                held.add(str(s))
            test = [i for i, c in enumerate(clips) if c.speaker in held]
            train = [i for i, c in enumerate(clips) if c.speaker not in held]
            if all(any(clips[i].label == lab for i in part) for lab in labels for part in (train, test)):
                miss = abs(len(test) - fraction * len(clips))
                if best is None or miss < best[0]:
                    best = (miss, train, test)
        if best is None:
            raise AdaptError("no split of the speakers keeps every label on both sides; record each label "
                             "with more speakers, or leave the speaker column empty")
        return best[1], best[2]
    train, test = [], []
    for lab in labels:
        idx = [i for i, c in enumerate(clips) if c.label == lab]
        idx = list(rng.permutation(idx))
        k = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        test += idx[:k]
        train += idx[k:]
    return sorted(int(i) for i in train), sorted(int(i) for i in test)


# ----------------------------------------------------------------------------- graph


def _embedding_tensor(graph) -> str:
    """Name of the pooled attention vector in a graph exported by ser-edge (fp32 or int8)."""
    if any(o.name == EMBEDDING for o in graph.output):
        return EMBEDDING
    producers = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name.startswith("/dense/") and node.op_type in ("Gemm", "MatMul", "MatMulInteger"):
            name = node.input[0]
            source = producers.get(name)
            if source is not None and source.op_type == "DynamicQuantizeLinear":
                name = source.input[0]
            return name
    raise AdaptError("this model has no dense layer after its attention (not a ser-edge Bi-LSTM export); "
                     "adapt an exported ser-edge model")


def embedding_model(base) -> "object":
    """The base graph (an onnx ModelProto) with its pooled attention vector as an output named `embedding`."""
    import onnx
    from onnx import helper

    model = onnx.ModelProto()
    model.CopyFrom(base)
    name = _embedding_tensor(model.graph)
    if name != EMBEDDING:
        for node in model.graph.node:  # rename the tensor everywhere: the graph's output keeps a fixed name
            node.input[:] = [EMBEDDING if i == name else i for i in node.input]
            node.output[:] = [EMBEDDING if o == name else o for o in node.output]
        for info in model.graph.value_info:
            if info.name == name:
                info.name = EMBEDDING
        model.graph.output.append(helper.make_tensor_value_info(EMBEDDING, onnx.TensorProto.FLOAT, ["batch", None]))
    return model


class _EmbeddingRecorder(OnnxModel):
    """An OnnxModel that also keeps the embedding of the last input it scored (the stream scores
    one window or segment at a time)."""

    def __init__(self, path: Path, threads: int) -> None:
        super().__init__(path, threads=threads)
        self.last: Optional[np.ndarray] = None

    def run(self, features, lengths):
        logits, attention, emb = self._outputs(["logits", "attention", EMBEDDING], features, lengths)
        self.last = np.asarray(emb[-1], np.float32)
        return softmax(logits), attention


# ----------------------------------------------------------------------------- head


@dataclass
class Head:
    """logits = embedding @ weight + bias (standardisation folded in)."""

    weight: npt.NDArray[np.float64]  # [dim, classes]
    bias: npt.NDArray[np.float64]    # [classes]

    def probabilities(self, embeddings: npt.ArrayLike) -> np.ndarray:
        z = np.asarray(embeddings, np.float64) @ self.weight + self.bias
        z -= z.max(axis=1, keepdims=True)
        p = np.exp(z)
        return p / p.sum(axis=1, keepdims=True)


def fit_head(x: npt.ArrayLike, y: npt.ArrayLike, n_classes: int, sample_weight: Optional[npt.ArrayLike] = None,
             c: float = 1.0, iterations: int = 2000, tol: float = 1e-9) -> Head:
    """Multinomial logistic regression on standardised `x`, by L-BFGS: minimises
    sum_i w_i * cross-entropy_i + ||W||^2 / (2c) (the bias is not penalised), the objective
    of scikit-learn's LogisticRegression(C=c) with sample weights. Returns it on raw `x`."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.int64)
    w = np.ones(len(x)) if sample_weight is None else np.asarray(sample_weight, np.float64)
    mean, std = x.mean(0), x.std(0)
    std[std < 1e-8] = 1.0
    z = np.hstack([(x - mean) / std, np.ones((len(x), 1))])  # [n, d+1], bias last
    d1, k = z.shape[1], n_classes
    onehot = np.eye(k)[y]
    penalty = np.full((d1, 1), 1.0 / c)
    penalty[-1] = 0.0

    def objective(flat: np.ndarray) -> tuple[float, np.ndarray]:
        t = flat.reshape(d1, k)
        s = z @ t
        s -= s.max(1, keepdims=True)
        logp = s - np.log(np.exp(s).sum(1, keepdims=True))
        loss = -(w * (onehot * logp).sum(1)).sum() + 0.5 * (penalty * t * t).sum()
        grad = z.T @ ((np.exp(logp) - onehot) * w[:, None]) + penalty * t
        return float(loss), grad.reshape(-1)

    theta = _lbfgs(objective, np.zeros(d1 * k), iterations, tol).reshape(d1, k)
    weight = theta[:-1] / std[:, None]
    bias = theta[-1] - mean @ weight
    return Head(weight, bias)


def _lbfgs(f, x0: np.ndarray, iterations: int, tol: float, memory: int = 20) -> np.ndarray:
    """Minimise a smooth convex `f` (returning value and gradient) by L-BFGS with a
    backtracking (Armijo) line search; stops when the gradient is `tol`-small relative to
    the starting one, or the value stops moving."""
    x = x0.copy()
    value, grad = f(x)
    g0 = max(np.abs(grad).max(), 1e-12)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(iterations):
        if np.abs(grad).max() <= tol * g0:
            break
        q = grad.copy()
        alphas = []
        for s_, y_, rho in reversed(steps):
            a = rho * (s_ @ q)
            alphas.append(a)
            q -= a * y_
        if steps:
            s_, y_, _ = steps[-1]
            q *= (s_ @ y_) / (y_ @ y_)
        for (s_, y_, rho), a in zip(steps, reversed(alphas)):
            q += s_ * (a - rho * (y_ @ q))
        direction = -q
        slope = grad @ direction
        if slope >= 0:  # not a descent direction: restart from the gradient
            steps.clear()
            direction, slope = -grad, -(grad @ grad)
        t = 1.0 if steps else min(1.0, 1.0 / np.abs(grad).max())
        while True:
            new_value, new_grad = f(x + t * direction)
            if new_value <= value + 1e-4 * t * slope:
                break
            t /= 2
            if t < 1e-12:  # no step lowers the value: x is as good as this precision allows
                return x
        s_, y_ = t * direction, new_grad - grad
        if s_ @ y_ > 1e-12:
            steps.append((s_, y_, 1.0 / (s_ @ y_)))
            if len(steps) > memory:
                steps.pop(0)
        x = x + s_
        done = abs(value - new_value) <= 1e-15 * max(1.0, abs(value))
        value, grad = new_value, new_grad
        if done:
            break
    return x


def balanced_weights(clip_labels: Sequence[int], windows_per_clip: Sequence[int]) -> np.ndarray:
    """Per-window weights: each class weighs the same in all, each clip the same within its class."""
    counts = Counter(clip_labels)
    k = len(counts)
    per_clip = [len(clip_labels) / (k * counts[lab]) for lab in clip_labels]
    return np.concatenate([np.full(n, w / n) for w, n in zip(per_clip, windows_per_clip)])


# ----------------------------------------------------------------------------- writing


def write_adapted(base, head: Head, labels: Sequence[str], out: str | os.PathLike[str],
                  adapted: dict) -> Path:
    """Write base graph + `head` as one ser-edge ONNX file whose `logits` are the head's."""
    import onnx
    from onnx import helper, numpy_helper

    model = embedding_model(base)
    graph = model.graph
    # Drop the old output layer: keep only the nodes that the other outputs (attention, embedding) need.
    needed = {o.name for o in graph.output if o.name != "logits"}
    keep = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            keep.append(node)
            needed.update(node.input)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = {i for n in graph.node for i in n.input}
    kept_init = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept_init)
    graph.initializer.extend([numpy_helper.from_array(head.weight.astype(np.float32), "adapt.weight"),
                              numpy_helper.from_array(head.bias.astype(np.float32), "adapt.bias")])
    graph.node.extend([helper.make_node("MatMul", [EMBEDDING, "adapt.weight"], ["adapt.matmul"], name="/adapt/MatMul"),
                       helper.make_node("Add", ["adapt.matmul", "adapt.bias"], ["logits"], name="/adapt/Add")])
    for output in graph.output:
        if output.name == "logits":
            output.type.tensor_type.shape.dim[1].dim_value = len(labels)
    meta = {p.key: p.value for p in model.metadata_props}
    meta["ser_edge.labels"] = json.dumps(list(labels))
    meta["ser_edge.adapted"] = json.dumps(adapted)
    meta.pop("ser_edge.temperature", None)  # the base's calibration belonged to its own output layer
    meta["ser_edge.decision"] = "windows"  # the head was fitted on window embeddings: decide as it was fitted
    set_metadata(model, meta)
    onnx.checker.check_model(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


# ----------------------------------------------------------------------------- the whole job


@dataclass
class Embedded:
    """Per clip: the window embeddings (None: unusable, with the reason) and the base's label."""

    embeddings: list[Optional[np.ndarray]]
    base_labels: list[Optional[str]]
    problems: dict[int, str] = field(default_factory=dict)


def embed_clips(base_path: Path, base, clips: Sequence[LabelledClip], threads: int = 1,
                progress: Optional[Callable[[int], None]] = None, base_labels: bool = True) -> Embedded:
    """Each clip through the shipped path of the base model: its window embeddings and its
    label from the base as it ships (with `base_labels` False, the base's label is only that
    of its windows, which spares the pass over each segment). Unreadable clips and clips
    without speech are recorded as problems."""
    from ser_edge.audio import AudioError
    from ser_edge.recognizer import Recognizer

    with tempfile.TemporaryDirectory() as tmp:
        import onnx

        path = Path(tmp) / base_path.name
        onnx.save(embedding_model(base), str(path))
        recorder = _EmbeddingRecorder(path, threads)
    windows: list[np.ndarray] = []
    # The base decides as it ships (its own decision, e.g. "blend"); the window
    # just scored is the recorder's last embedding when the stream reports the window.
    recognizer = Recognizer(recorder, on_window=lambda w: windows.append(recorder.last),
                            decision=None if base_labels else "windows")
    out = Embedded([], [])
    for i, clip in enumerate(clips):
        windows.clear()
        try:
            prediction = recognizer.predict_file(clip.path)
        except AudioError as err:
            out.problems[i] = f"unreadable: {err}"
            prediction = None
        except Exception as err:  # one bad file must not end the job
            out.problems[i] = f"unreadable: {type(err).__name__}: {err}"
            prediction = None
        if prediction is not None and not prediction.windows:
            out.problems[i] = "no speech found"
        ok = i not in out.problems
        out.embeddings.append(np.stack(windows) if ok else None)
        out.base_labels.append(prediction.label if ok else None)
        if progress:
            progress(i + 1)
    return out


def uar_report(true: Sequence[int], pred: Sequence[int], labels: Sequence[str]) -> dict:
    """UAR, accuracy, recall of each label present and the confusion matrix (rows: true,
    columns: predicted), from the evaluation's own metrics."""
    from ser_edge.training.metrics import report

    r = report(true, pred, labels)
    return {"uar": r["uar"], "accuracy": r["wa"],
            "recall": {lab: v["recall"] for lab, v in r["per_class"].items() if v["support"]},
            "confusion": r["confusion"], "clips": r["n"]}


@dataclass
class Adapted:
    path: Path
    report: dict
    head: Head


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def adapt(clips: Sequence[LabelledClip], out: str | os.PathLike[str],
          model: Optional[str | os.PathLike[str]] = None, holdout: float = 0.3, seed: int = 0,
          c: float = 1.0, threads: int = 1, progress: Optional[Callable[[int], None]] = None,
          embedded: Optional[Embedded] = None) -> Adapted:
    """Fit a head for `clips`' labels on the base model (the bundled one by default), score it on
    a held-out part (by speaker when every clip names one; none when holdout is 0) and write
    the adapted model to `out`, with a report beside it (`<out stem>.report.json`).
    The written model is the one that was scored: the held-out clips are not fitted on."""
    import onnx

    base_path = Path(model) if model is not None else DEFAULT_MODEL
    base_model = OnnxModel(base_path, threads=threads)  # checks it is a usable ser-edge model
    base = onnx.load(str(base_path))
    labels = sorted({clip.label for clip in clips})
    _check_counts(Counter(clip.label for clip in clips), "")
    if embedded is None:  # the base's own labels are needed only where they are the clips' labels
        embedded = embed_clips(base_path, base, clips, threads, progress,
                               base_labels=sorted(base_model.labels) == labels)
    problems = {str(clips[i].path): why for i, why in embedded.problems.items()}
    usable = [i for i in range(len(clips)) if i not in embedded.problems]
    _check_counts(Counter({lab: sum(clips[i].label == lab for i in usable) for lab in labels}),
                  f" after leaving out {len(problems)} unusable clip(s)" if problems else "")
    kept = [clips[i] for i in usable]
    if holdout > 0:
        fit_idx, test_idx = holdout_split(kept, holdout, seed)
    else:
        fit_idx, test_idx = list(range(len(kept))), []
    fit_idx = [usable[i] for i in fit_idx]
    test_idx = [usable[i] for i in test_idx]
    y = [labels.index(clips[i].label) for i in fit_idx]
    x = np.concatenate([embedded.embeddings[i] for i in fit_idx])
    weights = balanced_weights(y, [len(embedded.embeddings[i]) for i in fit_idx])
    head = fit_head(x, np.repeat(y, [len(embedded.embeddings[i]) for i in fit_idx]), len(labels), weights, c=c)

    report: dict = {
        "base": {"path": str(base_path), "sha256": _sha256(base_path), "labels": base_model.labels},
        "labels": labels, "clips": len(clips), "usable": len(usable), "fitted_on": len(fit_idx),
        "held_out": len(test_idx), "unusable": problems,
        "per_label": {lab: sum(clips[i].label == lab for i in fit_idx) for lab in labels},
        "speaker_independent": bool(test_idx) and all(c_.speaker for c_ in kept),
        "speakers": len({clips[i].speaker for i in usable if clips[i].speaker}),
        "holdout": holdout, "seed": seed, "c": c,
        "date": _dt.date.today().isoformat(),
    }
    if test_idx:
        true = [labels.index(clips[i].label) for i in test_idx]
        pred = [int(head.probabilities(embedded.embeddings[i]).mean(0).argmax()) for i in test_idx]
        report["heldout"] = uar_report(true, pred, labels)
        if sorted(base_model.labels) == labels:
            base_pred = [labels.index(embedded.base_labels[i]) for i in test_idx]
            report["base_heldout"] = uar_report(true, base_pred, labels)
    adapted = {k: report[k] for k in ("labels", "fitted_on", "held_out", "speaker_independent", "seed", "date")}
    adapted["base"] = {"file": base_path.name, "sha256": report["base"]["sha256"], "labels": base_model.labels}
    for key in ("heldout", "base_heldout"):
        if key in report:
            adapted[key] = {"uar": round(report[key]["uar"], 4), "clips": report[key]["clips"]}
    path = write_adapted(base, head, labels, out, adapted)
    report["model"] = str(path)
    path.with_suffix(".report.json").write_text(json.dumps(report, indent=1) + "\n")
    return Adapted(path, report, head)


def _check_counts(counts: Counter, where: str) -> None:
    if len([n for n in counts.values() if n > 0]) < 2:
        raise AdaptError(f"adaptation needs clips of two labels or more; found {len(counts)}"
                         f" ({', '.join(counts) or 'none'}){where}")
    few = {lab: n for lab, n in sorted(counts.items()) if n < MIN_CLIPS}
    if few:
        raise AdaptError(f"every label needs at least {MIN_CLIPS} usable clips{where}; too few for "
                         + ", ".join(f"{lab} ({n})" for lab, n in few.items()))
