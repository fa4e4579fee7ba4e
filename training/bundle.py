"""Build the bundled default model and its model card: one command.

    python -m ser_edge.training.bundle --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --ravdess ../shared/data/ravdess

1. Honest estimate first, through the path that ships: the three corpora pooled on the 4
   shared classes, speaker-grouped folds whose test parts hold every speaker but the
   development ones (the joint protocol of the comparison); each fold's model is exported
   and quantised like the shipped one, and its held-out recordings are scored by
   `ser_edge.Recognizer` (voice-activity gate, each speech segment decided by one pass over
   it with 0.3 s of context) with fp32 and int8, and, for reference, as whole clips by torch. Per-clip
   scores are written to ser_edge/models/card_scores.json.
2. Then the shipped model: trained on all clips (a speaker-disjoint validation part for
   early stopping), exported, quantised to int8 and copied into ser_edge/models/ with
   MODEL_CARD.md beside it. Every count on the card is read from the data and the recipe.
3. Calibration (training/calibration.py): a temperature fitted on the folds' held-out
   clips goes into the shipped graph; the card gets its before/after figures.
4. Noise (training/robustness.py): the folds' held-out recordings mixed with white, pink
   and babble noise at 20, 10, 5 and 0 dB, scored through the shipped path; the card gets
   its "In noise" section.

An interrupted build, run again with the same arguments, keeps the folds it finished (their
models and held-out scores in --work, recorded with a digest of the recipe, seed and clips) and
goes on from the next; `--fresh` trains them all again.

`--rescore` trains nothing: after a change of the runtime it scores the held-out recordings
again with the fold models of a finished build (--work) and redoes steps 3 and 4.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

import ser_edge
from ser_edge.model import DECISIONS, OnnxModel
from ser_edge.stream import CONTEXT_S
from ser_edge.training.comparison import TITLES, _speaker_folds, clip_id, read_corpora
from ser_edge.training.corpora import SHARED_LABELS, outside, to_shared
from ser_edge.training.data import FeatureCache, load_examples
from ser_edge.training.export import decision_for, export_onnx, quantise_int8, update_metadata
from ser_edge.training.metrics import report_with_misses
from ser_edge.training.protocols import fit_ensemble, training_split
from ser_edge.training.recipes import describe, get_recipe
from ser_edge.training.splits import DEVELOPMENT_SPEAKERS, is_development
from ser_edge.training.trainer import predict

MODELS = Path(ser_edge.__file__).resolve().parent / "models"
LICENCES = {
    "urdu": "**Research use only**: URDU (Latif et al. 2018), Urdu TV talk shows, natural speech. All of "
            "its angry clips are from male speakers, so angry is confounded with male voices in it",
    "emodb": "EmoDB (Burkhardt et al. 2005, CC0-1.0), the 2-s copy (cut or zero-padded to 2.0 s): German actors",
    "ravdess": "**Non-commercial use only** (CC BY-NC-SA 4.0): RAVDESS speech, actors 01-12 (Livingstone & "
               "Russo 2018), North American English actors",
}


def _score_shipped_path(work: Path, fold: int, rows: list[dict], clips) -> None:
    """Score one fold's held-out clips through `Recognizer` with its fp32 and int8 models in
    `work`; the labels (None: no speech found), int8 probabilities and window counts go into `rows`."""
    from ser_edge.recognizer import Recognizer

    if len(rows) != len(clips):
        raise ValueError(f"fold {fold}: {len(rows)} rows for {len(clips)} clips")
    for precision, path in (("fp32", work / f"fold{fold}.onnx"), ("int8", work / f"fold{fold}.int8.onnx")):
        rec = Recognizer(path, threads=1)
        for row, clip in zip(rows, clips):
            p = rec.predict_file(clip.path)
            row[precision] = p.label
            if precision == "int8":
                row["int8_probabilities"] = {k: round(v, 4) for k, v in p.probabilities.items()}
                row["windows"] = len(p.windows)


#: How `Recognizer` scores a recording with a model of each decision (the card says so where it
#: gives its figures): in a few words for the protocol, and in full.
SCORED_BY = {"segment": f"each speech segment in one pass, with {CONTEXT_S:g} s of context",
             "windows": "2 s windows every 0.5 s over speech, the mean of the windows",
             "blend": f"each speech segment by the mean of one pass over it, with {CONTEXT_S:g} s of context, "
                      "and of its 2 s windows every 0.5 s"}
SHIPPED_PATH = {"segment": f"the voice-activity gate, each speech segment decided by one pass of the model over it "
                           f"with {CONTEXT_S:g} s of the audio before and after, the segments' probabilities weighted "
                           "by their durations",
                "windows": "the voice-activity gate, 2 s windows every 0.5 s over speech, the mean of the windows",
                "blend": f"the voice-activity gate, each speech segment decided by the mean of one pass of the model "
                         f"over it with {CONTEXT_S:g} s of the audio before and after and of its 2 s windows every "
                         "0.5 s, the segments' probabilities weighted by their durations"}
#: What the card says of the runtime after its sizes (`--rescore` rewrites it with the figures).
RUNTIME_SENTENCE = {"segment": f"Each speech segment is decided by one pass over it\nwith {CONTEXT_S:g} s of "
                               "context; live displays also get a 2.0 s window every 0.5 s of speech.",
                    "windows": "Each speech segment is decided by the mean of its\nanalysis windows, 2.0 s every "
                               "0.5 s over speech.",
                    "blend": f"Each speech segment is decided by the mean of one pass\nover it with {CONTEXT_S:g} s of "
                             "context and of its 2.0 s windows every 0.5 s (live\ndisplays get the windows as they "
                             "come)."}
_QUANTISATION = "quantisation (DynamicQuantizeLSTM, MatMulInteger). "


def _protocol(folds: int, decision: str) -> str:
    return (f"joint: the three corpora pooled on 4 classes, {folds} speaker-grouped folds over the non-development "
            f"speakers, scored through Recognizer ({SCORED_BY[decision]})")


def _quality_intro(protocol: str, dev: str, decision: str) -> str:
    """The card's words before its held-out table: the protocol and the path that scored it."""
    return f"""Protocol: {protocol}. Each fold's model is trained with the recipe below on the other
speakers (the development speakers, {dev}, always train and are never tested), exported and
quantised like the shipped one; each held-out recording is then scored by `Recognizer` as a user
would score it: {SHIPPED_PATH[decision]}. A
recording with no speech found counts as wrong. UAR = mean per-class recall, in %; chance is 25.
Per-clip results: `card_scores.json` beside this card.

"""


def _development_text(corpora) -> str:
    return "; ".join(f"{TITLES[c]} {', '.join(sorted(DEVELOPMENT_SPEAKERS[c]))}" for c in sorted(corpora))


def _held_out_scores(rows: list[dict], labels: list[str]) -> tuple[dict, float]:
    """Per corpus and scoring path, the metrics of the held-out rows; fp32/int8 label agreement."""
    def report(corpus: str, key: str) -> dict:
        sel = [r for r in rows if r["corpus"] == corpus]
        # A recording with no speech window gets no label: it counts as wrong.
        return report_with_misses([r["true"] for r in sel], [r[key] for r in sel], labels)

    scores = {c: {k: report(c, k) for k in ("torch_whole_clip", "fp32", "int8")}
              for c in sorted({r["corpus"] for r in rows})}
    return scores, float(np.mean([r["fp32"] == r["int8"] for r in rows]))


def _fold_key(recipe, seed: int, train: list[str], test: list[str]) -> str:
    """What a fold's models and scores depend on: the recipe, the seed and its clips (a digest)."""
    text = json.dumps({"recipe": recipe.to_dict(), "seed": seed, "train": train, "test": test}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _fold_record(work: Path, fold: int) -> Path:
    """Where a finished fold's held-out rows and key are kept, beside its models."""
    return work / f"fold{fold}.rows.json"


def _keep_fold(work: Path, fold: int, key: str, rows: list[dict]) -> None:
    """Record a finished fold (its held-out rows) beside its models, so that an interrupted build
    run again with the same arguments goes on from the next fold."""
    path = _fold_record(work, fold)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "rows": rows}) + "\n")
    tmp.replace(path)


def _kept_fold(work: Path, fold: int, key: str) -> Optional[list[dict]]:
    """The held-out rows of a fold finished by an earlier run with the same key, or None (not
    finished, another recipe, seed or clips, a model file missing, an unreadable record)."""
    path = _fold_record(work, fold)
    if not all(p.is_file() for p in (path, work / f"fold{fold}.onnx", work / f"fold{fold}.int8.onnx")):
        return None
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("key") != key or not isinstance(saved.get("rows"), list):
        return None
    return saved["rows"]


QUALITY_SECTION = "## How good it is (honestly measured, through the shipped path)"
QUALITY_HEADER = ("| held-out speakers of | clips | UAR torch, whole clip | UAR fp32, shipped path | "
                  "UAR int8, shipped path | WA int8 | macro-F1 int8 | no speech found |")


def _quality_table(rows: list[dict], scores: dict, agreement: float) -> str:
    """The card's held-out table, the fp32/int8 agreement and the per-class recalls."""
    def row(c: str) -> str:
        s = scores[c]
        return (f"| {TITLES[c]} | {sum(1 for r in rows if r['corpus'] == c)} | {100 * s['torch_whole_clip']['uar']:.1f} | "
                f"{100 * s['fp32']['uar']:.1f} | {100 * s['int8']['uar']:.1f} | {100 * s['int8']['wa']:.1f} | "
                f"{100 * s['int8']['macro_f1']:.1f} | {s['int8']['no_speech']} |")

    per_class = {TITLES[c]: {lab: round(100 * v["recall"], 1) for lab, v in scores[c]["int8"]["per_class"].items()}
                 for c in scores}
    return f"""{QUALITY_HEADER}
|---|---:|---:|---:|---:|---:|---:|---:|
{chr(10).join(row(c) for c in scores)}

int8 and fp32 give the same label to {100 * agreement:.1f} % of the held-out recordings.
Per-class recall (int8): {json.dumps(per_class)}."""


def rescore(args: argparse.Namespace) -> int:
    """Score the held-out recordings again through the shipped path with the fold models already
    in `args.work` (after a change of the runtime: the voice-activity gate, windowing), without
    training: card_scores.json, the card's held-out table and the scores in the shipped model's
    metadata, then calibration and noise."""
    from ser_edge.training.calibration import held_out_clips

    card_scores, card_path = args.models / "card_scores.json", args.models / "MODEL_CARD.md"

    def fail(message: str) -> int:
        print(f"error: {message}", file=sys.stderr)
        return 2

    for path in (card_scores, card_path, args.models / "default.int8.onnx"):
        if not path.is_file():
            return fail(f"--rescore needs a finished build; {path} is missing (run the bundle command without "
                        "--rescore first)")
    card = card_path.read_text()
    start = card.find("Protocol: ", card.find(QUALITY_SECTION))
    last = card.find("Per-class recall (int8):", card.find(QUALITY_HEADER, start)) if start >= 0 else -1
    end = card.find("\n", last) if last >= 0 else -1
    if QUALITY_SECTION not in card or card.find(QUALITY_HEADER, start) < 0 or end < 0:
        return fail(f"{card_path} has no held-out section written by this command (its heading, table header "
                    "and 'Per-class recall (int8):' line); rebuild it without --rescore")
    corpora = read_corpora({"urdu": args.urdu, "emodb": args.emodb, "ravdess": args.ravdess}, args.recipe)
    try:
        rows, by_id = held_out_clips(card_scores, corpora)
    except ValueError as err:
        return fail(str(err))
    folds = sorted({r["fold"] for r in rows})
    missing = [args.work / f"fold{n}{ext}" for n in folds for ext in (".onnx", ".int8.onnx")
               if not (args.work / f"fold{n}{ext}").is_file()]
    if missing:
        return fail(f"{card_scores} names folds {folds}, but {missing[0]} is missing: --work must be the folder "
                    "of the build that wrote it")
    if args.decision:  # the runtime's decision for these models changed: they (and the shipped model) say so
        for path in [args.work / f"fold{n}{ext}" for n in folds for ext in (".onnx", ".int8.onnx")] + [
                args.models / "default.int8.onnx", *(p for p in (args.work / "default.onnx", args.work /
                                                                 "default.int8.onnx") if p.is_file())]:
            update_metadata(path, {"ser_edge.decision": args.decision})
    for fold in folds:
        mine = [r for r in rows if r["fold"] == fold]
        _score_shipped_path(args.work, fold, mine, [by_id[r["clip"]] for r in mine])
    saved = json.loads(card_scores.read_text())
    scores, agreement = _held_out_scores(rows, list(SHARED_LABELS))
    summary = {"uar_int8": {c: round(s["int8"]["uar"], 4) for c, s in scores.items()},
               "uar_fp32": {c: round(s["fp32"]["uar"], 4) for c, s in scores.items()},
               "int8_fp32_agreement": round(agreement, 4)}
    decision = OnnxModel(args.work / f"fold{folds[0]}.int8.onnx").decision  # how the fold models were scored
    summary["protocol"] = _protocol(len(folds), decision)
    saved["summary"].update(summary)
    saved.update({"scores": scores, "clips": rows})
    card_scores.write_text(json.dumps(saved, indent=1) + "\n")
    intro = _quality_intro(summary["protocol"], _development_text(corpora), decision)
    card = card[:start] + intro + _quality_table(rows, scores, agreement) + card[end:]
    at = card.find(_QUANTISATION)
    if at >= 0:  # the sentence on how the runtime decides, up to the end of its paragraph
        at += len(_QUANTISATION)
        stop = card.find("\n\n", at)
        card = card[:at] + RUNTIME_SENTENCE[decision] + (card[stop:] if stop >= 0 else "\n")
    else:
        print(f"note: {card_path} has no sentence on how the runtime decides after its sizes; check its first "
              "paragraph by hand", file=sys.stderr)
    card_path.write_text(card)
    _update_training_metadata(args.models / "default.int8.onnx", summary)
    _calibrate_and_test_in_noise(args)
    print(card_path.read_text())
    return 0


def _update_training_metadata(path: Path, fields: dict) -> None:
    """Update fields of the model's `ser_edge.training` metadata (what `ser-edge info` shows)."""
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    update_metadata(path, {"ser_edge.training": json.dumps({**json.loads(meta.get("ser_edge.training", "{}")),
                                                             **fields}, default=str)})


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Build the bundled default model and its card.")
    parser.add_argument("--urdu", type=Path, required=True)
    parser.add_argument("--emodb", type=Path, required=True)
    parser.add_argument("--ravdess", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--work", type=Path, default=Path("build/default-model"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--recipe", default="default", help="Training recipe (see ser_edge.training.recipes).")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for PyTorch (1: see the README)")
    parser.add_argument("--ensemble", type=int, default=None,
                        help="models averaged in the shipped graph and in each fold (default: the recipe's)")
    parser.add_argument("--max-epochs", type=int, default=None, help=argparse.SUPPRESS)  # quick checks only
    parser.add_argument("--models", type=Path, default=MODELS,
                        help="folder for the int8 model, MODEL_CARD.md and card_scores.json (default: the package's "
                             "bundled model; another folder builds a candidate without replacing it)")
    parser.add_argument("--results", type=Path, default=Path("results"),
                        help="folder for the calibration/ and robustness/ pages (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true",
                        help="train every fold again (by default the folds an interrupted build of the same recipe, "
                             "seed and clips finished in --work are kept)")
    parser.add_argument("--rescore", action="store_true",
                        help="train nothing: score the held-out recordings again with the fold models in --work "
                             "(after a runtime change) and update the card, calibration and noise sections")
    parser.add_argument("--decision", choices=DECISIONS, default=None,
                        help="with --rescore: first write this runtime decision into the fold models and the shipped "
                             "model (after a change of how the runtime decides with models of this recipe)")
    args = parser.parse_args(argv)
    if args.ensemble is not None and args.ensemble < 1:
        parser.error(f"--ensemble must be at least 1, got {args.ensemble}")
    if args.decision and not args.rescore:
        parser.error("--decision goes with --rescore (a build writes the recipe's decision itself)")
    if args.rescore:
        return rescore(args)
    torch.set_num_threads(args.threads)
    start = time.time()
    quick = {"max_epochs": args.max_epochs} if args.max_epochs else {}
    recipe = get_recipe(args.recipe).derive(train={"seed": args.seed, "device": args.device, **quick},
                                            ensemble=args.ensemble)
    recipe.check_runnable(args.recipe)
    config, labels = recipe.features, list(SHARED_LABELS)
    decision = decision_for(recipe.train.to_dict())  # how the runtime decides with the models (and the card)
    cache = FeatureCache(config)
    augment = recipe.augmenter(cache)
    corpora = read_corpora({"urdu": args.urdu, "emodb": args.emodb, "ravdess": args.ravdess}, args.recipe)
    clips = [c for name in sorted(corpora) for c in to_shared(corpora[name])]
    examples, skipped = load_examples(clips, labels, cache)
    assert not skipped and len(examples) == len(clips)
    extra = []  # clips outside the 4 classes, for a recipe with the own-label head
    if recipe.train.own_labels > 0:
        extra, _ = load_examples(outside((c for name in sorted(corpora) for c in corpora[name]), labels), labels, cache, others=True)
    model_config = recipe.model_config(len(labels))
    args.work.mkdir(parents=True, exist_ok=True)

    rows, kept_folds = [], []
    folds = _speaker_folds(clips, args.folds, lambda g: not is_development(g))
    for n, (train_idx, test_idx) in enumerate(folds, 1):
        print(f"fold {n}/{len(folds)}: {len(train_idx)} training clips, {len(test_idx)} test clips", flush=True)
        key = _fold_key(recipe, args.seed, [clip_id(clips[i]) for i in train_idx],
                        [clip_id(clips[i]) for i in test_idx])
        kept = None if args.fresh else _kept_fold(args.work, n, key)
        if kept is not None:
            print(f"fold {n}: kept from an interrupted build in {args.work} (same recipe, seed and clips; "
                  "--fresh trains it again)", flush=True)
            rows.extend(kept)
            kept_folds.append(n)
            continue
        _fold_record(args.work, n).unlink(missing_ok=True)  # its models are about to be replaced
        model, _ = fit_ensemble([examples[i] for i in train_idx], model_config, recipe.train, recipe.ensemble,
                                augment=augment, extra=extra)
        model = model.cpu()
        test = [examples[i] for i in test_idx]
        fp32 = export_onnx(model, config, labels, args.work / f"fold{n}.onnx", decision=decision)
        int8 = quantise_int8(fp32, args.work / f"fold{n}.int8.onnx")
        whole = predict(model, test)
        for j, i in enumerate(test_idx):
            rows.append({"clip": clip_id(clips[i]), "corpus": clips[i].corpus, "speaker": clips[i].speaker,
                         "true": clips[i].label, "fold": n, "torch_whole_clip": labels[int(whole[j].argmax())]})
        fold_rows = rows[len(rows) - len(test_idx):]
        _score_shipped_path(args.work, n, fold_rows, [clips[i] for i in test_idx])
        _keep_fold(args.work, n, key, fold_rows)

    scores, agreement = _held_out_scores(rows, labels)

    print("training the shipped model on all clips", flush=True)
    splits = [training_split(examples, recipe.train.seed + k) for k in range(recipe.ensemble)]
    train_part, val_part = splits[0]
    model, results = fit_ensemble(examples, model_config, recipe.train, recipe.ensemble, log=print, augment=augment,
                                  extra=extra)
    model = model.cpu()
    best_epochs = [r.best_epoch for r in results]
    counts = {c: Counter(x.label for x in to_shared(corpora[c])) for c in sorted(corpora)}
    speakers = {c: len({x.speaker for x in to_shared(corpora[c])}) for c in sorted(corpora)}
    summary = {
        "corpora": {c: {"clips": sum(counts[c].values()), "speakers": speakers[c], "per_class": dict(counts[c])}
                    for c in sorted(corpora)},
        "protocol": _protocol(len(folds), decision),
        "uar_int8": {c: round(s["int8"]["uar"], 4) for c, s in scores.items()},
        "uar_fp32": {c: round(s["fp32"]["uar"], 4) for c, s in scores.items()},
        "int8_fp32_agreement": round(agreement, 4),
        "trained_on": len(train_part), "validated_on": len(val_part),
        "best_epoch": best_epochs, "epochs_run": [len(r.history) for r in results], "members": len(results),
        "recipe": {"name": args.recipe, **recipe.to_dict()},
    }
    fp32 = export_onnx(model, config, labels, args.work / "default.onnx", training=summary, decision=decision)
    int8 = quantise_int8(fp32, args.work / "default.int8.onnx")
    args.models.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(int8, args.models / "default.int8.onnx")
    (args.models / "card_scores.json").write_text(json.dumps({"summary": summary, "scores": scores, "clips": rows},
                                                        indent=1) + "\n")

    data_lines = "\n".join(
        f"- {LICENCES[c]}: {summary['corpora'][c]['clips']} clips of {', '.join(labels)} "
        f"({', '.join(f'{k} {v}' for k, v in sorted(counts[c].items()))}), {speakers[c]} speakers."
        for c in sorted(corpora))
    members_text = "; ".join(
        f"{'model ' + str(k + 1) + ' ' if len(results) > 1 else ''}(seed {args.seed + k}) trained on {len(tr)} clips "
        f"and validated on {len(va)} (other speakers for each seed), best epoch {r.best_epoch} of {len(r.history)} run"
        for k, ((tr, va), r) in enumerate(zip(splits, results)))
    card = f"""# ser-edge default model

`default.int8.onnx` ({int8.stat().st_size / 1e6:.2f} MB; the fp32 export is {fp32.stat().st_size / 1e6:.2f} MB):
{"an ensemble of " + str(len(results)) + " Bi-LSTMs with attention (probabilities averaged in one graph)" if len(results) > 1 else "a Bi-LSTM with attention"} trained with the `{args.recipe}` recipe (below) on {config.dim} values
per 25 ms frame every 10 ms at 16 kHz; classes {', '.join(labels)}. int8 by onnxruntime dynamic
{_QUANTISATION}{RUNTIME_SENTENCE[decision]}

## Data and licences
{data_lines}

This model inherits the most restrictive of these licences: **research and non-commercial use
only**; do not ship it in a commercial product. Train your own with `ser-edge train` on data you
may use.

{QUALITY_SECTION}
{_quality_intro(summary['protocol'], _development_text(corpora), decision)}{_quality_table(rows, scores, agreement)}

These figures are far from what large speech models reach, and natural speech from other
speakers, languages and microphones will do worse: expect confusions, especially between
neutral and sad and between angry and happy. Scores of this model on the corpora above are
scores on its own training clips and say nothing of its accuracy: only the held-out figures
here count. Every protocol: results/comparison/COMPARISON.md.

## Recipe (`{args.recipe}`)
{describe(recipe)} Early stopping uses a speaker-disjoint, class-mixed validation part of about a
seventh of the training clips (whole speakers); the best epoch's weights are kept. The shipped
model: {members_text}. Batch {recipe.train.batch_size}; trained on
{results[0].device} ({platform.processor() or platform.machine()}), torch {torch.__version__}. Building took
{(time.time() - start) / 60:.0f} min{f" (folds {kept_folds} kept from an interrupted run and not counted)" if kept_folds else ""}.

## Reproduce
```bash
python -m ser_edge.training.bundle --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
    --ravdess ../shared/data/ravdess --recipe {args.recipe}{f" --ensemble {args.ensemble}" if args.ensemble else ""}
```
(needs the train extra; writes ser_edge/models/default.int8.onnx, this card and card_scores.json.)
"""
    (args.models / "MODEL_CARD.md").write_text(card)
    _calibrate_and_test_in_noise(args)
    print((args.models / "MODEL_CARD.md").read_text())
    return 0


def _calibrate_and_test_in_noise(args: argparse.Namespace) -> None:
    # Calibration: one temperature fitted on the folds' held-out clips, written into the graph.
    from ser_edge.training.calibration import main as calibrate

    corpora = ["--urdu", str(args.urdu), "--emodb", str(args.emodb), "--ravdess", str(args.ravdess)]
    places = ["--work", str(args.work), "--models", str(args.models)]
    calibrate(corpora + places + ["--out", str(args.results / "calibration")])
    # The same held-out recordings in noise, through the shipped path (the card's "In noise").
    from ser_edge.training.robustness import main as robustness

    robustness(corpora + places + ["--out", str(args.results / "robustness")])


if __name__ == "__main__":
    raise SystemExit(main())
