"""Utterance-level classification metrics. UAR (mean per-class recall) is the headline."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["confusion_matrix", "report"]


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
