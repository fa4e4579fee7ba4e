"""K-shot adaptation curves of `ser-edge adapt` on the shared corpora: one command.

    python -m ser_edge.training.kshot --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --ravdess ../shared/data/ravdess --out results/adapt

For each target corpus the base model is one that never heard it: one model of the
default recipe (seed 0; not its 3-model ensemble) trained on the other two corpora (4
shared classes), exported and quantised to int8 like the bundled model (the bundled model was trained on all three corpora, so its
figures here would be figures on its own training clips). Then, for several draws, the
target's speakers are split in two halves: K clips per label are drawn from one half to
adapt on, and every clip of the other half is the test (speaker-independent). On the same
clips, three systems:

- adapted: `ser_edge.adapt` (a logistic-regression head on the base's pooled attention
  vectors of each 2 s window; the test clip's label is the mean of its windows);
- base: the base model as it is, where its labels are the label set's;
- eGeMAPS + SVM: openSMILE eGeMAPSv02 functionals + linear SVM (the comparison's anchor)
  trained on the same K clips per label.

Nothing is tuned on these figures: the head's settings are `ser_edge.adapt`'s defaults.
Label sets: the 4 shared classes, each corpus's full set, high/low arousal (angry+happy vs
neutral+sad) and RAVDESS calm vs neutral (neither new set is a label of the base model).
Writes KSHOT.md, kshot.png, kshot.json and the time and memory of `ser-edge adapt`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ser_edge.adapt import LabelledClip, balanced_weights, embed_clips, fit_head, write_adapted
from ser_edge.training.comparison import READERS, TITLES, read_corpora
from ser_edge.training.corpora import SHARED_LABELS, Clip, to_shared
from ser_edge.training.metrics import report

SHOTS = (5, 10, 20)
AROUSAL = {"angry": "high", "happy": "high", "neutral": "low", "sad": "low"}


def base_model(target: str, corpora: dict[str, list[Clip]], work: Path, threads: int) -> Path:
    """The default recipe trained on every corpus but `target` (4 classes), as int8 ONNX; cached
    with the recipe it was trained with, and trained again when the default recipe has changed."""
    from ser_edge.training.recipes import get_recipe

    recipe = get_recipe("default").derive(train={"seed": 0, "device": "cpu"})
    out, made_with = work / f"base-without-{target}.int8.onnx", work / f"base-without-{target}.recipe.json"
    wanted = json.loads(json.dumps(recipe.to_dict()))  # as it reads back (tuples become lists)
    if out.exists() and made_with.exists() and json.loads(made_with.read_text()) == wanted:
        from ser_edge.model import OnnxModel
        from ser_edge.training.export import decision_for, update_metadata

        decision = decision_for(recipe.train.to_dict())  # how the runtime now decides with such a model
        if OnnxModel(out).decision != decision:
            update_metadata(out, {"ser_edge.decision": decision})
        return out
    import torch

    from ser_edge.training.data import FeatureCache, load_examples
    from ser_edge.training.export import decision_for, export_onnx, quantise_int8
    from ser_edge.training.protocols import fit

    torch.set_num_threads(threads)
    labels = list(SHARED_LABELS)
    clips = [c for name in sorted(corpora) if name != target for c in to_shared(corpora[name])]
    examples, _ = load_examples(clips, labels, FeatureCache(recipe.features))
    start = time.time()
    result = fit(examples, recipe.model_config(len(labels)), recipe.train, log=None,
                 augment=recipe.augmenter(FeatureCache(recipe.features)))
    sources = sorted(n for n in corpora if n != target)
    training = {"corpora": sources, "clips": len(examples), "best_epoch": result.best_epoch,
                "recipe": "default", "seed": 0}
    fp32 = export_onnx(result.model.cpu(), recipe.features, labels, work / f"base-without-{target}.onnx",
                       training=training, decision=decision_for(recipe.train.to_dict()))
    quantise_int8(fp32, out)
    made_with.write_text(json.dumps(wanted, indent=1))
    print(f"base without {target}: trained on {', '.join(sources)} ({len(examples)} clips) in "
          f"{time.time() - start:.0f} s, best epoch {result.best_epoch}", flush=True)
    return out


def label_sets(corpus: str, clips: Sequence[Clip]) -> dict[str, list[Optional[str]]]:
    """Per label set, each clip's label in it (None: not in the set)."""
    shared = {c.path: c.label for c in to_shared(clips)}
    sets = {"4 classes": [shared.get(c.path) for c in clips],
            "arousal high/low": [AROUSAL.get(shared.get(c.path, ""), None) for c in clips]}
    if len({c.label for c in clips}) > 4:
        sets[f"all {len({c.label for c in clips})} classes"] = [c.label for c in clips]
    if corpus == "ravdess":
        sets["calm vs neutral"] = [c.label if c.label in ("calm", "neutral") else None for c in clips]
    return sets


def speaker_halves(speakers: Sequence[str], labels: Sequence[Optional[str]], rng) -> tuple[set, set]:
    """Two random halves of the speakers, each holding every label (redrawn until they do)."""
    names = sorted(set(speakers))
    wanted = {lab for lab in labels if lab is not None}
    for _ in range(1000):
        order = list(rng.permutation(names))
        a, b = set(order[: len(order) // 2]), set(order[len(order) // 2:])
        if all({lab for s, lab in zip(speakers, labels) if s in half and lab is not None} == wanted
               for half in (a, b)):
            return a, b
    raise RuntimeError("no split of the speakers holds every label on both sides")


def run_corpus(corpus: str, clips: list[Clip], base: Path, egemaps: np.ndarray, egemaps_kept: list[int],
               draws: int, shots: Sequence[int], work: Path) -> tuple[list[dict], dict]:
    import onnx

    from ser_edge.training.anchors import make_classifier

    labelled = [LabelledClip(c.path, c.label, c.speaker) for c in clips]
    start = time.time()
    emb = embed_clips(base, onnx.load(str(base)), labelled)
    embed_s = time.time() - start
    print(f"{corpus}: {len(clips)} clips through the base in {embed_s:.0f} s, "
          f"{len(emb.problems)} without speech or unreadable", flush=True)
    base_labels = json.loads({p.key: p.value for p in onnx.load(str(base)).metadata_props}["ser_edge.labels"])
    eg_row = {i: j for j, i in enumerate(egemaps_kept)}
    speakers = [c.speaker for c in clips]
    rows = []
    check = {}
    for set_name, set_labels in label_sets(corpus, clips).items():
        names = sorted({lab for lab in set_labels if lab is not None})
        for draw in range(draws):
            rng = np.random.default_rng(1000 * draw + 17)
            adapt_half, test_half = speaker_halves(speakers, set_labels, rng)
            test = [i for i, (s, lab) in enumerate(zip(speakers, set_labels)) if s in test_half and lab is not None]
            true = [names.index(set_labels[i]) for i in test]
            pool = {lab: [i for i, (s, l_) in enumerate(zip(speakers, set_labels))
                          if s in adapt_half and l_ == lab and i not in emb.problems and i in eg_row]
                    for lab in names}
            for k in shots:
                chosen = [i for lab in names for i in rng.permutation(pool[lab])[:k]]
                y = [names.index(set_labels[i]) for i in chosen]
                counts = [len(emb.embeddings[i]) for i in chosen]
                head = fit_head(np.concatenate([emb.embeddings[i] for i in chosen]), np.repeat(y, counts),
                                len(names), balanced_weights(y, counts))
                # A test clip without a speech window gets no label and counts as wrong.
                pred = [int(head.probabilities(emb.embeddings[i]).mean(0).argmax()) if i not in emb.problems
                        else (t + 1) % len(names) for i, t in zip(test, true)]
                row = {"corpus": corpus, "set": set_name, "draw": draw, "k": k, "labels": names,
                       "adapt_clips": len(chosen), "adapt_speakers": len(adapt_half), "test_clips": len(test),
                       "test_per_label": {lab: true.count(j) for j, lab in enumerate(names)},
                       "adapted": report(true, pred, names)["uar"]}
                if sorted(base_labels) == names:
                    bp = [names.index(emb.base_labels[i]) if i not in emb.problems else (t + 1) % len(names)
                          for i, t in zip(test, true)]
                    row["base"] = report(true, bp, names)["uar"]
                svm = make_classifier("svm").fit(egemaps[[eg_row[i] for i in chosen]], y)
                ep = [int(svm.predict(egemaps[[eg_row[i]]])[0]) if i in eg_row else (t + 1) % len(names)
                      for i, t in zip(test, true)]
                row["egemaps_svm"] = report(true, ep, names)["uar"]
                rows.append(row)
                if set_name == "4 classes" and draw == 0 and k == 10:
                    check = shipped_check(base, head, names, [clips[i] for i in test], pred, work / corpus)
    return rows, {"embed_s": embed_s, "check": check, "no_speech_or_unreadable": len(emb.problems)}


def shipped_check(base: Path, head, names, test: Sequence[Clip], pred: Sequence[int], folder: Path) -> dict:
    """Write the adapted model as `ser-edge adapt` does and score the test clips with Recognizer:
    the labels must be the ones computed from the cached embeddings."""
    import onnx

    from ser_edge.recognizer import Recognizer

    path = write_adapted(onnx.load(str(base)), head, names, folder / "adapted-k10.onnx", {"check": True})
    rec = Recognizer(path, threads=1)
    got = [rec.predict_file(c.path).label for c in test]
    speech = [(g, p) for g, p in zip(got, pred) if g is not None]  # clips without speech have no label
    return {"clips": len(speech), "same_label": sum(g == names[p] for g, p in speech),
            "no_speech": len(got) - len(speech)}


def measure_adapt(clips: Sequence[Clip], sizes: Sequence[int], work: Path) -> list[dict]:
    """Wall time and peak memory of the `ser-edge adapt` command for `sizes` clips, one CPU thread."""
    out = []
    rng = np.random.default_rng(0)
    for n in sizes:
        chosen = [clips[i] for i in sorted(rng.permutation(len(clips))[:n])]
        manifest = work / f"manifest-{n}.csv"
        manifest.write_text("path,label,speaker\n" + "".join(f"{c.path.resolve()},{c.label},{c.group}\n" for c in chosen))
        code = ("import sys, time; from ser_edge.cli import main; t = time.perf_counter(); sys.argv = "
                f"['ser-edge', 'adapt', '{manifest}', '-o', '{work / f'adapt-{n}.onnx'}'];\n"
                "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
                "hwm = [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]\n"
                "print(time.perf_counter() - t, hwm)")  # VmHWM: this process's peak (ru_maxrss keeps the parent's)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if result.returncode:
            raise RuntimeError(f"ser-edge adapt failed on {manifest}: {result.stderr[-2000:]}")
        seconds, rss_kb = result.stdout.strip().splitlines()[-1].split()
        audio_s = sum(_duration(c.path) for c in chosen)
        out.append({"clips": n, "audio_s": round(audio_s, 1), "wall_s": round(float(seconds), 2),
                    "peak_rss_mb": round(int(rss_kb) / 1024, 1)})
        print(f"adapt on {n} clips ({audio_s:.0f} s of audio): {float(seconds):.1f} s, "
              f"peak {int(rss_kb) / 1024:.0f} MB", flush=True)
    return out


def _duration(path: Path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration


def _mean_sd(values: Sequence[float]) -> str:
    v = 100 * np.asarray(values)
    return f"{v.mean():.1f} ± {v.std():.1f}" if len(v) > 1 else f"{v.mean():.1f}"


def write_page(rows: list[dict], meta: dict, out: Path) -> None:
    lines = ["# `ser-edge adapt`: K-shot curves", "",
             "Written by `python -m ser_edge.training.kshot` (see its docstring for the protocol). UAR in %, mean ± "
             f"sd over {meta['draws']} draws; each draw splits the target's speakers in two halves, adapts on K "
             "clips per label from one half and tests on every clip of the other half (speaker-independent). "
             "The base model of each corpus never heard that corpus: it is the default recipe trained on the "
             "other two (4 classes). eGeMAPS + SVM is trained on the same K clips. Chance is 100 / labels.", "",
             "| corpus | label set | K per label | test clips | adapted | base as it is | eGeMAPS + SVM |",
             "|---|---|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["corpus"], r["set"], r["k"]) for r in rows}, key=lambda t: (t[0], t[1], t[2]))
    for corpus, set_name, k in keys:
        sel = [r for r in rows if (r["corpus"], r["set"], r["k"]) == (corpus, set_name, k)]
        base = _mean_sd([r["base"] for r in sel]) if "base" in sel[0] else "-"
        lines.append(f"| {TITLES[corpus]} | {set_name} ({len(sel[0]['labels'])}) | {k} | "
                     f"{int(np.mean([r['test_clips'] for r in sel]))} | {_mean_sd([r['adapted'] for r in sel])} | "
                     f"{base} | {_mean_sd([r['egemaps_svm'] for r in sel])} |")
    wins = sum(np.mean([r["adapted"] for r in rows if (r["corpus"], r["set"], r["k"]) == key]) >
               np.mean([r["egemaps_svm"] for r in rows if (r["corpus"], r["set"], r["k"]) == key]) for key in keys)
    lines += ["", f"The adapted model is ahead of eGeMAPS + SVM on {wins} of {len(keys)} rows.", "",
              "![K-shot curves](kshot.png)", "",
              "## Through the shipped path",
              "For draw 0, K = 10, 4 classes, the adapted model was written as `ser-edge adapt` writes it and each "
              "test clip scored by `Recognizer`: " + "; ".join(
                  f"{TITLES[c]} {v['check']['same_label']} of {v['check']['clips']} clips with speech got the label of "
                  f"the figures above ({v['check']['no_speech']} without speech count as wrong in both)" for c, v in meta["corpora"].items()) + ".", "",
              "## Time and memory of `ser-edge adapt` (one CPU thread)",
              "The command's work (reading the clips, the base model over every window, the fit, writing the "
              "model and report), timed from its call in a fresh process (Python start-up and imports, about "
              f"0.4 s, not counted); peak memory is the process's whole resident peak. On {meta['machine']}:", "",
              "| clips | audio (s) | wall time (s) | peak memory (MB) |", "|---:|---:|---:|---:|"]
    lines += [f"| {m['clips']} | {m['audio_s']:.0f} | {m['wall_s']:.1f} | {m['peak_rss_mb']:.0f} |"
              for m in meta["adapt_cost"]]
    lines += ["", "Base models: " + "; ".join(f"without {TITLES[c]}: trained on "
                                              + ", ".join(TITLES[s] for s in v["base_sources"])
                                              for c, v in meta["corpora"].items()) + ".",
              "Licences: URDU is research-only and RAVDESS non-commercial; models adapted or trained on them "
              "inherit those terms.", ""]
    (out / "KSHOT.md").write_text("\n".join(lines))


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r["corpus"], r["set"]) for r in rows})
    cols = 4
    fig, axes = plt.subplots((len(panels) + cols - 1) // cols, cols, figsize=(4 * cols, 3.2 * ((len(panels) + 3) // 4)),
                             squeeze=False)
    for ax, (corpus, set_name) in zip(axes.flat, panels):
        sel = [r for r in rows if (r["corpus"], r["set"]) == (corpus, set_name)]
        ks = sorted({r["k"] for r in sel})
        for key, name, style in (("adapted", "adapted", "o-"), ("egemaps_svm", "eGeMAPS + SVM", "s--"),
                                 ("base", "base as it is", "^:")):
            if key not in sel[0]:
                continue
            m = [100 * np.mean([r[key] for r in sel if r["k"] == k]) for k in ks]
            s = [100 * np.std([r[key] for r in sel if r["k"] == k]) for k in ks]
            ax.errorbar(ks, m, yerr=s, fmt=style, capsize=3, label=name)
        ax.axhline(100 / len(sel[0]["labels"]), color="grey", lw=0.8)
        ax.set_title(f"{TITLES[corpus]}: {set_name}", fontsize=9)
        ax.set_xticks(ks)
        ax.set_xlabel("clips per label (K)")
        ax.set_ylabel("UAR %")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "kshot.png", dpi=110)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in READERS:
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/adapt"))
    parser.add_argument("--work", type=Path, default=Path("build/kshot"))
    parser.add_argument("--draws", type=int, default=5)
    parser.add_argument("--shots", type=int, nargs="+", default=list(SHOTS))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    from ser_edge.training.anchors import embed_clips as embed_anchor
    from ser_edge.training.anchors import opensmile_embedder

    args.out.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    corpora = read_corpora({n: getattr(args, n) for n in READERS}, "default")
    rows, meta = [], {"draws": args.draws, "shots": args.shots, "corpora": {},
                      "machine": f"{platform.processor() or platform.machine()}, Python {platform.python_version()}"}
    for target in sorted(corpora):
        base = base_model(target, corpora, args.work, args.threads)
        clips = corpora[target]
        eg = embed_anchor(opensmile_embedder("eGeMAPSv02"), [c.path for c in clips], progress=True)
        corpus_rows, info = run_corpus(target, clips, base, eg.X, eg.kept, args.draws, args.shots,
                                       args.work)
        rows += corpus_rows
        meta["corpora"][target] = {**info, "base_sources": sorted(n for n in corpora if n != target)}
    every = [c for name in sorted(corpora) for c in to_shared(corpora[name])]
    meta["adapt_cost"] = measure_adapt(every, (50, 500), args.work)
    (args.out / "kshot.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    write_page(rows, meta, args.out)
    plot(rows, args.out)
    print((args.out / "KSHOT.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
