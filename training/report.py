"""Writing results: JSON (everything), Markdown (tables) and PNG (confusion matrices, learning curves)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["plot_confusion", "plot_learning_curves", "save_outcome", "write_json"]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def plot_confusion(path: Path, confusion: Sequence[Sequence[int]], labels: Sequence[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(confusion, dtype=np.float64)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 2, 1.0 * len(labels) + 1.5))
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center",
                    color="white" if rows[i, j] > 0.5 else "black", fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_learning_curves(path: Path, histories: Sequence[Sequence[dict]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for n, history in enumerate(histories):
        epochs = [h["epoch"] for h in history]
        ax.plot(epochs, [h["train_loss"] for h in history], color="tab:blue", alpha=0.5,
                label="train" if n == 0 else None)
        ax.plot(epochs, [h["val_loss"] for h in history], color="tab:orange", alpha=0.7,
                label="validation" if n == 0 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title, fontsize=9)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def save_outcome(out: Path, name: str, title: str, outcome, protocol: str) -> dict:
    """Write `name`.json (the summary and each test clip's prediction), its confusion matrix
    and learning curves (PNG); return the summary."""
    summary = outcome.summary()
    summary["protocol"] = protocol
    write_json(out / f"{name}.json", {**summary, "clips": outcome.clips()})
    plot_confusion(out / f"{name}-confusion.png", summary["confusion"], summary["labels"], title)
    plot_learning_curves(out / f"{name}-learning.png", outcome.histories, title)
    return summary
