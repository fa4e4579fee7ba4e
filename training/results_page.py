"""The Markdown results page: measured figures beside the papers' (from ../shared/PAPERS.md)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_comparison", "write_markdown"]

# Published figures quoted in PAPERS.md. Their protocols differ from ours (stated per row).
PAPERS_WITHIN = {
    "urdu": "Dar et al. 97 % (frame-level 10-fold, leaks speakers); MDAT baseline 91.13, MDAT 94.33 UA (XLS-R + RoBERTa)",
    "emodb": "MDAT baseline 81.00, MDAT 84.50 UA (full EmoDB, not the 2-s copy)",
}
PAPERS_ZEROSHOT = {
    "urdu-to-emodb": "CNN-LSTM 51.82, best foundation model 56.85 (Shoukat); MDAT baseline 65.35, MDAT 75.31",
    "emodb-to-urdu": "CNN-LSTM 54.15, best foundation model 59.52 (Shoukat); MDAT baseline 72.46, MDAT 73.23",
}


def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def write_markdown(results: dict, path: Path) -> None:
    meta = results["meta"]
    lines = [
        "# Results",
        "",
        "All figures are speaker-independent and utterance-level: no speaker is in both the training",
        "(or early-stopping validation) and the test data of any run, and each clip counts once.",
        "UAR = mean per-class recall (the headline), WA = accuracy, in %. EmoDB here is the 2-s copy",
        "in ../shared/data, not comparable with published EmoDB figures.",
        "",
        f"Recipe: {meta.get('recipe', 'seed')}. Model: Bi-LSTM {meta['model']['hidden1']}/{meta['model']['hidden2']}"
        f" + attention on the {meta['feature_config']['blocks']} features ({meta['model']['input_dim']} per frame); "
        f"model options: {meta['model']}; training: {meta['train_config']}; extra training copies: "
        f"{meta.get('augment') or 'none'}; device {meta['device']}, "
        f"torch {meta['torch']}; the whole run took {meta.get('minutes', 0):.0f} min. "
        f"Files skipped as unreadable or too short: {len(meta.get('skipped_files', []))}.",
        "",
        "## Within-corpus",
        "",
        "| corpus | classes | protocol | UAR | WA | macro-F1 | fold UAR mean ± sd | papers (their protocol) |",
        "|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for key, name in (("urdu", "URDU"), ("emodb", "EmoDB (2-s copy)")):
        r = results.get(f"within-{key}")
        if r:
            spread = f"{_pct(r['fold_uar_mean'])} ± {_pct(r['fold_uar_std'])}" if "fold_uar_mean" in r else "-"
            lines.append(f"| {name} | {len(r['labels'])} | {r['protocol']} | {_pct(r['uar'])} | {_pct(r['wa'])} | "
                         f"{_pct(r['macro_f1'])} | {spread} | {PAPERS_WITHIN[key]} |")
    lines += ["", "Chance: 25.0 (4 classes), 14.3 (7 classes).", "", "## Zero-shot cross-corpus (4 classes)", "",
              "| direction | UAR | WA | macro-F1 | papers (UAR) |", "|---|---:|---:|---:|---|"]
    for key, name in (("urdu-to-emodb", "URDU → EmoDB 2-s"), ("emodb-to-urdu", "EmoDB 2-s → URDU")):
        r = results.get(f"zeroshot-{key}")
        if r:
            lines.append(f"| {name} | {_pct(r['uar'])} | {_pct(r['wa'])} | {_pct(r['macro_f1'])} | {PAPERS_ZEROSHOT[key]} |")
    settings = ["0pct", "10pct", "20pct", "30pct", "5-shot", "10-shot", "15-shot"]
    lines += ["", "## Adaptation with target clips (4 classes, UAR)", "",
              "Target clips come from speakers disjoint from the target's test half; every setting of a",
              "direction is tested on the same held-out target speakers.", "",
              "| direction | " + " | ".join(s.replace("pct", " %") for s in settings) + " |",
              "|---|" + "---:|" * len(settings)]
    for key, name in (("urdu-to-emodb", "URDU → EmoDB 2-s"), ("emodb-to-urdu", "EmoDB 2-s → URDU")):
        cells = [results.get(f"adapt-{key}-{s}") for s in settings]
        if any(cells):
            lines.append(f"| {name} | " + " | ".join(_pct(c["uar"]) if c else "-" for c in cells) + " |")
    lines += ["", "Papers: Dar et al. Kashmiri → Urdu 25 → 80 / 87 / 89 % with 10 / 20 / 30 % added (frame-level);",
              "MDAT K-shot (K = 5..15) IEMOCAP → EMODB 42.48 → 91.48 UA.", "",
              "## Noise (within-corpus models, test clips mixed with noise; UAR)", ""]
    conditions = None
    for key in ("urdu", "emodb"):
        r = results.get(f"within-{key}")
        if r and r["noise"]:
            conditions = list(r["noise"])
            break
    if conditions:
        names = [c.split("#")[0].replace("@", " ").replace("dB", " dB") for c in conditions]  # "white 10 dB"
        lines += ["| corpus | clean | " + " | ".join(names) + " |", "|---|---:|" + "---:|" * len(conditions)]
        for key, name in (("urdu", "URDU"), ("emodb", "EmoDB (2-s copy)")):
            r = results.get(f"within-{key}")
            if r:
                lines.append(f"| {name} | {_pct(r['uar'])} | " +
                             " | ".join(_pct(r["noise"][c]["uar"]) for c in conditions) + " |")
    lines += ["", "Per-class reports and confusion matrices: the JSON files and `*-confusion.png` beside this page;",
              "learning curves: `*-learning.png`.", ""]
    path.write_text("\n".join(lines))


def write_comparison(runs: dict[str, dict], path: Path) -> list[str]:
    """A page with one UAR column per run (e.g. {"seed": ..., "default": ...}) beside the
    papers' figures, for every protocol; returns its lines (the README quotes them)."""
    names = list(runs)
    rule = "|---|" + "---:|" * len(names) + "---|"

    def cells(key, pick=lambda r: r["uar"]):
        return " | ".join(_pct(pick(runs[n][key])) if key in runs[n] else "-" for n in names)

    lines = ["| protocol | " + " | ".join(names) + " | papers (their protocol) |", rule]
    for key, name in (("urdu", "within URDU (4 classes), speaker-grouped 10-fold"),
                      ("emodb", "within EmoDB 2-s (7 classes), speaker-grouped 10-fold")):
        lines.append(f"| {name} | {cells(f'within-{key}')} | {PAPERS_WITHIN[key]} |")
    for key, name in (("urdu-to-emodb", "zero-shot URDU → EmoDB 2-s (4)"),
                      ("emodb-to-urdu", "zero-shot EmoDB 2-s → URDU (4)")):
        lines.append(f"| {name} | {cells(f'zeroshot-{key}')} | {PAPERS_ZEROSHOT[key]} |")
    for key, name in (("urdu-to-emodb", "URDU → EmoDB 2-s"), ("emodb-to-urdu", "EmoDB 2-s → URDU")):
        for setting in ("0pct", "10pct", "20pct", "30pct", "5-shot", "10-shot", "15-shot"):
            label = setting.replace("pct", " % target") if "pct" in setting else setting
            paper = ("Dar et al. Kashmiri → Urdu 25 → 80 / 87 / 89 % at 10 / 20 / 30 % (frame-level)"
                     if setting == "30pct" else
                     "MDAT IEMOCAP → EMODB 5..15-shot up to 91.48" if setting == "15-shot" else "")
            lines.append(f"| {name}, {label} | {cells(f'adapt-{key}-{setting}')} | {paper} |")
    for key, name in (("urdu", "URDU"), ("emodb", "EmoDB 2-s")):
        for kind in ("white", "pink", "babble"):
            cond = f"{kind}@10dB#0"
            lines.append(f"| within {name}, test clips in {kind} noise at 10 dB | "
                         + cells(f"within-{key}", lambda r, c=cond: r["noise"][c]["uar"]) + " | |")
    page = ["# Results: every protocol, recipe by recipe", "",
            "UAR in %, speaker-independent and utterance-level (see each recipe's RESULTS.md for WA,",
            "macro-F1, fold spread, confusion matrices and learning curves). Chance: 25.0 (4 classes),",
            "14.3 (7 classes). EmoDB 2-s is the 2-s copy in ../shared/data, not comparable with published",
            "EmoDB figures; the papers' protocols differ as stated.", "", *lines, ""]
    path.write_text("\n".join(page))
    return lines


def main() -> int:
    """python -m ser_edge.training.results_page NAME=FOLDER ... --out results/RESULTS.md"""
    import argparse
    import json

    parser = argparse.ArgumentParser(description="One UAR column per `ser-edge evaluate all` output folder.")
    parser.add_argument("runs", nargs="+", help="NAME=FOLDER, a folder holding summary.json")
    parser.add_argument("--out", type=Path, default=Path("results/RESULTS.md"))
    args = parser.parse_args()
    runs = {}
    for spec in args.runs:
        name, sep, folder = spec.partition("=")
        summary = Path(folder) / "summary.json"
        if not sep or not summary.is_file():
            parser.error(f"{spec!r}: expected NAME=FOLDER with FOLDER/summary.json")
        runs[name] = json.loads(summary.read_text())
    print("\n".join(write_comparison(runs, args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
