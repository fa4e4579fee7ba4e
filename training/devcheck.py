"""The development check: one recipe row on the development speakers, scored as the runtime decides.

    python -m ser_edge.training.devcheck --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \
        --ravdess ../shared/data/ravdess --row multicond-deltas --out build/devcheck/multicond-deltas

The development protocol's joint task (its 4 speaker folds over the development speakers of
every corpus given; no clip of a card's or of the comparison's tests), and with `--cross` its
cross-corpus tasks (trained on the other corpora's development speakers, tested on one's):
per fold an ensemble of the row's recipe (`--members`, seeds 0..members-1) is trained,
exported and quantised to int8 (cached in `--out`/TASK, so a second run only scores), and
every held-out clip is scored through the runtime (`Recognizer`) with each decision:
"segment" (one pass over each speech segment with its context), "windows" (the mean of the
2 s windows), "blend" (per segment the mean of the two; what models trained on whole clips
ask for) and as one whole clip. The UAR of each corpus and their mean are printed and written to `--out`/DEVCHECK.md;
the labels per clip to `--out`/TASK/rows.json, in the form `paired --cards` compares (two
rows on the same clips, with an interval over draws of the development speakers):

    python -m ser_edge.training.paired --cards build/devcheck/A/dev-joint/rows.json \
        build/devcheck/B/dev-joint/rows.json --column segment

About 6 minutes for `multicond-deltas` on one CPU core (`--cross`: about 5 more); scoring alone takes
seconds.

`--lead-in` adds a probe of what the audio before a clip's first speech segment gives the
model: that segment with the runtime's 0.3 s of context, then with 0.7 s more before it taken
from the clip's own lead-in, from digital silence, from white noise at -60 dBFS and from the
lead-in of another held-out clip. `--path` adds the segment decision on each clip as a
sound server may deliver it: shifted by a fraction of a frame (2.5 to 7.1 ms of leading
silence), and resampled to 44.1 kHz by a quick resampler (soxr "QQ"), shifted, stored as
16-bit and resampled back by the runtime; the table's last lines say how often the label
differs from the file's and how far the probabilities move (mean over clips of the largest
change). `--floors` adds the segment decision with a faint stationary noise over the whole
clip, as in a quiet room: white at 50, 40 and 30 dB and pink at 40 dB below the speech.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from ser_edge.stream import CONTEXT_S

__all__ = ["DECISIONS", "FLOORS", "LEAD_INS", "PATHS", "floor_columns", "fold_models", "main", "path_lines", "score_clips", "table",
           "through_a_sound_server"]

DECISIONS = ("segment", "windows", "blend", "whole clip")
LEAD_INS = ("first segment", "+ own lead-in", "+ digital silence", "+ white -60 dBFS", "+ another clip's")
PATHS = ("sub-frame shift", "44.1 kHz path")
FLOORS = (("white", 50), ("white", 40), ("pink", 40), ("white", 30))  # a quiet room's floor, SNR over speech
EXTRA_S = 0.7  # the lead-in the probe adds before the segment's context (CONTEXT_S)


def fold_models(task, recipe, out: Path, members: int, device: str = "cpu",
                log: Callable[[str], None] = print) -> list[Path]:
    """The int8 model of every fold of `task` (trained, exported and quantised where `out` does
    not hold it yet)."""
    from ser_edge.training.comparison import _STATE, _examples
    from ser_edge.training.data import FeatureCache
    from ser_edge.training.export import decision_for, export_onnx, quantise_int8
    from ser_edge.training.protocols import fit_ensemble

    out.mkdir(parents=True, exist_ok=True)
    made_with = {"recipe": recipe.to_dict(), "members": members, "task": task.name,
                 "clips": [str(c.path) for c in task.clips]}
    record = out / "made_with.json"
    if record.is_file() and json.loads(record.read_text()) != json.loads(json.dumps(made_with)):
        raise ValueError(f"{out} holds fold models of another recipe, ensemble size or clip list; give another --out "
                         "(or empty it)")
    if not record.is_file() and any(out.glob("fold*.onnx")):
        raise ValueError(f"{out} holds fold models without a record of how they were made; give another --out")
    record.write_text(json.dumps(made_with, indent=1))
    _STATE.update(tasks={task.name: task}, device=device, overrides={})
    cache = FeatureCache(recipe.features)
    paths = []
    for n, (train, _) in enumerate(task.splits):
        path = out / f"fold{n}.int8.onnx"
        if not path.exists():
            start = time.perf_counter()
            always = task.always[n] if task.always else []
            model, _ = fit_ensemble(_examples(task, train, cache), recipe.model_config(len(task.labels)),
                                    recipe.train, members=members, augment=recipe.augmenter(cache),
                                    always=_examples(task, always, cache))
            fp32 = export_onnx(model, recipe.features, task.labels, out / f"fold{n}.onnx",
                               decision=decision_for(recipe.train.to_dict()))
            quantise_int8(fp32, path)
            log(f"fold {n}: trained in {time.perf_counter() - start:.0f} s")
        paths.append(path)
    return paths


def _lead_in(x: np.ndarray, start: int, rate: int) -> np.ndarray:
    """The EXTRA_S seconds of `x` before sample `start`."""
    return x[max(0, start - int(EXTRA_S * rate)):start]


def _context_start(first, rate: int) -> int:
    """The sample where the one pass over the segment of event `first` begins (its context)."""
    return max(0, int((first.start_s - CONTEXT_S) * rate))


def _lead_in_columns(model, x: np.ndarray, first, other: np.ndarray, rng: np.random.Generator) -> dict:
    """The labels of the probe's columns for a clip `x` whose first event is `first`; `other` is
    the lead-in of another clip."""
    from ser_edge.features import extract

    rate = model.feature_config.sample_rate
    a = _context_start(first, rate)
    b = min(len(x), int((first.end_s + CONTEXT_S) * rate))
    own = _lead_in(x, a, rate)
    before = {"first segment": x[:0], "+ own lead-in": own, "+ digital silence": np.zeros(len(own), np.float32),
              "+ white -60 dBFS": (1e-3 * rng.standard_normal(len(own))).astype(np.float32),
              "+ another clip's": other}
    out = {}
    for column, lead in before.items():
        p, _ = model.score(extract(np.concatenate([lead.astype(np.float32), x[a:b]]), model.feature_config))
        out[column] = model.labels[int(np.argmax(p))]
    return out


def through_a_sound_server(x: np.ndarray, rate: int, k: int) -> tuple[np.ndarray, int]:
    """`x` as a sound server may deliver it (the `k`-th of a few sample alignments): resampled to
    44.1 kHz by soxr's quick resampler, after 97 + 113 (k % 4) samples of silence, as 16-bit."""
    import soxr

    up = soxr.resample(x, rate, 44100, quality="QQ")
    up = np.concatenate([np.zeros(97 + 113 * (k % 4), np.float32), up.astype(np.float32)])
    return np.round(np.clip(up, -1, 1) * 32767).astype(np.float32) / 32767, 44100


def path_lines(rows: Sequence[dict]) -> list[str]:
    """How often each path column's label differs from the file's segment decision, and the mean
    over clips of the largest change of a probability."""
    lines = []
    for column in PATHS:
        both = [r for r in rows if r.get(f"p {column}") and r.get("p segment")]
        if both:
            flips = np.mean([r[column] != r["segment"] for r in both])
            moved = np.mean([np.abs(np.subtract(r[f"p {column}"], r["p segment"])).max() for r in both])
            lines.append(f"{column}: label differs from the file's on {100 * flips:.1f} % of {len(both)} clips; "
                         f"largest probability change {moved:.3f} on average")
    return lines


def floor_columns() -> list[str]:
    return [f"{kind} {snr} dB" for kind, snr in FLOORS]


def _probabilities(prediction, labels: Sequence[str]) -> Optional[list[float]]:
    return [prediction.probabilities[label] for label in labels] if prediction.label else None


def score_clips(task, paths: Sequence[Path], lead_in: bool = False, threads: int = 1,
                path: bool = False, floors: bool = False) -> list[dict]:
    """Per held-out clip: its corpus, true label and the label of every column (with `path`,
    also the probabilities of the segment decision on the file and on each path; with
    `floors`, the segment decision with a faint noise over the whole clip)."""
    from ser_edge.training.noise import make_noise, mix_at_snr

    from ser_edge.audio import load
    from ser_edge.features import extract
    from ser_edge.recognizer import Recognizer

    rows = []
    rng = np.random.default_rng(0)
    for (_, test), path in zip(task.splits, paths):
        by = {d: Recognizer(str(path), threads=threads, decision=d) for d in ("segment", "windows", "blend")}
        model = by["segment"].model
        rate = model.feature_config.sample_rate
        audio = [load(task.clips[i].path, rate) for i in test]
        results = {d: [r.predict(x, rate) for x in audio] for d, r in by.items()}
        for j, i in enumerate(test):
            clip, x = task.clips[i], audio[j]
            whole, _ = model.score(extract(x, model.feature_config))
            row = {"clip": str(clip.path), "corpus": clip.corpus, "speaker": clip.group, "true": clip.label,
                   "segment": results["segment"][j].label, "windows": results["windows"][j].label,
                   "blend": results["blend"][j].label,
                   "whole clip": model.labels[int(np.argmax(whole))]}
            if path:
                seg = results["segment"][j]
                row["p segment"] = _probabilities(seg, model.labels)
                offset = np.concatenate([np.zeros(40 + 37 * (j % 3), np.float32), x])
                for column, (y, r) in zip(PATHS, ((offset, rate), through_a_sound_server(x, rate, j))):
                    got = by["segment"].predict(y, r)
                    row[column] = got.label
                    row[f"p {column}"] = _probabilities(got, model.labels)
            if floors:
                for (kind, snr), column in zip(FLOORS, floor_columns()):
                    noise = make_noise(kind, len(x), np.random.default_rng(int(i)))
                    row[column] = by["segment"].predict(mix_at_snr(x, noise, snr, rate), rate).label
            events = results["segment"][j].events
            if lead_in and events:
                k = (j + 1 + int(rng.integers(max(1, len(test) - 1)))) % len(test)  # another clip, drawn
                first_other = results["segment"][k].events
                start = _context_start(first_other[0], rate) if first_other else len(audio[k])
                other = _lead_in(audio[k], start, rate)
                row.update(_lead_in_columns(model, x, events[0], other, rng))
            rows.append(row)
    return rows


def table(rows: Sequence[dict], labels: Sequence[str], columns: Sequence[str]) -> str:
    """A markdown table: UAR (%) of every column per corpus (clips where it has a label; a clip
    without speech counts as a miss) and the mean over the corpora."""
    from ser_edge.training.metrics import report_with_misses

    columns = [c for c in columns if any(c in r for r in rows)]
    corpora = sorted({r["corpus"] for r in rows})
    lines = ["| corpus | clips | " + " | ".join(columns) + " |", "|---|---:|" + "---:|" * len(columns)]
    means = {c: [] for c in columns}
    for corpus in corpora:
        cells = []
        for c in columns:
            chosen = [r for r in rows if r["corpus"] == corpus and c in r]
            uar = 100 * report_with_misses([r["true"] for r in chosen], [r[c] for r in chosen], list(labels))["uar"]
            means[c].append(uar)
            cells.append(f"{uar:.1f}")
        lines.append(f"| {corpus} | {sum(r['corpus'] == corpus for r in rows)} | " + " | ".join(cells) + " |")
    lines.append("| mean | | " + " | ".join(f"**{np.mean(means[c]):.1f}**" for c in columns) + " |")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("urdu", "emodb", "ravdess"):
        parser.add_argument(f"--{name}", type=Path, help=f"the {name} corpus folder")
    parser.add_argument("--row", default="multicond-deltas", help="an ablation row or a recipe name")
    parser.add_argument("--out", type=Path, required=True, help="folder for the fold models and the table")
    parser.add_argument("--members", type=int, default=3, help="models per fold (seeds 0..members-1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=1, help="torch and ONNX Runtime threads")
    parser.add_argument("--lead-in", action="store_true", help="add the probe of the audio before the speech")
    parser.add_argument("--path", action="store_true", help="add the clips as a sound server may deliver them")
    parser.add_argument("--floors", action="store_true",
                        help="add the clips with a faint noise floor (white or pink, 50 to 30 dB below the speech)")
    parser.add_argument("--cross", action="store_true",
                        help="also the cross-corpus tasks: trained on the other corpora's development speakers")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    from ser_edge.training.ablation import dev_tasks
    from ser_edge.training.comparison import read_corpora
    from ser_edge.training.recipes import get_recipe

    torch.set_num_threads(args.threads)
    paths = {name: getattr(args, name) for name in ("urdu", "emodb", "ravdess") if getattr(args, name)}
    if len(paths) < 2:
        parser.error("give at least two corpora (--urdu, --emodb, --ravdess)")
    recipe = get_recipe(args.row).derive(train={"seed": 0, "device": args.device})
    tasks = dev_tasks(read_corpora(paths, args.row))
    chosen = [t for t in tasks if t.name == "dev-joint" or args.cross]
    columns = [*DECISIONS, *(LEAD_INS if args.lead_in else ()), *(PATHS if args.path else ()),
               *(floor_columns() if args.floors else ())]
    page = [f"# Development check: {args.row} ×{args.members}, int8", ""]
    for task in chosen:
        out = args.out / task.name
        try:
            models = fold_models(task, recipe, out, args.members, args.device)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        rows = score_clips(task, models, lead_in=args.lead_in, threads=args.threads, path=args.path,
                           floors=args.floors)
        (out / "rows.json").write_text(json.dumps({"row": args.row, "members": args.members, "task": task.name,
                                                   "clips": rows}, indent=1))
        text = "\n\n".join([table(rows, task.labels, columns), *path_lines(rows)])
        page += [f"## {task.name}: {task.title}", "", f"UAR (%) of its {len(rows)} held-out clips, through the "
                 "runtime.", "", text, ""]
        print(f"{task.name}: {task.title}\n{text}\n", flush=True)
    (args.out / "DEVCHECK.md").write_text("\n".join(page))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
