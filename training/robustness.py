"""The bundled model in noise, through the path that ships, on held-out speakers.

    python -m ser_edge.training.robustness --urdu ../shared/data/urdu --emodb ../shared/data/emodb-2s \\
        --ravdess ../shared/data/ravdess

The bundle command leaves each cross-validation fold's int8 model in build/default-model/
and the fold of every held-out clip in ser_edge/models/card_scores.json. Here each held-out
recording is mixed with white, pink and babble noise (five other speakers of its corpus) at
several SNRs (measured over speech, not over pauses: `noise.mix_at_snr`), the same noise as
the comparison's robustness columns (seed 0), and scored by its fold's model through
`Recognizer` (voice-activity gate, each speech segment decided by one pass over it with its
context) as a user would score a noisy recording. A recording with no speech found counts as
wrong, as on the card. Writes results/robustness/ROBUSTNESS.md and robustness.json, and the card's "In noise"
section.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Sequence


__all__ = ["SNRS", "main", "section"]

#: SNRs of the sweep, in dB (10 dB is the comparison's robustness column).
SNRS = (20.0, 10.0, 5.0, 0.0)


def main(argv: Optional[Sequence[str]] = None) -> int:
    from rich.progress import track

    from ser_edge.audio import load
    from ser_edge.model import DEFAULT_MODEL
    from ser_edge.stream import VadConfig
    from ser_edge.training.calibration import fold_recognizers, held_out_clips, with_section
    from ser_edge.training.comparison import READERS, TITLES, read_corpora
    from ser_edge.training.corpora import SHARED_LABELS
    from ser_edge.training.data import NoiseSpec, babble_talkers, noisy
    from ser_edge.training.metrics import report_with_misses
    from ser_edge.training.noise import NOISE_KINDS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in READERS:
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("build/default-model"))
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: results/robustness, or results/robustness/whole-band-gate)")
    parser.add_argument("--snr", type=float, nargs="*", default=list(SNRS), help="SNRs in dB (default: %(default)s)")
    parser.add_argument("--models", type=Path, default=DEFAULT_MODEL.parent,
                        help="folder of card_scores.json and MODEL_CARD.md (default: the bundled model's)")
    parser.add_argument("--whole-band-gate", action="store_true",
                        help="for comparison: the gate of earlier releases (energy of the whole band, frames below "
                             "-90 dBFS never speech), clean recordings scored again with it; the card is not touched")
    args = parser.parse_args(argv)
    args.out = args.out or Path("results/robustness" + ("/whole-band-gate" if args.whole_band_gate else ""))
    gate = VadConfig(band_hz=None, min_level_dbfs=-90.0) if args.whole_band_gate else None
    labels = list(SHARED_LABELS)
    corpora = read_corpora({n: getattr(args, n) for n in READERS}, "default", log=lambda s: None)
    try:
        rows, by_id = held_out_clips(args.models / "card_scores.json", corpora)
    except ValueError as err:
        parser.error(str(err))
    conditions = [(kind, snr) for kind in NOISE_KINDS for snr in args.snr]
    pred: dict[tuple[str, float], list[Optional[str]]] = {c: [None] * len(rows) for c in conditions}
    clean: list[Optional[str]] = [r["int8"] for r in rows]  # scored with the default gate by the bundle command
    for rec, held_out in fold_recognizers(args.work, rows, gate):
        for i in track(held_out, description=f"fold {rows[held_out[0]]['fold']}", transient=True):
            clip = by_id[rows[i]["clip"]]
            samples = load(clip.path, 16000)
            talkers = babble_talkers(clip, corpora[clip.corpus])
            if gate is not None:
                p = rec.predict(samples, 16000)
                clean[i] = p.label if p.windows else None
            for kind, snr in conditions:
                p = rec.predict(noisy(samples, clip.path, NoiseSpec(kind, snr), talkers if kind == "babble" else []),
                                16000)
                pred[(kind, snr)][i] = p.label if p.windows else None
    result: dict = {"clips": len(rows), "snr_db": list(args.snr), "kinds": list(NOISE_KINDS), "by_corpus": {},
                    "labels": {"clip": [r["clip"] for r in rows], "clean": clean,
                               **{f"{k}@{snr:g}": pred[(k, snr)] for k, snr in conditions}}}
    for corpus in sorted({r["corpus"] for r in rows}):
        sel = [i for i, r in enumerate(rows) if r["corpus"] == corpus]
        true = [rows[i]["true"] for i in sel]
        entry = {"clips": len(sel), "clean": report_with_misses(true, [clean[i] for i in sel], labels)["uar"]}
        for kind, snr in conditions:
            entry[f"{kind}@{snr:g}"] = report_with_misses(true, [pred[(kind, snr)][i] for i in sel], labels)["uar"]
            entry[f"{kind}@{snr:g}_no_speech"] = sum(pred[(kind, snr)][i] is None for i in sel)
        result["by_corpus"][corpus] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "robustness.json").write_text(json.dumps(result) + "\n")
    text = section(result, {c: TITLES[c] for c in result["by_corpus"]})
    title = "# The bundled model in noise" + (", with the whole-band gate of earlier releases" if gate else "")
    (args.out / "ROBUSTNESS.md").write_text(title + "\n\n" + text + "\n")
    if gate is None:
        card_path = args.models / "MODEL_CARD.md"
        card_path.write_text(with_section(card_path.read_text(), "In noise", text, before="Recipe"))
    print(text)
    return 0


def section(result: dict, titles: dict[str, str]) -> str:
    """The model card's section on noise (UAR in % per corpus and condition)."""
    snrs, kinds = result["snr_db"], result["kinds"]
    header = "| held-out speakers of | clean | " + " | ".join(f"{k} {s:g} dB" for k in kinds for s in snrs) + " |"
    rule = "|---|---:|" + "---:|" * (len(kinds) * len(snrs))
    lines = [f"| {titles[c]} | {100 * e['clean']:.1f} | "
             + " | ".join(f"{100 * e[f'{k}@{s:g}']:.1f}" for k in kinds for s in snrs) + " |"
             for c, e in result["by_corpus"].items()]
    at10 = [(c, k, e["clean"] - e[f"{k}@10"]) for c, e in result["by_corpus"].items() for k in kinds if 10.0 in snrs]
    worst = max(at10, key=lambda x: x[2]) if at10 else None
    summary = (f" At 10 dB the largest drop from the clean figure is {100 * worst[2]:.1f} points "
               f"({worst[1]} noise, {titles[worst[0]]})." if worst else "")
    lost = ["| " + titles[c] + f" | {e['clips']} | " + " | ".join(str(e[f"{k}@{s:g}_no_speech"]) for k in kinds for s in snrs)
            + " |" for c, e in result["by_corpus"].items()]
    return f"""
The same held-out recordings and fold models as above, each mixed with white, pink or babble
noise (five other speakers of its corpus) at the SNRs below, measured over speech, and scored
through the shipped path (UAR %, int8; a recording with no speech found counts as wrong).{summary}

{header}
{rule}
{chr(10).join(lines)}

Recordings in which the voice-activity gate found no speech (so no label):

{header.replace("| clean |", "| clips |")}
{rule}
{chr(10).join(lost)}

`python -m ser_edge.training.robustness` (run by the bundle command); results/robustness/.
"""


if __name__ == "__main__":
    raise SystemExit(main())
