"""Ablation of the training recipe on the development speakers: each row changes one thing
from the row it names, and the recipe is chosen here, never on a speaker that a published
figure is tested on.

    python -m ser_edge.training.ablation --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --ravdess ../shared/data/ravdess --out results/ablation [--rows NAME ...] [--seeds 0 1 2] [--jobs N]

The development protocol uses only the development speakers (`splits.DEVELOPMENT_SPEAKERS`:
about a quarter of each corpus), 4 shared classes, utterance level:
- dev-joint: the three corpora's development speakers pooled, 4 speaker-grouped folds
  (training on the other development speakers only), UAR per corpus;
- dev-cross: train on two corpora's development speakers, test on the third's.
A row's score is the mean of those six UARs over its seeds; the row with the highest
score is the chosen recipe (OUT/choice.json). Training sets are small (about 230 clips),
so small differences are noise: the table gives each row's spread over seeds.
Each run is a JSON file under OUT/runs and is reused when the command runs again.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Optional, Sequence

from ser_edge.training.corpora import SHARED_LABELS, Clip, outside, to_shared
from ser_edge.training.recipes import RECIPES, Recipe
from ser_edge.training.splits import is_development

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
_row("combo", "pool3", "all single changes that helped at once: class weights, cosine/40 epochs/UAR stopping, "
     "prosody, SpecAugment", features={"blocks": ["logmel", "prosody"]},
     train={"balance": "weights", "max_epochs": 40, "patience": 10, "schedule": "cosine", "monitor": "uar",
            "spec_augment": (2, 8, 2, 20)})
_row("combo-noise", "combo", "+ noisy copies: pink 15 dB and babble 15 dB", augment=("pink:15", "babble:15"))
_row("combo-speed", "combo", "+ speed-perturbed copies at 0.9 and 1.1", augment=("speed:0.9", "speed:1.1"))
_row("combo-level", "combo", "gain-only window normalisation", model={"normalise": "level"})
_row("seedfeat", "pool3", "seed features (spectrogram+MFCC) instead of log-mel", features="seed")
_row("combo-crop", "combo", "random 2 s crops of training clips (the runtime's analysis window)",
     train={"crop_frames": 200})
_row("combo-large", "combo", "Bi-LSTM 256/128, dense 128", model={"hidden1": 256, "hidden2": 128, "dense": 128})
# Second round, from the chosen row: each of its parts taken out, and two additions.
_row("level-no-prosody", "combo-level", "without the prosody block", features={"blocks": ["logmel"]})
_row("level-no-specaug", "combo-level", "without SpecAugment", train={"spec_augment": (0, 0, 0, 0)})
_row("level-no-pool", "combo-level", "without 3-frame pooling", model={"subsample": 1})
_row("level-no-deltas", "combo-level", "without deltas", model={"deltas": 0})
_row("level-undersample", "combo-level", "undersampling instead of class weights", train={"balance": "undersample"})
_row("level-crop", "combo-level", "+ random 2 s crops of training clips", train={"crop_frames": 200})
_row("level-speed", "combo-level", "+ speed-perturbed copies at 0.9 and 1.1", augment=("speed:0.9", "speed:1.1"))
# Third round, from the default recipe: a Whisper-base teacher (training/teacher.py), needs --teacher.
_row("teacher-kd", "level-no-deltas", "distillation: 0.5 x KL to the teacher's cross-fitted probabilities at T = 2",
     train={"distill": 0.5, "temperature": 2.0})
_row("teacher-emb", "level-no-deltas", "+ the pooled attention vector, through a training-only projection, "
     "regresses the teacher's pooled embedding (cosine, weight 1)", train={"embed_distill": 1.0})
_row("teacher-both", "teacher-kd", "+ the embedding loss of teacher-emb", train={"embed_distill": 1.0})
# Fourth round, from the default recipe, chosen by the "clean+noise" rule (run with --rule clean+noise):
# utterance statistics beside the attention, and multi-condition training for noise.
_row("stats", "level-no-deltas", "+ window mean and std of every standardised frame value beside the attention "
     "context (utterance functionals)", model={"stats": True})
_row("multicond", "level-no-deltas", "+ one noisy copy per clip: white, pink or babble at 0-20 dB, drawn per clip",
     augment=("mixed:0-20",))
_row("stats-multicond", "stats", "+ the noisy copies of multicond", augment=("mixed:0-20",))
# Fifth round: the person's own baseline (ln F0 and ln energy relative to the speaker's median
# over voiced frames, from all of the speaker's clips: the stand-in for a running baseline).
_row("baseline", "multicond", "ln F0 and ln energy relative to the speaker's median over voiced frames "
     "(every clip of the speaker; in noise, of the speaker's noisy clips); energy keeps its window level",
     baseline="speaker")
_row("baseline-utt", "multicond", "ln F0 and ln energy relative to the recording's own median over voiced frames "
     "(what a stream holds after one utterance); energy keeps its window level", baseline="utterance")
# Sixth round: invariance to the corpus or the speaker (a training-only adversary).
_row("adv-corpus", "multicond", "+ a corpus classifier on the pooled attention vector through gradient reversal "
     "(weight ramping to 0.5; training only)", train={"adversary": "corpus", "adversary_weight": 0.5})
_row("adv-speaker", "multicond", "+ a speaker classifier on the pooled attention vector through gradient reversal "
     "(weight ramping to 0.5; training only)", train={"adversary": "speaker", "adversary_weight": 0.5})
# The teacher's distillation on top of the shipped recipe (measured on the published joint
# protocol, where its heads are fitted on hundreds of clips rather than the development set's few).
_row("multicond-kd", "multicond", "distillation: 0.5 x KL to the teacher's cross-fitted probabilities at T = 2",
     train={"distill": 0.5, "temperature": 2.0})
# Seventh round: the speaker adversary told each clip's label, so speakers who hold one or two
# classes (most of URDU's) do not make it push the emotion out of the encoder with the speaker.
_row("adv-speaker-label", "adv-speaker", "the speaker classifier also sees each clip's label (one-hot, beside the "
     "reversed attention vector)", train={"adversary_given_label": True})
# Eighth round: every label of the clips' own corpora through a training-only head, so the clips
# outside the 4 shared classes (EmoDB boredom/disgust/fear, RAVDESS calm/fearful/disgust/surprised)
# train the encoder too.
_row("own-labels", "multicond", "+ a training-only head classifying each clip among all labels of its corpus "
     "(weight 0.5); the training speakers' clips outside the 4 classes train through it",
     train={"own_labels": 0.5})
# Ninth round: the speaker adversary told only the speakers who hold every class of the task
# (none of URDU's), so it cannot push the emotion out with a speaker who holds one.
_row("adv-speaker-complete", "adv-speaker", "the speaker classifier tells apart only the speakers whose training "
     "clips hold every class (none of URDU's)", train={"adversary_complete": True})
# Tenth round: the teacher's encoder frames as dense, label-free targets (each LSTM step regresses
# the teacher frame at the same relative time; noisy copies keep their clean clip's frames).
_row("frame-kd", "multicond", "+ each step of the second LSTM, through a training-only projection, regresses the "
     "teacher's encoder frame at the same time (cosine, weight 1)", train={"frame_distill": 1.0})
# Eleventh round: the deltas and delta-deltas of the round-1 recipe (combo-level) on top of the
# noisy copies; the second round took them out by the narrowest margin of its rule.
_row("multicond-deltas", "multicond", "+ deltas and delta-deltas (as combo-level)", model={"deltas": 2})
# Twelfth round: train on what the runtime scores. The bundled model's card scores its held-out
# clips through the shipped path (then: speech windows of 2 s every 0.5 s, mean of the windows) well
# below the same models on whole clips; here each training clip is cut to those very windows.
_row("multicond-windows", "multicond-deltas", "each epoch every training clip cut to one of the runtime's analysis "
     "windows over its speech (2 s every 0.5 s, the voice-activity gate); validation on the mean of a clip's "
     "windows", train={"windows": (2.0, 0.5)})
# Fourteenth round: the runtime now decides each speech segment by one pass over it with 0.3 s of
# context; here every training clip is cut to those very passes (whole utterances, without the
# corpus's own lead-in and tail beyond 0.3 s).
_row("multicond-segments", "multicond-deltas", "each epoch every training clip cut to one of its speech segments "
     "with 0.3 s of context either side (what the runtime decides on); validation as the runtime decides",
     train={"segments": 0.3})
# Fifteenth round: the window's level taken as a power-weighted mean of its frames' log levels.
# With the plain mean, the near-silent frames a window holds (a corpus's lead-in, pauses) pull
# its level down and lift every speech frame after normalisation: digital silence before a
# segment moved the development speakers' RAVDESS UAR as much as the corpus's own lead-in did.
# Also: the segments of multicond-segments, widened each epoch by random amounts up to the clip's
# edges, so that the model sees every amount of context between the runtime's and the whole clip.
_row("multicond-segments-widen", "multicond-segments", "each epoch the drawn segment widened on each side by a "
     "random amount up to the clip's edge (from the segment with 0.3 s of context to the whole clip)",
     train={"segments_widen": True})
# And: no training clip keeps a corpus's digital silence. Each clean clip is replaced by a copy
# with a faint stationary floor (white or pink at 25-45 dB SNR); the noisy copy is kept.
_row("multicond-floor", "multicond-deltas", "each clean training clip replaced by a copy with a faint floor "
     "(white or pink noise at a random 25 to 45 dB SNR)", augment=("mixed:0-20", "floor:25-45"))
# Seventeenth round: models trained over a faint floor meet digital silence at run time (RAVDESS
# holds it around the speech), where they score better with a faint noise added; here every
# value is raised to at least the window's loudest frame level less 50 dB before the level is taken.
_row("multicond-floor-clamp", "multicond-floor", "every log-mel and log-energy value raised to at least the window's "
     "loudest frame level less 50 dB (11.5 in natural-log units) before the level is taken", model={"floor": 11.5})
# Eighteenth round: mixup of the pooled attention vectors (Beta(0.4, 0.4) per batch; the loss
# mixes the two labels' cross-entropies alike), a regulariser for corpora of a few hundred clips.
_row("multicond-floor-mixup", "multicond-floor", "mixup of the pooled attention vectors in random pairs "
     "(one Beta(0.4, 0.4) weight per batch; the loss is the same mix of the two labels' cross-entropies)",
     train={"mixup": 0.4})
_row("multicond-deltas-power", "multicond-deltas", "the window's level as the power-weighted mean of its frames' "
     "log levels (near-silent frames hardly count)", model={"normalise": "level-power"})


def resolve(name: str) -> Recipe:
    """The recipe of a row: its parent's with the row's overrides (the seed row is the seed recipe)."""
    parent, _, overrides = ROWS[name]
    base = RECIPES["seed"] if not parent else resolve(parent)
    return base.derive(**overrides)


def transductive(name: str) -> bool:
    """Whether a row's recipe needs other recordings of the test speaker (a speaker-level
    baseline): such a row can be measured but not chosen, since nothing at run time has them."""
    return resolve(name).baseline == "speaker"


def dev_tasks(corpora: dict[str, list[Clip]], folds: int = 4, noise: bool = False):
    """The development protocol's tasks over the development speakers of the corpora (with
    `noise`, ser-edge runs also score the test clips in white, pink and babble at 10 dB)."""
    from ser_edge.training.comparison import TITLES, Task, _speaker_folds

    shared = {c: [x for x in to_shared(clips) if is_development(x.group)] for c, clips in corpora.items()}
    extra = {c: [x for x in outside(clips, SHARED_LABELS) if is_development(x.group)] for c, clips in corpora.items()}
    pool = [x for c in sorted(shared) for x in shared[c]]
    tasks = [Task("dev-joint", "development speakers pooled (4 classes)", "dev-joint", list(SHARED_LABELS), pool,
                  _speaker_folds(pool, folds, is_development, is_development), noise=noise,
                  extra=[x for c in sorted(extra) for x in extra[c]])]
    for c in sorted(shared):
        train = [x for o in sorted(shared) if o != c for x in shared[o]]
        tasks.append(Task(f"dev-cross-{c}", f"development speakers: others → {TITLES[c]}", "dev-cross",
                          list(SHARED_LABELS), train + shared[c],
                          [(list(range(len(train))), list(range(len(train), len(train) + len(shared[c]))))],
                          noise=noise, extra=[x for o in sorted(extra) if o != c for x in extra[o]]))
    return tasks


def row_scores(tasks, summary: dict, system: str) -> Optional[dict]:
    """{metric: [per seed]} of one row: the six development UARs and their mean."""
    from ser_edge.training.comparison import TITLES

    out: dict = {}
    noisy: dict = {}  # (noise kind, column) -> per seed
    for task in tasks:
        entry = summary.get(task.name, {}).get(system)
        if entry is None:
            return None
        if task.name == "dev-joint":
            for c, values in entry["by_corpus"].items():
                out[f"joint {TITLES[c]}"] = values
            for k, by in entry.get("noise_by_corpus", {}).items():
                for c, values in by.items():
                    noisy[(k, f"joint {TITLES[c]}")] = values
        else:
            column = f"→ {TITLES[task.name.removeprefix('dev-cross-')]}"
            out[column] = entry["uar"]
            for k, values in entry.get("noise", {}).items():
                noisy[(k, column)] = values
    seeds = min(len(v) for v in out.values())
    out = {k: v[:seeds] for k, v in out.items()}
    out["mean"] = [statistics.fmean(v[i] for v in out.values()) for i in range(seeds)]
    kinds = sorted({k for k, _ in noisy})
    if kinds and len(noisy) == len(kinds) * (len(out) - 1) and min(len(v) for v in noisy.values()) >= seeds:
        for k in kinds:
            out[f"mean {k} 10 dB"] = [statistics.fmean(v[i] for (kk, _), v in noisy.items() if kk == k)
                                      for i in range(seeds)]
    return out


#: How the chosen row is picked: "clean", the highest mean of the six development UARs;
#: "clean+noise", the highest mean of that figure and the same six UARs with the test clips
#: in white, pink and babble noise at 10 dB (averaged over the three), so a row that gains
#: in noise what it loses clean (or the reverse) is weighed by both.
RULES = ("clean", "clean+noise")


def rule_score(scores: dict, rule: str) -> Optional[float]:
    """A row's score under `rule` (None: the row lacks the noisy figures the rule needs)."""
    clean = statistics.fmean(scores["mean"])
    if rule == "clean":
        return clean
    noisy = [statistics.fmean(v) for k, v in scores.items() if k.startswith("mean ") and k.endswith(" 10 dB")]
    if len(noisy) != 3:
        return None
    return (clean + statistics.fmean(noisy)) / 2


def seed_scores(scores: dict, rule: str) -> Optional[list[float]]:
    """The rule's score of each seed of a row (None: the row lacks the noisy figures)."""
    clean = scores["mean"]
    if rule == "clean":
        return list(clean)
    noisy = [v for k, v in scores.items() if k.startswith("mean ") and k.endswith(" 10 dB")]
    if len(noisy) != 3:
        return None
    return [(c + statistics.fmean(n[i] for n in noisy)) / 2 for i, c in enumerate(clean)]


def paired_lines(tasks, summary: dict, rows: Sequence[str], rule: str) -> list[str]:
    """Per-seed differences of each row from the row it changes (same seeds, same folds): a
    change that helps with every seed is more telling than a difference of means."""
    lines = []
    for name in rows:
        parent = ROWS[name][0]
        if parent not in rows:
            continue
        a, b = row_scores(tasks, summary, f"ser-edge ({name})"), row_scores(tasks, summary, f"ser-edge ({parent})")
        if a is None or b is None:
            continue
        n = min(len(a["mean"]), len(b["mean"]))
        clean = [x - y for x, y in zip(a["mean"][:n], b["mean"][:n])]
        sa, sb = seed_scores(a, rule), seed_scores(b, rule)
        score = [x - y for x, y in zip(sa[:n], sb[:n])] if sa and sb else []
        shown = score or clean
        lines.append(f"| {name} | {parent} | {', '.join(f'{100 * d:+.1f}' for d in clean)} | "
                     f"{', '.join(f'{100 * d:+.1f}' for d in score) or '-'} | {sum(d > 0 for d in shown)} of {n} |")
    if not lines:
        return []
    return ["Paired differences from the row each row changes (one model per seed, same seeds and folds):", "",
            "| row | from | Δ clean mean per seed | Δ score per seed | seeds better |", "|---|---|---|---|---:|",
            *lines, ""]


def interval_lines(tasks, results: dict, rows: Sequence[str], rule: str, draws: int = 2000) -> list[str]:
    """Each row's score against the row it changes, with a 95 % interval over draws of the
    development test speakers (`paired.bootstrap`): how far other speakers could move the
    difference, which the seeds' spread does not show. `results`: `comparison.collect`'s."""
    from ser_edge.training.comparison import NOISE, clip_id
    from ser_edge.training.paired import bootstrap, paired_item

    groups = {clip_id(c): c.group for t in tasks for c in t.clips}
    corpora = sorted({c.corpus for t in tasks for c in t.clips})
    conditions = [(None, 1.0)] + ([(k, 1 / len(NOISE)) for k in NOISE] if rule != "clean" else [])
    lines = []
    for name in rows:
        parent = ROWS[name][0]
        if parent not in rows:
            continue
        cells = []
        for a, b in ((f"ser-edge ({name})", f"ser-edge ({parent})"),
                     (f"ser-edge ({name} ×3)", f"ser-edge ({parent} ×3)")):
            items = [paired_item(results, groups, "dev-joint", a, b, noise=k, corpus=c, weight=w,
                                 name=f"joint {c} {k or 'clean'}") for k, w in conditions for c in corpora]
            items += [paired_item(results, groups, f"dev-cross-{c}", a, b, noise=k, weight=w,
                                  name=f"→ {c} {k or 'clean'}") for k, w in conditions for c in corpora]
            if any(item is None for item in items):
                cells.append("- | - | -")
                continue
            r = bootstrap(items, draws)["mean"]
            cells.append(f"{100 * r['delta']:+.1f} | {100 * r['low']:+.1f} to {100 * r['high']:+.1f} | "
                         f"{100 * r['ahead']:.0f} %")
        if any(c != "- | - | -" for c in cells):
            lines.append(f"| {name} | {parent} | {' | '.join(cells)} |")
    if not lines:
        return []
    what = "score" if rule != "clean" else "mean"
    return [f"The same differences with a 95 % interval over {draws} draws of the development test speakers "
            f"(each corpus's speakers drawn with replacement; Δ {what}, A = the row, B = the row it changes; "
            "`python -m ser_edge.training.paired` does the same on the published protocols):", "",
            f"| row | from | Δ {what}, one model | interval | draws ahead | Δ {what}, ×3 | interval | draws ahead |",
            "|---|---|---:|---|---:|---:|---|---:|", *lines, ""]


def write_table(tasks, summary: dict, rows: Sequence[str], out: Path,
                rule: str = "clean", results: Optional[dict] = None) -> tuple[str, Optional[str]]:
    """OUT/ABLATION.md with every row that has results (and, given `comparison.collect`'s
    `results`, speaker intervals of each row's difference); returns (its text, the chosen row)."""
    from ser_edge.training.comparison import _cell

    table, best, best_score = [], None, None
    columns = None
    systems = {s for t in summary.values() for s in t}
    for name in rows:
        # A row, then the ensemble of its seeds' models where it has 2+ seeds ("name ×3").
        variants = [(name, f"ser-edge ({name})")] + [
            (s[len("ser-edge ("):-1], s) for s in sorted(systems) if s.startswith(f"ser-edge ({name} ×")]
        for label, system in variants:
            scores = row_scores(tasks, summary, system)
            if scores is None:
                continue
            if columns is None:
                columns = list(scores)
                table += ["| row | from | change | seeds | " + " | ".join(columns)
                          + (" | score |" if rule != "clean" else " |"),
                          "|---|---|---|---:|" + "---:|" * (len(columns) + (rule != "clean"))]
            score = rule_score(scores, rule)
            if score is None or any(c not in scores for c in columns):
                continue
            if label == name:
                parent, what, _ = ROWS[name]
                seeds = str(len(scores["mean"]))
            else:
                n = int(label.rpartition("×")[2])
                parent, what, seeds = name, f"its {n} seeds' models as one ensemble (probabilities averaged)", \
                    f"1 of {n}"
            table.append(f"| {label} | {parent or '-'} | {what} | {seeds} | "
                         + " | ".join(_cell(scores[c]) for c in columns)
                         + (f" | {100 * score:.1f} |" if rule != "clean" else " |"))
            if not transductive(name) and (best_score is None or score > best_score):
                best, best_score = label, score
    marked = [r for r in rows if transductive(r)]
    text = "\n".join([
        "# Ablation on the development speakers", "",
        "UAR in %, mean ± sd over seeds, 4 shared classes, utterance level, development speakers only",
        "(splits.DEVELOPMENT_SPEAKERS); no speaker here is a test speaker of any published figure.",
        "`joint X`: the development speakers of the three corpora pooled, 4 speaker-grouped folds, UAR",
        "on corpus X's clips; `→ X`: trained on the other two corpora's development speakers, tested on",
        "X's. `mean`: the mean of the six. " + (
            "The row with the highest mean is the chosen recipe." if rule == "clean" else
            "`mean K 10 dB`: the same six UARs with the test clips mixed with noise K at 10 dB SNR. "
            "`score`: the mean of `mean` and the three noisy means averaged; the row with the highest "
            "score is the chosen recipe."), "",
        *table, "", *paired_lines(tasks, summary, rows, rule),
        *(interval_lines(tasks, results, rows, rule) if results is not None else []), *([f"{'Rows' if len(marked) > 1 else 'Row'} {', '.join(marked)} "
                        f"{'need' if len(marked) > 1 else 'needs'} other recordings of the test speaker (every "
                        "clip of the person, its own included) and no runtime has that: shown, never chosen.", ""]
                      if marked else []),
        (f"Chosen: **{best}** ({'mean' if rule == 'clean' else 'score'} {100 * best_score:.1f})."
                     if best else ""), ""])
    out.mkdir(parents=True, exist_ok=True)
    (out / "ABLATION.md").write_text(text)
    if best:
        name, _, n = best.partition(" ×")
        recipe = resolve(name).derive(ensemble=int(n)) if n else resolve(name)
        (out / "choice.json").write_text(json.dumps({"row": best, "rule": rule, "score": best_score,
                                                     "recipe": recipe.to_dict()}, indent=2))
    return text, best


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ser_edge.training.comparison import READERS, collect, read_corpora, run_jobs, summarise

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in READERS:
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("results/ablation"))
    parser.add_argument("--rows", nargs="*", default=list(ROWS), help="Rows to run (default: all).")
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="training processes (one thread each)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--table-only", action="store_true",
                        help="Run nothing; write OUT/ABLATION.md from the runs already in OUT.")
    parser.add_argument("--teacher", type=Path, default=None,
                        help="Whisper-base folder (CTranslate2) for the teacher rows (default: $SER_EDGE_TEACHER "
                             "or ~/.cache/ser-edge/teachers/whisper-base)")
    parser.add_argument("--rule", choices=RULES, default="clean",
                        help="how the chosen row is picked: clean UARs only, or clean and 10 dB noise equally "
                             "(which also scores every run's test clips in noise)")
    parser.add_argument("--max-epochs", type=int, default=None, help=argparse.SUPPRESS)  # quick checks only
    args = parser.parse_args(argv)
    unknown = [r for r in args.rows if r not in ROWS]
    if unknown:
        parser.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if args.teacher is not None:
        import os

        os.environ["SER_EDGE_TEACHER"] = str(args.teacher)  # read by the training processes
    corpora = read_corpora({n: getattr(args, n) for n in READERS}, "default")
    tasks = dev_tasks(corpora, noise=args.rule != "clean")
    runs = args.out / "runs"
    if not args.table_only:
        jobs = [(t.name, s, seed, row) for row in args.rows for seed in args.seeds for t in tasks
                for s in range(len(t.splits))]
        run_jobs(jobs, {t.name: t for t in tasks}, runs, args.jobs, args.device,
                 overrides={"max_epochs": args.max_epochs} if args.max_epochs else None)
    results = collect(runs, tasks)
    text, best = write_table(tasks, summarise(tasks, results), args.rows, args.out, args.rule, results)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
