"""Emotional-speech corpora as lists of labelled clips, whatever their layout or language.

Readers: the URDU layout, the EmoDB and RAVDESS file-name layouts, one folder per label, and a CSV
manifest (path, label, speaker[, language]) for any other corpus. Labels are mapped onto
the shared 4 classes (angry, happy, neutral, sad) by `to_shared`.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Optional

__all__ = [
    "SHARED_LABELS",
    "Clip",
    "CorpusError",
    "read_corpus",
    "read_emodb",
    "read_folders",
    "read_manifest",
    "read_ravdess",
    "read_urdu",
    "outside",
    "to_shared",
]

#: The label space cross-corpus experiments share.
SHARED_LABELS = ("angry", "happy", "neutral", "sad")

# Corpus label -> shared label; labels not listed have no shared counterpart.
_SHARED = {
    "angry": "angry",
    "anger": "angry",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "sadness": "sad",
}

# EmoDB's emotion letters (German initials) at position 6 of the file name.
EMODB_LETTERS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
_EMODB_NAME = re.compile(r"^(\d{2})([a-b]\d{2})([WLEAFTN])([a-z])$")
_URDU_NAME = re.compile(r"^S([MF])(\d+)_F\d+_([AHNS])\d+$")
_URDU_LETTERS = {"A": "angry", "H": "happy", "N": "neutral", "S": "sad"}
# RAVDESS: modality-channel-emotion-intensity-statement-repetition-actor; speech is channel 01.
_RAVDESS_NAME = re.compile(r"^(\d{2})-(01)-(0[1-8])-(0[12])-(0[12])-(0[12])-(\d{2})$")
RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
_AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


class CorpusError(ValueError):
    """A corpus folder or manifest cannot be read; the message says which and why."""


@dataclass(frozen=True)
class Clip:
    """One labelled recording. `speaker` is unique within `corpus`."""

    path: Path
    label: str
    speaker: str
    corpus: str
    language: str = ""

    @property
    def group(self) -> str:
        """Speaker identity across corpora (for speaker-grouped splits)."""
        return f"{self.corpus}:{self.speaker}"


def to_shared(clips: Iterable[Clip]) -> list[Clip]:
    """The clips whose label has a shared 4-class counterpart, relabelled onto it."""
    return [replace(c, label=_SHARED[c.label]) for c in clips if c.label in _SHARED]


def outside(clips: Iterable[Clip], labels: Iterable[str]) -> list[Clip]:
    """The clips whose label is not one of `labels`, nor one that `to_shared` maps onto them
    (EmoDB's boredom, disgust and fear against the shared 4 classes)."""
    labels = set(labels)
    return [c for c in clips if c.label not in labels and _SHARED.get(c.label) not in labels]


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in _AUDIO_SUFFIXES and p.is_file())


def _require_dir(root: Path, what: str) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{what} folder {str(root)!r} does not exist or is not a folder")
    return root


def _read_named(root: str | Path, what: str, pattern: re.Pattern, example: str,
                clip: Callable[[Path, re.Match], Clip]) -> list[Clip]:
    """Every audio file under `root`, whose name must match `pattern`, made into a Clip."""
    root = _require_dir(root, what)
    clips = []
    for path in _audio_files(root):
        m = pattern.match(path.stem)
        if m is None:
            raise CorpusError(f"{path}: not a{'n' if what[0] in 'AEIOU' else ''} {what} file name (expected e.g. {example})")
        clips.append(clip(path, m))
    if not clips:
        raise CorpusError(f"no audio files under {str(root)!r}")
    return clips


def read_urdu(root: str | Path) -> list[Clip]:
    """The URDU corpus: `S{M|F}{speaker}_F{n}_{A|H|N|S}{index}.wav` files in label folders.

    The label comes from the file name (it agrees with the folder name); the speaker is
    gender plus number (`M1`), since the corpus numbers male and female speakers apart.
    """
    return _read_named(root, "URDU", _URDU_NAME, "SM1_F10_A010.wav",
                       lambda path, m: Clip(path, _URDU_LETTERS[m[3]], f"{m[1]}{m[2]}", "urdu", "ur"))


def read_emodb(root: str | Path) -> list[Clip]:
    """EmoDB file names: `03a01Fa.wav` = speaker 03, text a01, emotion letter F, version a."""
    return _read_named(root, "EmoDB", _EMODB_NAME, "03a01Fa.wav",
                       lambda path, m: Clip(path, EMODB_LETTERS[m[3]], m[1], "emodb", "de"))


def read_ravdess(root: str | Path) -> list[Clip]:
    """RAVDESS speech: `03-01-05-02-01-01-07.flac` = audio only, speech, emotion 05 (angry),
    strong intensity, statement 01, repetition 01, actor 07. The actor is the speaker.
    Calm (02) has no counterpart in the shared 4 classes, so `to_shared` leaves it out."""
    return _read_named(root, "RAVDESS", _RAVDESS_NAME, "03-01-05-02-01-01-07.flac",
                       lambda path, m: Clip(path, RAVDESS_EMOTIONS[m[3]], m[7], "ravdess", "en"))


def read_folders(
    root: str | Path, speaker_pattern: str, corpus: Optional[str] = None, language: str = ""
) -> list[Clip]:
    """One folder per label (`root/<label>/*.wav`, nested folders allowed).

    `speaker_pattern` is a regular expression whose first group, searched in the file
    name, is the speaker: speaker-independent evaluation needs it, so it is required.
    Folder names are lower-cased to give the labels.
    """
    root = _require_dir(root, "corpus")
    pattern = re.compile(speaker_pattern)
    if pattern.groups < 1:
        raise CorpusError(f"speaker_pattern {speaker_pattern!r} needs a group, e.g. r'^(\\w+?)_'")
    clips = []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in _audio_files(label_dir):
            m = pattern.search(path.name)
            if m is None:
                raise CorpusError(f"{path}: speaker_pattern {speaker_pattern!r} does not match the file name")
            clips.append(Clip(path, label_dir.name.lower(), m.group(1), corpus or root.name, language))
    if not clips:
        raise CorpusError(f"no audio files in label folders under {str(root)!r}")
    return clips


def read_manifest(path: str | Path, corpus: Optional[str] = None) -> list[Clip]:
    """A CSV manifest with a header row: path, label, speaker[, language].

    Relative paths are taken from the manifest's folder. Any corpus in any language can
    be described this way.
    """
    path = Path(path)
    if not path.is_file():
        raise CorpusError(f"manifest {str(path)!r} does not exist")
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports start with a BOM
    except UnicodeDecodeError as err:
        raise CorpusError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8 CSV") from err
    with io.StringIO(text, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label", "speaker"} - set(reader.fieldnames or [])
        if missing:
            raise CorpusError(f"{path}: the header lacks column(s) {', '.join(sorted(missing))}; "
                              "expected path,label,speaker[,language]")
        clips = []
        for line, row in enumerate(reader, start=2):
            if not (row["path"] or "").strip() or not (row["label"] or "").strip() or not (row["speaker"] or "").strip():
                raise CorpusError(f"{path}:{line}: path, label and speaker must all be given")
            clip_path = Path(row["path"])
            if not clip_path.is_absolute():
                clip_path = path.parent / clip_path
            clips.append(Clip(clip_path, row["label"].strip().lower(), row["speaker"].strip(),
                              corpus or path.stem, (row.get("language") or "").strip()))
    if not clips:
        raise CorpusError(f"{path}: the manifest lists no clips")
    return clips


def read_corpus(spec: str | Path) -> list[Clip]:
    """Read a corpus by its layout: a .csv manifest, or a folder holding URDU, EmoDB or RAVDESS files."""
    spec = Path(spec)
    if spec.suffix.lower() == ".csv":
        return read_manifest(spec)
    root = _require_dir(spec, "corpus")
    names = [p.stem for p in _audio_files(root)[:20]]
    if not names:
        raise CorpusError(f"no audio files under {str(root)!r}")
    if all(_URDU_NAME.match(n) for n in names):
        return read_urdu(root)
    if all(_EMODB_NAME.match(n) for n in names):
        return read_emodb(root)
    if all(_RAVDESS_NAME.match(n) for n in names):
        return read_ravdess(root)
    raise CorpusError(f"{str(root)!r}: neither URDU, EmoDB nor RAVDESS file names; describe it with a CSV "
                      "manifest (path,label,speaker[,language]) or use read_folders with a speaker pattern")
