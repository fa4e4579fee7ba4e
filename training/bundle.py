"""Build the bundled default model and its model card: one command.

    python -m ser_edge.training.bundle --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s

1. Honest estimate first: speaker-grouped k-fold over the union of URDU and the EmoDB-2s
   4-class subset (speakers never cross folds); each fold's model is exported and
   quantised, and the held-out clips are scored with torch, fp32 ONNX and int8 ONNX, so
   the card reports speaker-independent UAR per corpus for both precisions.
2. Then the shipped model: trained on all clips (a speaker-disjoint validation part for
   early stopping), exported, quantised to int8 and copied into ser_edge/models/ with
   MODEL_CARD.md beside it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np
import torch

import ser_edge
from ser_edge.training.corpora import SHARED_LABELS, read_emodb, read_urdu, to_shared
from ser_edge.training.data import FeatureCache, load_examples
from ser_edge.training.export import export_onnx, quantise_int8
from ser_edge.training.metrics import report
from ser_edge.training.protocols import fit
from ser_edge.training.splits import grouped_kfold
from ser_edge.training.recipes import describe, get_recipe

MODELS = Path(ser_edge.__file__).resolve().parent / "models"


def _score_onnx(path: Path, examples) -> np.ndarray:
    from ser_edge.model import OnnxModel

    model = OnnxModel(path, threads=1)
    return np.array([model.score(e.features)[0].argmax() for e in examples])


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the bundled default model and its card.")
    parser.add_argument("--urdu", type=Path, required=True)
    parser.add_argument("--emodb", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("build/default-model"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--recipe", default="default", help="Training recipe (see ser_edge.training.recipes).")
    args = parser.parse_args()
    start = time.time()
    recipe = get_recipe(args.recipe).derive(train={"seed": args.seed})
    config, labels = recipe.features, list(SHARED_LABELS)
    cache = FeatureCache(config)
    augment = recipe.augmenter(cache)
    urdu, _ = load_examples(read_urdu(args.urdu), labels, cache)
    emodb, _ = load_examples(to_shared(read_emodb(args.emodb)), labels, cache)
    examples = urdu + emodb
    corpus = np.array(["urdu"] * len(urdu) + ["emodb"] * len(emodb))
    model_config = recipe.model_config(len(labels))
    train_config = recipe.train
    args.work.mkdir(parents=True, exist_ok=True)

    y_true, preds = [], {"torch": [], "fp32": [], "int8": []}
    which = []
    for n, (train_idx, test_idx) in enumerate(grouped_kfold([e.group for e in examples], args.folds, args.seed), 1):
        print(f"fold {n}/{args.folds}: {len(train_idx)} training clips, {len(test_idx)} test clips", flush=True)
        result = fit([examples[i] for i in train_idx], model_config, train_config, log=print, augment=augment)
        test = [examples[i] for i in test_idx]
        fp32 = export_onnx(result.model, config, labels, args.work / f"fold{n}.onnx")
        int8 = quantise_int8(fp32, args.work / f"fold{n}.int8.onnx")
        with torch.no_grad():
            preds["torch"] += [int(result.model(torch.from_numpy(e.features)[None], torch.tensor([len(e.features)]))[0]
                                   .argmax()) for e in test]
        preds["fp32"] += _score_onnx(fp32, test).tolist()
        preds["int8"] += _score_onnx(int8, test).tolist()
        y_true += [e.label for e in test]
        which += corpus[test_idx].tolist()
    y_true, which = np.array(y_true), np.array(which)
    scores = {}
    for name in ("urdu", "emodb"):
        mask = which == name
        scores[name] = {p: report(y_true[mask], np.array(v)[mask], labels) for p, v in preds.items()}
    agreement = float(np.mean(np.array(preds["fp32"]) == np.array(preds["int8"])))

    print("training the shipped model on all clips", flush=True)
    result = fit(examples, model_config, train_config, log=print, augment=augment)
    summary = {
        "corpora": ["URDU (4 classes, 400 clips, 29 speakers)", "EmoDB 2-s copy (angry/happy/neutral/sad, 339 clips, 10 speakers)"],
        "protocol": f"speaker-grouped {args.folds}-fold over both corpora, utterance level",
        "uar_int8": {k: round(v["int8"]["uar"], 4) for k, v in scores.items()},
        "uar_fp32": {k: round(v["fp32"]["uar"], 4) for k, v in scores.items()},
        "int8_fp32_agreement": round(agreement, 4),
        "best_epoch": result.best_epoch,
        "recipe": {"name": args.recipe, **recipe.to_dict()},
    }
    fp32 = export_onnx(result.model, config, labels, args.work / "default.onnx", training=summary)
    int8 = quantise_int8(fp32, args.work / "default.int8.onnx")
    MODELS.mkdir(exist_ok=True)
    shutil.copyfile(int8, MODELS / "default.int8.onnx")
    (args.work / "scores.json").write_text(json.dumps(scores, indent=2))

    def row(name, title):
        s = scores[name]
        return (f"| {title} | {100 * s['torch']['uar']:.1f} | {100 * s['fp32']['uar']:.1f} | {100 * s['int8']['uar']:.1f} | "
                f"{100 * s['int8']['wa']:.1f} | {100 * s['int8']['macro_f1']:.1f} |")

    per_class = {name: {label: round(100 * v["recall"], 1) for label, v in scores[name]["int8"]["per_class"].items()}
                 for name in scores}
    card = f"""# ser-edge default model

`default.int8.onnx` ({int8.stat().st_size / 1e6:.2f} MB; the fp32 export is {fp32.stat().st_size / 1e6:.2f} MB):
a Bi-LSTM with attention trained with the `{args.recipe}` recipe (below) on {config.dim} values
per 25 ms frame every 10 ms at 16 kHz; classes {', '.join(labels)}. int8 by onnxruntime dynamic quantisation (DynamicQuantizeLSTM, MatMulInteger).
Analysis windows of 2.0 s every 0.5 s over speech.

## Data and licences
- URDU (Latif et al. 2018): 400 clips from Urdu TV talk shows, 4 classes, 29 speaker IDs.
  **Research use only**: this model inherits that restriction; do not ship it in a commercial
  product. Train your own with `ser-edge train` on data you may use.
- EmoDB (Burkhardt et al. 2005, CC0-1.0), the 2-s copy in ../shared/data: the 339 clips of
  anger, happiness, neutral and sadness from 10 actors (German).

## How good it is (honestly measured)
Protocol: {summary['protocol']}; each fold's model trained with the recipe below on the
other folds' speakers, exported and quantised like the shipped one, then scored on the
held-out speakers' whole clips. UAR = mean per-class recall, in %; chance is 25.

| held-out speakers of | UAR torch | UAR fp32 ONNX | UAR int8 ONNX | WA int8 | macro-F1 int8 |
|---|---:|---:|---:|---:|---:|
{row('urdu', 'URDU')}
{row('emodb', 'EmoDB 2-s (4 classes)')}

int8 and fp32 predictions agree on {100 * agreement:.1f} % of the held-out clips.
Per-class recall (int8): {json.dumps(per_class)}.

These figures are far from what large speech models reach, and natural speech from other
speakers, languages and microphones will do worse: expect confusions, especially between
neutral and sad and between angry and happy. Results of every protocol: results/RESULTS.md.

## Recipe (`{args.recipe}`)
{describe(recipe)} Early stopping uses a speaker-disjoint, class-mixed seventh of the training
speakers, and the best epoch's weights are kept; batch 32; seed {args.seed}; CPU ({platform.processor() or platform.machine()}), torch {torch.__version__};
the shipped model stopped at epoch {result.best_epoch}. Building took {(time.time() - start) / 60:.0f} min.

## Reproduce
```bash
python -m ser_edge.training.bundle --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s --recipe {args.recipe}
```
(needs the train extra; writes ser_edge/models/default.int8.onnx and this card.)
"""
    (MODELS / "MODEL_CARD.md").write_text(card)
    print(card)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
