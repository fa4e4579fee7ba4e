"""The published experiments: every protocol on URDU and EmoDB (2-s copy), written to a folder.

    ser-edge evaluate all --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s --out results
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Callable, Optional

import torch

from ser_edge.training.corpora import EMODB_LETTERS, SHARED_LABELS, read_emodb, read_urdu, to_shared
from ser_edge.training.data import FeatureCache, NoiseSpec, load_examples
from ser_edge.training.recipes import RECIPES, Recipe
from ser_edge.training.protocols import Outcome, adaptation, within_corpus, zero_shot
from ser_edge.training.report import plot_confusion, plot_learning_curves, write_json
from ser_edge.training.trainer import select_device

__all__ = ["NOISE_CONDITIONS", "run_all", "save_outcome"]

#: 10 dB for every kind, and an SNR sweep for white and babble noise.
NOISE_CONDITIONS = [NoiseSpec(k, 10.0) for k in ("white", "pink", "babble")] + [
    NoiseSpec(k, snr) for k in ("white", "babble") for snr in (20.0, 5.0, 0.0)
]


def save_outcome(out: Path, name: str, title: str, outcome: Outcome, protocol: str) -> dict:
    """Write `name`.json, its confusion matrix and learning curves (PNG); return the summary."""
    summary = outcome.summary()
    summary["protocol"] = protocol
    write_json(out / f"{name}.json", summary)
    plot_confusion(out / f"{name}-confusion.png", summary["confusion"], summary["labels"], title)
    plot_learning_curves(out / f"{name}-learning.png", outcome.histories, title)
    return summary


def run_all(urdu: Path, emodb: Path, out: Path, folds: int = 10, recipe: Optional[Recipe] = None,
            recipe_name: str = "default", log: Optional[Callable[[str], None]] = print) -> dict:
    """Run every protocol with `recipe` (default: the default recipe); write JSON, PNG and a
    Markdown summary to `out`; return the summaries."""
    start = time.time()
    recipe = recipe or RECIPES[recipe_name]
    feature_config, train_config = recipe.features, recipe.train
    out.mkdir(parents=True, exist_ok=True)
    cache = FeatureCache(feature_config)
    augment = recipe.augmenter(cache)
    urdu_clips = read_urdu(urdu)
    emodb_clips = read_emodb(emodb)
    emodb_labels = list(EMODB_LETTERS.values())
    shared = list(SHARED_LABELS)

    skipped_files: set = set()

    def examples(clips, labels, noise=None):
        ex, skipped = load_examples(clips, labels, cache, noise)
        skipped_files.update(str(path) for path, _ in skipped)
        if skipped and log:
            log(f"skipped {len(skipped)} clip(s): {skipped[:3]}")
        return ex

    def model(n_classes):
        return recipe.model_config(n_classes)

    results: dict = {"meta": {
        "recipe": recipe_name, "augment": list(recipe.augment),
        "feature_config": json.loads(feature_config.to_json()), "train_config": train_config.to_dict(),
        "model": model(4).to_dict(), "folds": folds, "device": str(select_device(train_config.device)),
        "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
    }}
    corpora = {
        "urdu": (urdu_clips, shared, "URDU (4 classes)"),
        "emodb": (emodb_clips, emodb_labels, "EmoDB 2-s copy (7 classes)"),
    }
    for key, (clips, labels, title) in corpora.items():
        if log:
            log(f"== within-corpus {title}, speaker-grouped {folds}-fold")
        clean = examples(clips, labels)
        noisy = {n.key(): examples(clips, labels, n) for n in NOISE_CONDITIONS}
        outcome = within_corpus(clean, labels, model(len(labels)), train_config, k=folds, noisy=noisy, log=log,
                                augment=augment)
        results[f"within-{key}"] = save_outcome(out, f"within-{key}", f"within {title}", outcome,
                                         f"speaker-grouped {folds}-fold, utterance level")

    urdu4, emodb4 = examples(urdu_clips, shared), examples(to_shared(emodb_clips), shared)
    for name, source, target, title in (("urdu-to-emodb", urdu4, emodb4, "URDU -> EmoDB 2-s (4)"),
                                        ("emodb-to-urdu", emodb4, urdu4, "EmoDB 2-s -> URDU (4)")):
        if log:
            log(f"== zero-shot {title}")
        outcome = zero_shot(source, target, shared, model(4), train_config, log=log, augment=augment)
        results[f"zeroshot-{name}"] = save_outcome(out, f"zeroshot-{name}", f"zero-shot {title}", outcome,
                                            "train on all source speakers, test on all target clips")
        if log:
            log(f"== adaptation {title}")
        for setting, outcome in adaptation(source, target, shared, model(4), train_config, log=log,
                                             augment=augment).items():
            tag = f"adapt-{name}-{setting.replace('%', 'pct')}"
            results[tag] = save_outcome(out, tag, f"{title}, {setting} target", outcome,
                                 f"source + {setting} of target (speakers disjoint from the target test half)")
    results["meta"]["minutes"] = (time.time() - start) / 60
    results["meta"]["skipped_files"] = sorted(skipped_files)
    write_json(out / "summary.json", results)
    return results
