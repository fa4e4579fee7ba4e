"""Training loop: Adam(W), cross-entropy, early stopping on validation loss or UAR, best checkpoint.

Regularisers for small corpora are options of TrainConfig: weight decay, label smoothing,
a cosine learning-rate schedule, random crops of the training clips to the runtime's
analysis window (or the very windows the runtime scores over each clip's speech), and
SpecAugment masks.
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ser_edge.training.data import Example, with_speech_segments, with_speech_windows
from ser_edge.training.metrics import report
from ser_edge.training.model import BiLstmAttention, ModelConfig, SpecAugment

__all__ = ["TrainConfig", "TrainResult", "predict", "select_device", "train_model"]


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained (the seed's recipe by default)."""

    max_epochs: int = 60
    batch_size: int = 32
    lr: float = 1e-3
    patience: int = 3            # epochs without a better validation loss before stopping
    balance: str = "undersample"  # "undersample" (the seed), "weights" or "none"
    seed: int = 0
    device: str = "auto"         # "auto", "cpu", "cuda"
    weight_decay: float = 0.0    # decoupled (AdamW) when > 0
    label_smoothing: float = 0.0
    schedule: str = "constant"   # "constant" or "cosine" (over max_epochs)
    monitor: str = "loss"        # early stopping on validation "loss" or "uar"
    crop_frames: int = 0         # > 0: each epoch, clips longer than this are cut at a random start
    # (window_s, hop_s): train on what the runtime scores. Each epoch every training clip is cut to
    # one of the analysis windows the streaming path scores over its audio (the voice-activity
    # gate's speech, a window_s window every hop_s; Example.windows, found from Example.source),
    # and validation scores each clip as the runtime does with decision="windows" (which export
    # writes into such a model): the mean of its windows' probabilities.
    # A clip where the gate finds no speech is used whole. () trains on whole clips.
    windows: tuple[float, ...] = ()
    # >= 0: train on what the runtime's default "segment" decision scores: each epoch every
    # training clip is cut to one of its speech segments with `segments` seconds of context either
    # side (most clips hold one), and validation scores each clip as the runtime does, its
    # segments' probabilities weighted by their lengths. < 0 trains on whole clips.
    segments: float = -1.0
    # With segments: each epoch the drawn segment is widened on each side by a random number of
    # frames, drawn uniformly up to the clip's edge, so training sees everything from the
    # segment with its context to the whole clip (validation still as the runtime decides).
    segments_widen: bool = False
    spec_augment: tuple[int, int, int, int] = (0, 0, 0, 0)  # freq masks, max width, time masks, max width
    # Distillation from a teacher's targets on the training examples (Example.soft / target_embedding):
    distill: float = 0.0         # weight of KL(teacher || student) at `temperature` (times T^2); CE gets 1 - distill
    temperature: float = 2.0
    embed_distill: float = 0.0   # weight of 1 - cos(projection(context), teacher embedding); the projection is
                                 # a linear layer used in training only (never exported)
    frame_distill: float = 0.0   # weight of the mean over steps of 1 - cos(projection(LSTM output), the
                                 # teacher's encoder frame at the same relative time) (Example.teacher_frames)
    # Adversarial invariance: a training-only head guesses each clip's corpus or speaker from the
    # pooled attention vector through a gradient reversal layer (its strength ramps from 0 to
    # `adversary_weight` over the epochs), so the encoder learns what does not tell them apart.
    adversary: str = ""          # "", "corpus" (the part of Example.group before ':') or "speaker"
    adversary_weight: float = 0.5
    # The head also sees each clip's label, so what the label already tells of the domain (in
    # URDU most speakers hold one or two classes) is not pushed out of the encoder with it.
    adversary_given_label: bool = False
    # The head tells apart only the domains (speakers) whose training clips hold every class of the
    # task: where a speaker holds one or two classes (26 of URDU's 29 hold one), telling speakers
    # apart is telling classes apart, and reversing that gradient pushes the emotion out with them.
    adversary_complete: bool = False
    # Every label of the clips' own corpora: a training-only head on the pooled attention vector
    # classifies each clip among all the labels of its corpus (a softmax per corpus), with this
    # weight. Clips whose label is outside the task's classes (label -1, Example.own set) then
    # train the encoder through this head alone: EmoDB's boredom, disgust and fear, RAVDESS's
    # calm, fearful, disgust and surprised are no longer thrown away.
    own_labels: float = 0.0
    # Mixup on the pooled attention vector: each training batch's vectors are mixed in pairs
    # (a random pairing, one weight per batch drawn from Beta(mixup, mixup)) before the dense
    # layer, and the loss is the same mix of the two labels' cross-entropies. 0: off.
    mixup: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule not in ("constant", "cosine"):
            raise ValueError(f"schedule must be 'constant' or 'cosine', got {self.schedule!r}")
        if self.monitor not in ("loss", "uar"):
            raise ValueError(f"monitor must be 'loss' or 'uar', got {self.monitor!r}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.weight_decay < 0 or self.crop_frames < 0:
            raise ValueError("weight_decay and crop_frames must be >= 0")
        object.__setattr__(self, "spec_augment", tuple(int(v) for v in self.spec_augment))
        object.__setattr__(self, "windows", tuple(float(v) for v in self.windows))
        if self.windows and (len(self.windows) != 2 or min(self.windows) <= 0 or self.crop_frames
                             or self.frame_distill):
            raise ValueError(f"windows must be (window_s, hop_s), both > 0 seconds, without crop_frames or "
                             f"frame_distill; got {self.windows}")
        if not -math.inf < self.segments < math.inf:
            raise ValueError(f"segments must be a finite number of seconds (< 0: off), got {self.segments}")
        if self.segments_widen and self.segments < 0:
            raise ValueError("segments_widen needs segments >= 0 (it widens the segments trained on)")
        if self.segments >= 0 and (self.windows or self.crop_frames or self.frame_distill):
            raise ValueError("segments cannot be combined with windows, crop_frames or frame_distill")
        if len(self.spec_augment) != 4 or min(self.spec_augment) < 0:
            raise ValueError(f"spec_augment must be four counts/widths >= 0, got {self.spec_augment}")
        if not 0.0 <= self.distill <= 1.0 or self.embed_distill < 0 or self.temperature <= 0:
            raise ValueError("distill must be in [0, 1], embed_distill >= 0 and temperature > 0")
        if self.frame_distill < 0 or (self.frame_distill and self.crop_frames):
            raise ValueError("frame_distill must be >= 0, and cannot be used with crop_frames (the teacher's "
                             "frames are aligned with whole clips)")
        if self.adversary not in ("", "corpus", "speaker") or self.adversary_weight < 0:
            raise ValueError(f"adversary must be '', 'corpus' or 'speaker' with a weight >= 0, got "
                             f"{self.adversary!r}, {self.adversary_weight}")
        if self.own_labels < 0:
            raise ValueError(f"own_labels must be >= 0, got {self.own_labels}")
        if not 0.0 <= self.mixup < math.inf or (self.mixup and self.distill):
            raise ValueError(f"mixup must be a Beta parameter >= 0 (0: off), not combined with distill (the "
                             f"teacher's targets are per clip); got {self.mixup}")
        if self.max_epochs < 1:
            raise ValueError(f"max_epochs must be >= 1, got {self.max_epochs}")
        if self.patience < 1:
            raise ValueError(f"patience must be >= 1, got {self.patience}")
        if self.balance not in ("undersample", "weights", "none"):
            raise ValueError(f"balance must be 'undersample', 'weights' or 'none', got {self.balance!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def to_dict(self) -> dict:
        out = asdict(self)
        if not self.adversary:  # as before the option existed
            del out["adversary"], out["adversary_weight"]
        if not self.adversary_given_label:
            del out["adversary_given_label"]
        if not self.adversary_complete:
            del out["adversary_complete"]
        if not self.own_labels:
            del out["own_labels"]
        if not self.frame_distill:
            del out["frame_distill"]
        if not self.windows:
            del out["windows"]
        if self.segments < 0:
            del out["segments"]
        if not self.segments_widen:
            del out["segments_widen"]
        if not self.mixup:
            del out["mixup"]
        return out

    @property
    def pieces(self) -> bool:
        """Whether it trains on what the runtime scores (windows or segments), not whole clips."""
        return bool(self.windows) or self.segments >= 0

    def with_pieces(self, examples: Sequence[Example]) -> list[Example]:
        """The examples with what the runtime scores over each (Example.windows) found, when it trains on that."""
        if self.windows:
            return with_speech_windows(examples, *self.windows)
        if self.segments >= 0:
            return with_speech_segments(examples, self.segments)
        return list(examples)


@dataclass
class TrainResult:
    model: BiLstmAttention
    history: list[dict] = field(default_factory=list)  # per epoch: train_loss, val_loss, seconds
    best_epoch: int = 0
    device: str = "cpu"
    interrupted: bool = False  # stopped by Ctrl-C / SIGTERM: the best epoch so far is kept
    windows: tuple[float, ...] = ()  # TrainConfig.windows it was trained with
    segments: float = -1.0  # TrainConfig.segments it was trained with

    def predict(self, examples: Sequence[Example], batch_size: int = 64) -> np.ndarray:
        """Class probabilities [n, classes] of each example as the model is used: whole clips,
        or, trained on what the runtime scores, as the runtime decides (the mean over each clip's
        speech windows, or its segments with their context weighted by length)."""
        config = TrainConfig(windows=self.windows, segments=self.segments)
        if not config.pieces:
            return predict(self.model, examples, batch_size)
        return windowed_predict(self.model, config.with_pieces(examples), batch_size)


def select_device(name: str = "auto") -> torch.device:
    """"auto" is CUDA when torch reports it available, else CPU; "cuda" fails clearly without it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch reports no CUDA device; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {name!r}")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _bucketed(examples: Sequence[Example], order: np.ndarray, batch_size: int,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of similar length (less padding to compute), in random order."""
    span = 4 * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: len(examples[i].features))
        batches += [np.array(chunk[j : j + batch_size]) for j in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _batches(examples: Sequence[Example], order: np.ndarray, batch_size: int, device: torch.device,
             batches: Optional[list[np.ndarray]] = None, crop: int = 0,
             rng: Optional[np.random.Generator] = None, windows: bool = False, widen: bool = False):
    """(features, lengths, labels) per batch; `crop` > 0 cuts longer clips to that many frames
    at a random start; `windows` cuts each clip to one of its speech windows (Example.windows)
    at random, a clip without any kept whole; `widen` then moves the window's start and end
    outwards by random amounts, each drawn uniformly up to the clip's edge."""
    if batches is None:
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    for batch in batches:
        items = [examples[i] for i in batch]
        feats = [e.features for e in items]
        if crop > 0:
            feats = [f if len(f) <= crop else f[(s := int(rng.integers(len(f) - crop + 1))) : s + crop]
                     for f in feats]
        elif windows:
            spans = [None if e.windows is None or not len(e.windows) else e.windows[int(rng.integers(len(e.windows)))]
                     for e in items]
            if widen:
                spans = [None if span is None else (int(rng.integers(int(span[0]) + 1)),
                                                     int(rng.integers(int(span[1]), len(e.features) + 1)))
                         for e, span in zip(items, spans)]
            feats = [e.features if span is None else e.features[slice(*span)] for e, span in zip(items, spans)]
        lengths = torch.tensor([len(f) for f in feats], dtype=torch.int64)
        T, D = int(lengths.max()), feats[0].shape[1]
        x = np.zeros((len(items), T, D), np.float32)
        for j, f in enumerate(feats):
            x[j, : len(f)] = f
        y = torch.tensor([e.label for e in items], dtype=torch.int64)
        yield torch.from_numpy(x).to(device), lengths.to(device), y.to(device)


def _teacher_projection(train: Sequence[Example], field_name: str, inputs: int, device, error: str) -> nn.Linear:
    """The training-only linear map from `inputs` values to the width of one teacher field
    (its last dimension) shared by the training examples that have it; `error` when none
    has it or they differ."""
    widths = {getattr(e, field_name).shape[-1] for e in train if getattr(e, field_name) is not None}
    if len(widths) != 1:
        raise ValueError(error)
    return nn.Linear(inputs, widths.pop()).to(device)


def _teacher_batch(items: Sequence[Example], field_name: str, device: torch.device
                   ) -> Optional[tuple[torch.Tensor, torch.Tensor]]:
    """(targets [B, K], mask [B]) of one teacher field over a batch; None when no item has it."""
    values = [getattr(e, field_name) for e in items]
    present = [v for v in values if v is not None]
    if not present:
        return None
    dim = len(present[0])
    out = np.zeros((len(items), dim), np.float32)
    mask = np.zeros(len(items), np.float32)
    for j, v in enumerate(values):
        if v is not None:
            out[j], mask[j] = v, 1.0
    return torch.from_numpy(out).to(device), torch.from_numpy(mask).to(device)


def standardisation(examples: Sequence[Example], model: BiLstmAttention) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std of the model's front-end output over `examples`."""
    total, total_sq, n = None, None, 0
    for e in examples:
        x = torch.from_numpy(e.features.astype(np.float64))
        with torch.no_grad():
            x = model.front_end(x[:, None, :], torch.tensor([len(x)]))[:, 0]
        total = x.sum(0) if total is None else total + x.sum(0)
        total_sq = (x**2).sum(0) if total_sq is None else total_sq + (x**2).sum(0)
        n += len(x)
    mean = total / n
    std = (total_sq / n - mean**2).clamp(min=0).sqrt()
    return mean.float(), std.float()


def _balanced_subset(examples: Sequence[Example], rng: np.random.Generator) -> np.ndarray:
    """As many clips of each class as the rarest has (clips without a class all kept)."""
    by_class: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_class.setdefault(e.label, []).append(i)
    unlabelled = by_class.pop(-1, [])
    smallest = min(len(v) for v in by_class.values())
    keep = [i for v in by_class.values() for i in rng.choice(v, size=smallest, replace=False)] + unlabelled
    return np.array(sorted(keep), dtype=np.int64)


def _evaluate(model, examples, device, batch_size, loss_fn, n_classes, windowed: bool = False
              ) -> tuple[float, float]:
    """Validation loss and UAR; `windowed`: each clip scored as the runtime's "windows" decision
    does, by the mean of its speech windows' probabilities (the loss is that mean's negative
    log-likelihood)."""
    if windowed:
        p = windowed_predict(model, examples, batch_size)
        true = np.array([e.label for e in examples])
        loss = float(-np.log(np.maximum(p[np.arange(len(true)), true], 1e-8)).mean())
        return loss, report(true.tolist(), p.argmax(1).tolist(), [str(c) for c in range(n_classes)])["uar"]
    model.eval()
    total, n, true, pred = 0.0, 0, [], []
    with torch.no_grad():
        for x, lengths, y in _batches(examples, np.arange(len(examples)), batch_size, device):
            logits, _ = model(x, lengths)
            total += float(loss_fn(logits, y)) * len(y)
            n += len(y)
            true += y.tolist()
            pred += logits.argmax(-1).tolist()
    return total / max(n, 1), report(true, pred, [str(c) for c in range(n_classes)])["uar"]


def _window_views(examples: Sequence[Example]) -> tuple[list[Example], list[int], list[float]]:
    """Every speech window (or segment) of every example (Example.windows; the whole clip where
    it has none) as an example of its own, the index of the example each came from, and its
    weight in that example's decision (Example.window_weights; 1 when it has none)."""
    parts, owner, weight = [], [], []
    for i, e in enumerate(examples):
        has = e.windows is not None and len(e.windows)
        spans = e.windows if has else [(0, len(e.features))]
        weights = e.window_weights if has and e.window_weights is not None else np.ones(len(spans))
        if len(weights) != len(spans) or not np.all(np.asarray(weights) > 0):
            raise ValueError(f"{e.path}: {len(weights)} window weights for {len(spans)} windows; they must be one "
                             "per window, each > 0")
        for (a, b), w in zip(spans, weights):
            parts.append(replace(e, features=e.features[a:b], windows=None, window_weights=None))
            owner.append(i)
            weight.append(float(w))
    return parts, owner, weight


def windowed_predict(model: BiLstmAttention, examples: Sequence[Example], batch_size: int = 64) -> np.ndarray:
    """Class probabilities [n, classes] of each example as the runtime decides a clip: the mean
    over its speech windows or segments (Example.windows) of their probabilities, weighted by
    Example.window_weights where given; a clip without any is scored whole."""
    parts, owner, weight = _window_views(examples)
    probs = predict(model, parts, batch_size)
    owner_, weight_ = np.array(owner, np.int64), np.asarray(weight)
    out = np.zeros((len(examples), probs.shape[1]), np.float64)
    np.add.at(out, owner_, probs * weight_[:, None])
    return out / np.bincount(owner_, weights=weight_, minlength=len(examples))[:, None]


def _progress(enabled: bool):
    """A transient progress bar over an epoch's batches, or a stand-in that shows nothing."""
    if not enabled:
        return contextlib.nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=True)


def train_model(train: Sequence[Example], val: Sequence[Example], model_config: ModelConfig,
                config: TrainConfig = TrainConfig(),
                log: Optional[Callable[[str], None]] = print, progress: bool = False) -> TrainResult:
    """Train on `train`, stop when the loss on `val` has not improved for `patience` epochs,
    and return the model with the weights of its best validation epoch. `progress` shows a
    bar over each epoch's batches; `log` gets one line per epoch."""
    if not train or not val:
        raise ValueError("training needs non-empty training and validation sets")
    train, val = config.with_pieces(train), config.with_pieces(val)
    seed_everything(config.seed)
    device = select_device(config.device)
    deterministic = torch.are_deterministic_algorithms_enabled()
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True)
    try:
        return _train(train, val, model_config, config, device, log, progress)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train(train, val, model_config, config, device, log, progress) -> TrainResult:
    rng = np.random.default_rng(config.seed)
    model = BiLstmAttention(model_config)
    # Standardised over what the model will see: the speech windows or segments when it trains on them.
    model.set_standardisation(*standardisation(_window_views(train)[0] if config.pieces else train, model))
    model.to(device)
    if any(config.spec_augment):
        generator = torch.Generator().manual_seed(config.seed)
        model.spec_augment = SpecAugment(*config.spec_augment, generator=generator)
    projection = (_teacher_projection(train, "target_embedding", model_config.embedding_dim, device,
                                      "embed_distill needs training examples with teacher embeddings of one size")
                  if config.embed_distill > 0 else None)
    frame_projection = (_teacher_projection(train, "teacher_frames", 2 * model_config.hidden2, device,
                                            "frame_distill needs training examples with teacher frames "
                                            "(Example.teacher_frames) of one width")
                        if config.frame_distill > 0 else None)
    adversary, domains = _adversary(train, model_config, config, device)
    own_head, own_index, own_allowed = _own_head(train, model_config, config, device)
    if config.distill > 0 and not any(e.soft is not None for e in train):
        raise ValueError("distill needs training examples with teacher targets (Example.soft)")
    params = list(model.parameters()) + [p for head in (projection, frame_projection, adversary, own_head)
                                         if head is not None
                                         for p in head.parameters()]
    if config.weight_decay > 0:
        optimiser = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimiser = torch.optim.Adam(params, lr=config.lr)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.max_epochs)
                 if config.schedule == "cosine" else None)

    counts = np.bincount([e.label for e in train if e.label >= 0], minlength=model_config.n_classes).astype(np.float64)
    weights = None
    if config.balance == "weights":
        weights = torch.tensor(counts.sum() / (len(counts) * np.maximum(counts, 1)), dtype=torch.float32, device=device)
    loss_fn = nn.CrossEntropyLoss(weight=weights, label_smoothing=config.label_smoothing, ignore_index=-1)
    val_loss_fn = nn.CrossEntropyLoss()
    pool = _balanced_subset(train, rng) if config.balance == "undersample" else np.arange(len(train))

    result = TrainResult(model=model, device=str(device), windows=config.windows, segments=config.segments)
    best, best_state, waited = math.inf, None, 0
    try:
        for epoch in range(1, config.max_epochs + 1):
            start = time.perf_counter()
            model.train()
            order = rng.permutation(pool)
            batches = _bucketed(train, order, config.batch_size, rng)
            total, n = 0.0, 0
            with _progress(progress) as bar:
                task = bar.add_task(f"epoch {epoch} of {config.max_epochs}", total=len(batches)) if bar else None
                for b, (x, lengths, y) in enumerate(_batches(train, order, config.batch_size, device, batches,
                                                             config.crop_frames, rng, config.pieces,
                                                             config.segments_widen)):
                    optimiser.zero_grad()
                    logits, _, context, (h, steps) = model(x, lengths, return_context=True, return_steps=True)
                    items = [train[i] for i in batches[b]]
                    mix = None
                    if config.mixup > 0:
                        lam, partner = _mixup_draw(rng, len(y), config.mixup)
                        mix = (lam, torch.as_tensor(partner, device=device))
                        logits = model.head(lam * context + (1 - lam) * context[mix[1]])
                    loss = _loss(logits, context, y, items, loss_fn, config, projection, device, mix)
                    if frame_projection is not None:
                        loss = loss + config.frame_distill * _frame_loss(h, steps, items, frame_projection, device)
                    if adversary is not None:
                        progress_ = (epoch - 1 + b / len(batches)) / config.max_epochs
                        strength = config.adversary_weight * (2 / (1 + math.exp(-10 * progress_)) - 1)
                        target = torch.tensor([domains.get(_domain(e, config.adversary), -1) for e in items],
                                              device=device)
                        seen = _reverse(context, strength)
                        if config.adversary_given_label:  # the label's part gets no gradient: it is data
                            label = nn.functional.one_hot(y.clamp(min=0), model_config.n_classes).float()
                            seen = torch.cat([seen, label * (y >= 0).float()[:, None]], 1)  # no class: zeros
                        if bool((target >= 0).any()):  # -1: a domain the head does not tell apart
                            loss = loss + nn.functional.cross_entropy(adversary(seen), target, ignore_index=-1)
                    if own_head is not None:
                        target = torch.tensor([own_index.get(e.own, -1) for e in items], device=device)
                        logits_own = own_head(context).masked_fill(~own_allowed[target.clamp(min=0)], -1e4)
                        if bool((target >= 0).any()):
                            loss = loss + config.own_labels * nn.functional.cross_entropy(logits_own, target,
                                                                                          ignore_index=-1)
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * len(y)
                    n += len(y)
                    if bar:
                        bar.advance(task)
            if scheduler is not None:
                scheduler.step()
            val_loss, val_uar = _evaluate(model, val, device, config.batch_size, val_loss_fn, model_config.n_classes,
                                          windowed=config.pieces)
            seconds = time.perf_counter() - start
            result.history.append({"epoch": epoch, "train_loss": total / n, "val_loss": val_loss, "val_uar": val_uar,
                                   "seconds": seconds})
            # UAR moves in steps on a small validation set: ties go to the lower loss.
            score = val_loss if config.monitor == "loss" else -val_uar + 1e-3 * min(val_loss, 10.0)
            improved = score < best
            if improved:
                best, best_state, waited, result.best_epoch = score, copy.deepcopy(model.state_dict()), 0, epoch
            else:
                waited += 1
            if log:
                left = (config.max_epochs - epoch) * sum(h["seconds"] for h in result.history) / epoch
                log(f"epoch {epoch:3d} of {config.max_epochs}  train loss {total / n:.4f}  val loss {val_loss:.4f}  "
                    f"val UAR {val_uar:.3f}{'  *' if improved else ''}  {seconds:.1f} s on {device}"
                    f"  (at most {left / 60:.1f} min left)")
            if waited >= config.patience:
                break
    except KeyboardInterrupt:
        if best_state is None:
            raise  # nothing worth keeping yet
        result.interrupted = True
        if log:
            log(f"interrupted after {len(result.history)} epoch(s); keeping the best so far (epoch {result.best_epoch})")
    if best_state is None:
        raise RuntimeError("the validation loss was never finite; check the features and the learning rate")
    model.load_state_dict(best_state)
    model.eval()
    return result


class _GradientReversal(torch.autograd.Function):
    """Identity forward; the gradient times -strength backward."""

    @staticmethod
    def forward(ctx, x, strength: float):
        ctx.strength = strength
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.strength * grad, None


def _reverse(x: torch.Tensor, strength: float) -> torch.Tensor:
    return _GradientReversal.apply(x, strength)


def _domain(example: Example, kind: str) -> str:
    return example.group.partition(":")[0] if kind == "corpus" else example.group


def _adversary(train, model_config: ModelConfig, config: TrainConfig, device):
    """The training-only domain head and {domain: index}, or (None, {}) when there is nothing to
    tell apart (no adversary asked, or the training clips hold one corpus or one speaker, or with
    `adversary_complete` fewer than two domains whose clips hold every class of the task)."""
    if not config.adversary or config.adversary_weight == 0:
        return None, {}
    held: dict[str, set] = {}
    for e in train:
        held.setdefault(_domain(e, config.adversary), set()).update([e.label] if e.label >= 0 else [])
    classes = set(range(model_config.n_classes))
    names = sorted(d for d, labels in held.items() if not config.adversary_complete or labels >= classes)
    domains = {d: i for i, d in enumerate(names)}
    if len(domains) < 2:
        return None, {}
    inputs = model_config.embedding_dim + (model_config.n_classes if config.adversary_given_label else 0)
    head = nn.Sequential(nn.Linear(inputs, 64), nn.ReLU(), nn.Linear(64, len(domains)))
    return head.to(device), domains


def _own_head(train, model_config: ModelConfig, config: TrainConfig, device):
    """The training-only head over every label of the training clips' corpora, {own label: index}
    and the [labels, labels] mask of the labels of each label's corpus; (None, {}, None) when
    not asked for. Clips without a class (label -1) need this head and their own label."""
    unlabelled = [e for e in train if e.label < 0]
    if not config.own_labels:
        if unlabelled:
            raise ValueError(f"{len(unlabelled)} training clips have no class of the task (label -1); they train "
                             "only the head of own_labels, so set TrainConfig.own_labels > 0 or leave them out")
        return None, {}, None
    if any(not e.own for e in unlabelled):
        raise ValueError("a training clip without a class of the task has no own label (Example.own) either")
    names = sorted({e.own for e in train if e.own})
    if not names:
        raise ValueError("own_labels needs training examples with their corpus's labels (Example.own)")
    index = {name: i for i, name in enumerate(names)}
    corpus = [name.rpartition(":")[0] for name in names]
    allowed = torch.tensor([[c == d for d in corpus] for c in corpus], dtype=torch.bool, device=device)
    head = nn.Sequential(nn.Linear(model_config.embedding_dim, 64), nn.ReLU(), nn.Linear(64, len(names)))
    return head.to(device), index, allowed


def _mixup_draw(rng: np.random.Generator, n: int, alpha: float) -> tuple[float, np.ndarray]:
    """One batch's mixup: the weight of each clip's own vector, and each clip's partner."""
    return float(rng.beta(alpha, alpha)), rng.permutation(n)


def _loss(logits, context, y, items, loss_fn, config: TrainConfig, projection, device,
          mix: Optional[tuple[float, torch.Tensor]] = None) -> torch.Tensor:
    """Cross-entropy with the labels, mixed with the teacher's targets where the config asks
    (zero for a batch whose clips all lack a class of the task); with `mix` (mixup's weight
    and each clip's partner) the same mix of the clip's and its partner's cross-entropies."""
    if not bool((y >= 0).any()):
        loss = logits.sum() * 0.0
    elif mix is None:
        loss = loss_fn(logits, y)
    else:
        lam, partner = mix
        loss = lam * loss_fn(logits, y) + (1 - lam) * loss_fn(logits, y[partner])
    if config.distill > 0:
        soft = _teacher_batch(items, "soft", device)
        if soft is not None:
            target, mask = soft
            t = config.temperature
            log_p = torch.log_softmax(logits / t, dim=-1)
            kl = (target * (torch.log(target.clamp(min=1e-8)) - log_p)).sum(-1)
            kd = (kl * mask).sum() / mask.sum().clamp(min=1) * t * t
            loss = (1 - config.distill) * loss + config.distill * kd
    if projection is not None:
        emb = _teacher_batch(items, "target_embedding", device)
        if emb is not None:
            target, mask = emb
            cos = nn.functional.cosine_similarity(projection(context), target, dim=-1)
            loss = loss + config.embed_distill * ((1 - cos) * mask).sum() / mask.sum().clamp(min=1)
    return loss


def _frame_loss(h: torch.Tensor, steps: torch.Tensor, items: Sequence[Example], projection: nn.Module,
                device) -> torch.Tensor:
    """Mean over the valid steps of the clips with teacher frames of 1 - cos(projection(h_t), the
    teacher frame at the same relative time in the clip): step t of n takes frame
    floor((t + 0.5) / n * frames). Relative time holds for speed-changed copies too."""
    T, B = h.shape[0], h.shape[1]
    width = projection.out_features
    target = np.zeros((T, B, width), np.float32)
    mask = np.zeros((T, B), np.float32)
    for b, e in enumerate(items):
        if e.teacher_frames is None:
            continue
        n = int(steps[b])
        index = np.minimum(((np.arange(n) + 0.5) / n * len(e.teacher_frames)).astype(np.int64),
                           len(e.teacher_frames) - 1)
        target[:n, b] = e.teacher_frames[index]
        mask[:n, b] = 1.0
    if not mask.any():
        return h.sum() * 0.0
    mask_t = torch.from_numpy(mask).to(device)
    cos = nn.functional.cosine_similarity(projection(h), torch.from_numpy(target).to(device), dim=-1)
    return ((1 - cos) * mask_t).sum() / mask_t.sum()


def predict(model: BiLstmAttention, examples: Sequence[Example], batch_size: int = 64) -> np.ndarray:
    """Class probabilities [n, classes] of each example."""
    device = next(model.parameters()).device
    model.eval()
    out = []
    with torch.no_grad():
        for x, lengths, _ in _batches(examples, np.arange(len(examples)), batch_size, device):
            logits, _ = model(x, lengths)
            out.append(torch.softmax(logits, dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.config.n_classes), np.float32)
