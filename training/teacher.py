"""A pretrained teacher for training: Whisper-base (frozen, through CTranslate2) and a head.

Training-time only: neither the runtime nor an exported model ever needs it.

- `embeddings`: the teacher's pooled encoder output (mean and standard deviation over the
  frames, 1024 values) of each clip, cached by content like the anchors' vectors.
- `soft_targets`: the teacher's class probabilities for each training clip, from logistic
  regression heads fitted on the training clips of *other speakers* (speaker-grouped
  cross-fitting): a head never labels a clip it was fitted on, so the targets say what the
  teacher believes of an unseen voice rather than repeat the labels.
- `frames`: the teacher's encoder output frames of each clip (one per 20 ms, float16),
  cached by content, for `TrainConfig.frame_distill`.
- `attach`: examples carrying those targets, for `TrainConfig.distill` / `embed_distill` /
  `frame_distill`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ser_edge.training.data import Example

__all__ = ["TeacherError", "attach", "attach_for_training", "attach_frames", "embeddings", "frames", "soft_targets",
           "teacher_folder"]

GET_SCRIPT = "../shared/tools/get-whisper-base"


class TeacherError(Exception):
    """The teacher model folder is missing or unusable."""


def teacher_folder(path: Optional[os.PathLike] = None) -> Path:
    """The Whisper-base folder (CTranslate2 format): `path`, else $SER_EDGE_TEACHER, else
    ~/.cache/ser-edge/teachers/whisper-base; a TeacherError says how to get it."""
    folder = Path(path or os.environ.get("SER_EDGE_TEACHER", "")
                  or Path.home() / ".cache" / "ser-edge" / "teachers" / "whisper-base")
    if not (folder / "model.bin").is_file():
        raise TeacherError(f"no Whisper-base model (CTranslate2 format) in {folder}: get it with "
                           f"`bash {GET_SCRIPT} {folder}` (the shared tools' script, 145 MB, MIT licence), "
                           "then give that folder with --teacher")
    return folder


def embeddings(paths: Sequence[os.PathLike], folder: Optional[os.PathLike] = None,
               progress: bool = False) -> dict[str, np.ndarray]:
    """{str(path): teacher vector} of every readable file (cached by content)."""
    from ser_edge.training.anchors import embed_clips, whisper_embedder

    embedder = whisper_embedder(teacher_folder(folder))
    out = embed_clips(embedder, list(paths), progress=progress)
    return {str(paths[i]): out.X[j] for j, i in enumerate(out.kept)}


class _Frames:
    """The teacher's encoder frames as the "vector" of a clip (float16, so a corpus is a few
    hundred MB), under a cache key of their own."""

    def __init__(self, embedder) -> None:
        self.embedder, self.key, self.name = embedder, f"{embedder.key}-frames-float16", f"{embedder.name} frames"

    def embed(self, samples_16k: np.ndarray) -> np.ndarray:
        return self.embedder.frames(samples_16k).astype(np.float16)


def frames(paths: Sequence[os.PathLike], folder: Optional[os.PathLike] = None,
           progress: bool = False) -> dict[str, np.ndarray]:
    """{str(path): the teacher's encoder frames [frames, 512], float16} of every readable file
    (cached by content)."""
    from ser_edge.training.anchors import embed_cached, whisper_embedder

    arrays, _, kept = embed_cached(_Frames(whisper_embedder(teacher_folder(folder))), list(paths), progress=progress)
    return {str(paths[i]): a for i, a in zip(kept, arrays)}


def soft_targets(x: np.ndarray, labels: Sequence[int], groups: Sequence[str], n_classes: int,
                 temperature: float, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Out-of-fold teacher probabilities [n, classes] at `temperature`: each clip's from a head
    (logistic regression, standardised, class-balanced, C = 0.1) fitted on the clips of the
    other speaker folds. A fold whose training part lacks a class gives that class no weight."""
    from ser_edge.training.anchors import make_classifier

    labels = np.asarray(labels)
    speakers = sorted(set(groups))
    rng = np.random.default_rng(seed)
    fold_of = {s: k % folds for k, s in enumerate(rng.permutation(speakers))}
    fold = np.array([fold_of[g] for g in groups])
    out = np.zeros((len(x), n_classes))
    for k in range(min(folds, len(speakers))):
        test, train = fold == k, fold != k
        if not test.any():
            continue
        present = sorted(set(labels[train].tolist()))
        if len(present) < 2:
            out[test] = np.eye(n_classes)[labels[test]]  # no head possible: fall back to the labels
            continue
        clf = make_classifier("logreg").fit(x[train], labels[train])
        z = clf.decision_function(x[test])
        if z.ndim == 1:  # binary: p(second) = sigmoid(z), i.e. a softmax over (0, z)
            z = np.stack([np.zeros_like(z), z], 1)
        logits = np.full((test.sum(), n_classes), -np.inf)
        logits[:, present] = z / temperature
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        out[test] = p / p.sum(1, keepdims=True)
    return out.astype(np.float32)


def attach_for_training(examples: Sequence[Example], vectors: dict[str, np.ndarray], n_classes: int,
                        config, always: Sequence[Example] = ()) -> list[Example]:
    """`examples` + `always` with the teacher's targets for training with `config` (a
    TrainConfig): the speakers that `protocols.fit` will set aside for validation with this
    config's seed get no targets and no head is fitted on them, so early stopping never
    sees what the teacher learnt from them."""
    from ser_edge.training.protocols import training_split

    _, val = training_split(list(examples), config.seed)
    held = {e.group for e in val}
    return attach(list(examples) + list(always), vectors, n_classes, config.temperature, soft=config.distill > 0,
                  embedding=config.embed_distill > 0, seed=config.seed, exclude_groups=held)


def attach(examples: Sequence[Example], vectors: dict[str, np.ndarray], n_classes: int, temperature: float,
           soft: bool = True, embedding: bool = True, seed: int = 0,
           exclude_groups: frozenset | set = frozenset()) -> list[Example]:
    """Copies of `examples` with the teacher's soft targets and/or embedding (standardised over
    these examples); an example whose file has no teacher vector, or whose speaker group is
    in `exclude_groups`, gets neither (and no head is fitted on it)."""
    from dataclasses import replace

    have = [i for i, e in enumerate(examples) if str(e.path) in vectors and e.group not in exclude_groups]
    x = np.stack([vectors[str(examples[i].path)] for i in have]) if have else np.zeros((0, 1))
    targets = (soft_targets(x, [examples[i].label for i in have], [examples[i].group for i in have], n_classes,
                            temperature, seed=seed) if soft and have else None)
    z = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6) if embedding and have else None
    out = list(examples)
    for j, i in enumerate(have):
        out[i] = replace(examples[i], soft=targets[j] if targets is not None else None,
                         target_embedding=z[j].astype(np.float32) if z is not None else None)
    return out


def attach_frames(examples: Sequence[Example], frames_of: dict[str, np.ndarray],
                  more: Sequence[Example] = ()) -> tuple[list[Example], list[Example]]:
    """Copies of `examples` and of `more` with the teacher's encoder frames
    (`Example.teacher_frames`, float16), each dimension standardised over every frame of all of
    them; an example whose file has no frames gets none. The frames do not depend on the
    labels, so every clip trained on may have them."""
    from dataclasses import replace

    every = list(examples) + list(more)
    paths = sorted({str(e.path) for e in every if str(e.path) in frames_of})
    if not paths:
        return list(examples), list(more)
    total = np.zeros(frames_of[paths[0]].shape[1])
    total_sq, n = np.zeros_like(total), 0
    for path in paths:
        f = frames_of[path].astype(np.float64)
        total, total_sq, n = total + f.sum(0), total_sq + (f**2).sum(0), n + len(f)
    mean = total / n
    std = np.maximum(np.sqrt(np.maximum(total_sq / n - mean**2, 0.0)), 1e-6)
    # One standardised array per file, shared by its copies.
    done = {path: ((frames_of[path].astype(np.float32) - mean) / std).astype(np.float16) for path in paths}
    out = [replace(e, teacher_frames=done[str(e.path)]) if str(e.path) in done else e for e in every]
    return out[: len(examples)], out[len(examples):]
