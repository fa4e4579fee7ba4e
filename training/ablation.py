"""Ablation of the training recipe: each row changes one thing from the row it names.

    python -m ser_edge.training.ablation --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --out results/ablation [--rows NAME ...] [--seeds 0 1]

Every row is scored with the same speaker-independent protocols, at utterance level:
speaker-grouped 5-fold within URDU (4 classes) and within EmoDB 2-s (7 classes), and
zero-shot URDU -> EmoDB 2-s and EmoDB 2-s -> URDU (4 shared classes). With several seeds,
folds, initialisation and batches change with the seed and the UARs are averaged. Each
row's result is written to OUT/NAME.json as soon as it is done and re-used when the script
is run again, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from ser_edge.training.corpora import EMODB_LETTERS, SHARED_LABELS, read_emodb, read_urdu, to_shared
from ser_edge.training.data import FeatureCache, load_examples, speaker_normalise
from ser_edge.training.protocols import within_corpus, zero_shot
from ser_edge.training.recipes import RECIPES, Recipe

#: name -> (the row it changes, what changes, overrides as Recipe.derive takes them).
ROWS: dict[str, tuple[str, str, dict]] = {}


def _row(name: str, parent: str, what: str, **overrides) -> None:
    ROWS[name] = (parent, what, overrides)


_row("seed", "", "the seed's recipe: 270-dim spectrogram+MFCC, Bi-LSTM 256/128, per-dim window mean removal")
_row("small", "seed", "Bi-LSTM 128/64, dense 64", model={"hidden1": 128, "hidden2": 64, "dense": 64})
_row("logmel", "small", "40 log-mel instead of spectrogram+MFCC", features="logmel")
_row("deltas", "logmel", "+ deltas and delta-deltas (in the graph)", model={"deltas": 2})
_row("pool3", "deltas", "mean-pool 3 frames before the LSTMs (30 ms steps)", model={"subsample": 3})
_row("level", "pool3", "window normalisation removes only the gain (keeps spectral shape)",
     model={"normalise": "level"})
_row("prosody", "pool3", "+ prosody block (YIN log F0, voicing, log energy)",
     features={"blocks": ["logmel", "prosody"]})
_row("weights", "pool3", "class weights instead of undersampling (every clip used)", train={"balance": "weights"})
_row("longer", "pool3", "cosine LR over 40 epochs, patience 10, stop on validation UAR",
     train={"max_epochs": 40, "patience": 10, "schedule": "cosine", "monitor": "uar"})
_row("wd", "pool3", "AdamW weight decay 0.05", train={"weight_decay": 0.05})
_row("smooth", "pool3", "label smoothing 0.1", train={"label_smoothing": 0.1})
_row("specaug", "pool3", "SpecAugment: 2 masks of <= 8 dims, 2 of <= 20 frames", train={"spec_augment": (2, 8, 2, 20)})
_row("crop", "pool3", "random 1.5 s crops of training clips", train={"crop_frames": 148})
_row("speed", "pool3", "speed-perturbed copies at 0.9 and 1.1", augment=("speed:0.9", "speed:1.1"))
_row("noise", "pool3", "noisy copies: pink 15 dB and babble 15 dB", augment=("pink:15", "babble:15"))
_row("spknorm", "level", "speaker mean normalisation (transductive: uses each test speaker's clips)",
     speaker_norm=True)
_row("combo", "pool3", "all single changes that helped at once: class weights, cosine/40 epochs/UAR stopping, "
     "prosody, SpecAugment", features={"blocks": ["logmel", "prosody"]},
     train={"balance": "weights", "max_epochs": 40, "patience": 10, "schedule": "cosine", "monitor": "uar",
            "spec_augment": (2, 8, 2, 20)})
_row("combo-noise", "combo", "+ noisy copies: pink 15 dB and babble 15 dB", augment=("pink:15", "babble:15"))
_row("combo-speed", "combo", "+ speed-perturbed copies at 0.9 and 1.1", augment=("speed:0.9", "speed:1.1"))
_row("combo-level", "combo", "gain-only window normalisation", model={"normalise": "level"})
_row("seedfeat", "pool3", "seed features (spectrogram+MFCC) instead of log-mel", features="seed")


def _uar(outcome) -> float:
    return outcome.summary()["uar"]


def run_row(recipe: Recipe, corpora: dict, seed: int) -> dict:
    recipe = recipe.derive(train={"seed": seed})
    cache = FeatureCache(recipe.features)
    shared = list(SHARED_LABELS)
    urdu, _ = load_examples(corpora["urdu"], shared, cache)
    emodb7, _ = load_examples(corpora["emodb"], list(EMODB_LETTERS.values()), cache)
    emodb4, _ = load_examples(to_shared(corpora["emodb"]), shared, cache)
    if recipe.speaker_norm:
        urdu, emodb7, emodb4 = (speaker_normalise(x) for x in (urdu, emodb7, emodb4))
    aug = recipe.augmenter(cache)
    if aug is not None and recipe.speaker_norm:
        plain = aug
        aug = lambda examples: speaker_normalise(plain(examples))  # noqa: E731
    out = {}
    out["urdu"] = _uar(within_corpus(urdu, shared, recipe.model_config(4), recipe.train, k=5, augment=aug))
    out["emodb7"] = _uar(within_corpus(emodb7, list(EMODB_LETTERS.values()), recipe.model_config(7), recipe.train,
                                       k=5, augment=aug))
    out["u2e"] = _uar(zero_shot(urdu, emodb4, shared, recipe.model_config(4), recipe.train, augment=aug))
    out["e2u"] = _uar(zero_shot(emodb4, urdu, shared, recipe.model_config(4), recipe.train, augment=aug))
    return out


def resolve(name: str) -> Recipe:
    """The recipe of a row: its parent's with the row's overrides (the seed row is the seed recipe)."""
    parent, _, overrides = ROWS[name]
    base = RECIPES["seed"] if not parent else resolve(parent)
    return base.derive(**overrides)


def write_table(out: Path) -> str:
    """OUT/ABLATION.md: every row with results in OUT, UAR in % averaged over its seeds."""
    lines = ["| row | from | change | seeds | URDU 4 | EmoDB-2s 7 | URDU → EmoDB-2s | EmoDB-2s → URDU | mean |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, (parent, what, _) in ROWS.items():
        path = out / f"{name}.json"
        if not path.exists():
            continue
        runs = list(json.loads(path.read_text())["runs"].values())
        mean = {k: statistics.fmean(r[k] for r in runs) for k in ("urdu", "emodb7", "u2e", "e2u")}
        cells = " | ".join(f"{100 * v:.1f}" for v in mean.values())
        lines.append(f"| {name} | {parent or '-'} | {what} | {len(runs)} | {cells} | "
                     f"{100 * statistics.fmean(mean.values()):.1f} |")
    text = "\n".join(lines) + "\n"
    (out / "ABLATION.md").write_text(text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urdu", type=Path, required=True)
    parser.add_argument("--emodb", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/ablation"))
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="Rows to run (default: all).")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--table-only", action="store_true",
                        help="Run nothing; write OUT/ABLATION.md from the results already in OUT.")
    args = parser.parse_args()
    if args.table_only:
        print(write_table(args.out))
        return 0
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    corpora = {"urdu": read_urdu(args.urdu), "emodb": read_emodb(args.emodb)}
    print("| row | changes | URDU 4 | EmoDB-2s 7 | URDU->EmoDB | EmoDB->URDU | minutes |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in args.rows:
        path = args.out / f"{name}.json"
        done = json.loads(path.read_text()) if path.exists() else {"runs": {}}
        start = time.time()
        for seed in args.seeds:
            if str(seed) not in done["runs"]:
                done["runs"][str(seed)] = run_row(resolve(name), corpora, seed)
                done.update(row=name, parent=ROWS[name][0], changes=ROWS[name][1],
                            recipe=resolve(name).to_dict())
                path.write_text(json.dumps(done, indent=2))
        runs = [done["runs"][str(s)] for s in args.seeds]
        mean = {k: statistics.fmean(r[k] for r in runs) for k in runs[0]}
        print(f"| {name} | {ROWS[name][1]} | {100 * mean['urdu']:.1f} | {100 * mean['emodb7']:.1f} | "
              f"{100 * mean['u2e']:.1f} | {100 * mean['e2u']:.1f} | {(time.time() - start) / 60:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
