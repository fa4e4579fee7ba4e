"""Utterance-level classification metrics. UAR (mean per-class recall) is the headline."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

__all__ = ["confusion_matrix", "report", "report_with_misses"]


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """Counts [true class, predicted class]."""
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """UAR, WA (accuracy), macro-F1, per-class precision/recall/F1/support and the confusion matrix.

    Classes absent from `y_true` are left out of UAR and macro-F1 (their recall is
    undefined), as scikit-learn does for recall when given only the labels present.
    """
    n = len(labels)
    cm = confusion_matrix(y_true, y_pred, n)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(np.float64)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    present = support > 0
    total = int(support.sum())
    return {
        "uar": float(recall[present].mean()) if present.any() else float("nan"),
        "wa": float(tp.sum() / total) if total else float("nan"),
        "macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
        "n": total,
        "per_class": {
            label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                    "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "labels": list(labels),
        "confusion": cm.tolist(),
    }


def report_with_misses(true: Sequence[str], pred: Sequence[Optional[str]], labels: Sequence[str]) -> dict:
    """`report` by label names, where a prediction that is not one of `labels` (None: no
    speech found, so no label) counts as wrong; "no_speech" counts those."""
    t = [labels.index(x) for x in true]
    p = [labels.index(x) if x in labels else (y + 1) % len(labels) for x, y in zip(pred, t)]
    return report(t, p, labels) | {"no_speech": sum(x not in labels for x in pred)}
