"""The classifier: Bi-LSTM -> Bi-LSTM -> additive attention -> dense ReLU -> logits.

Everything between the frame features and the first LSTM lives inside the model, so an
exported graph needs nothing else:

1. normalisation of each input (an analysis window, or a whole speech segment with its
   context), without look-ahead beyond it:
   "mean" (the seed's) removes each dimension's mean over the window; "level" removes only
   what a gain can change: one scalar per log-spectral block (in the log domain a gain is
   the same shift in every band), so the window's spectral shape is kept; "level-power"
   removes the same scalar but takes it as a power-weighted mean over the frames (each
   frame's weight is its share of the window's power), so near-silent frames hardly count
   and the level does not depend on how much silence the window holds; with `floor`, every
   value of a group first raised to at least its window's loudest frame level less `floor`
   (in the group's log units), so digital silence sits no lower than a faint noise floor
   would and cannot pull the level far down;
2. optional deltas (and delta-deltas) over time, computed within each item's own frames;
3. the dataset's per-dimension mean and standard deviation (of the training windows after
   steps 1-2) standardise the values;
4. optional mean pooling of `subsample` frames (a shorter sequence for the LSTMs).

With `stats`, the window's mean and standard deviation of every standardised value over its
valid frames (utterance functionals, as openSMILE computes them: spectral shape, pitch level
and range, voicing ratio, loudness spread) go to the dense layer beside the attention context.

During training only, SpecAugment masks (set by the trainer) are applied after step 3.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["BiLstm", "BiLstmAttention", "Ensemble", "ModelConfig", "SpecAugment", "deltas", "level_groups",
           "reverse_index", "window_normalise", "window_stats"]

NORMALISATIONS = ("mean", "level", "level-power", "none")


def level_groups(feature_config) -> tuple[tuple[int, int], ...]:
    """The [start, stop) ranges of a FeatureConfig's values that a gain shifts by one common
    amount: each log-spectral block (spectrogram, logmel), MFCC c0 when it is included and
    the log energy of the prosody block (F0 and voicing do not depend on the gain)."""
    groups = []
    for name, span in feature_config.block_slices().items():
        if name in ("spectrogram", "logmel"):
            groups.append((span.start, span.stop))
        elif name == "mfcc" and feature_config.mfcc_include_c0:
            groups.append((span.start, span.start + 1))
        elif name == "prosody":
            groups.append((span.start + 2, span.start + 3))
    return tuple(groups)


@dataclass(frozen=True)
class ModelConfig:
    """Sizes and front end of the classifier (the seed's by default)."""

    input_dim: int
    n_classes: int
    hidden1: int = 256  # per direction
    hidden2: int = 128  # per direction
    dense: int = 128
    dropout: float = 0.3
    normalise: str = "mean"   # "mean" (per dimension, the seed's), "level" or "level-power" (per gain group), "none"
    level_groups: tuple[tuple[int, int], ...] = ()  # for "level": see level_groups()
    deltas: int = 0           # 0: none, 1: + deltas, 2: + deltas and delta-deltas
    subsample: int = 1        # frames mean-pooled before the LSTMs
    stats: bool = False       # mean and std of the standardised frames beside the attention context
    floor: float = 0.0        # "level*": values raised to the window's loudest frame level - floor (0: off)

    def __post_init__(self) -> None:
        if self.normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {NORMALISATIONS}, got {self.normalise!r}")
        if self.deltas not in (0, 1, 2):
            raise ValueError(f"deltas must be 0, 1 or 2, got {self.deltas}")
        if self.subsample < 1:
            raise ValueError(f"subsample must be >= 1, got {self.subsample}")
        if not (math.isfinite(self.floor) and self.floor >= 0):
            raise ValueError(f"floor must be a finite value >= 0 (0: off), got {self.floor}")
        if self.floor and self.normalise not in ("level", "level-power"):
            raise ValueError(f"floor needs a level normalisation ('level' or 'level-power'), got {self.normalise!r}")
        groups = tuple(tuple(int(v) for v in g) for g in self.level_groups)
        for start, stop in groups:
            if not 0 <= start < stop <= self.input_dim:
                raise ValueError(f"level group [{start}, {stop}) is outside 0..{self.input_dim}")
        object.__setattr__(self, "level_groups", groups)

    @property
    def lstm_input_dim(self) -> int:
        return self.input_dim * (1 + self.deltas)

    @property
    def embedding_dim(self) -> int:
        """Size of the dense layer's input: the attention context (and the window statistics)."""
        return 2 * self.hidden2 + (2 * self.lstm_input_dim if self.stats else 0)

    def to_dict(self) -> dict:
        return asdict(self)


def _mask(lengths: torch.Tensor, T: int, dtype: torch.dtype) -> torch.Tensor:
    return (torch.arange(T, device=lengths.device)[:, None] < lengths[None, :]).to(dtype)  # [T, B]


def window_normalise(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Subtract each item's mean over its valid frames. features [time, batch, dim], lengths [batch]."""
    mask = _mask(lengths, features.shape[0], features.dtype)
    mean = (features * mask[..., None]).sum(0) / lengths.clamp(min=1).to(features.dtype)[:, None]
    return (features - mean[None]) * mask[..., None]


def level_normalise(features: torch.Tensor, lengths: torch.Tensor,
                    groups: tuple[tuple[int, int], ...], power: bool = False, floor: float = 0.0) -> torch.Tensor:
    """Subtract, per item and per group of dimensions, one level: the mean over its valid frames
    and the group's dimensions, or with `power` the frames' means over the group's dimensions
    averaged with weights proportional to exp(frame mean): for blocks in natural-log power
    (log-mel, the prosody block's ln energy) each frame's power (a frame 10 dB down counts a
    tenth); for a dB block (the spectrogram) or MFCC c0 the weights are much sharper, nearly
    the loudest frame's level. With `floor` > 0, each value of a group is first raised to at
    least the loudest valid frame's mean over the group less `floor`. A gain shifts the level
    (and that floor) and nothing else. Other dimensions are left as they are. Padding becomes zero."""
    mask = _mask(lengths, features.shape[0], features.dtype)[..., None]
    x = features * mask
    n = lengths.clamp(min=1).to(features.dtype)
    parts, at = [], 0
    for start, stop in groups:
        if start > at:
            parts.append(x[..., at:start])
        block = x[..., start:stop]
        if floor > 0:
            loud = torch.where(mask[..., 0] > 0, block.mean(dim=2), torch.full_like(block[..., 0], -1e4))
            block = torch.maximum(block, (loud.max(dim=0).values - floor)[None, :, None]) * mask
        if power:
            frame = block.mean(dim=2)  # [T, B]
            weights = torch.softmax(torch.where(mask[..., 0] > 0, frame, torch.full_like(frame, -1e4)), dim=0)
            level = (weights * frame).sum(dim=0)  # [B]
        else:
            level = block.sum(dim=(0, 2)) / (n * (stop - start))  # [B]
        parts.append((block - level[None, :, None]) * mask)
        at = stop
    if at < features.shape[-1]:
        parts.append(x[..., at:])
    return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]


def deltas(features: torch.Tensor, lengths: torch.Tensor, order: int, width: int = 2) -> torch.Tensor:
    """[x, d(x), d(d(x))...] up to `order`, by the regression formula over +-`width` frames with
    each item's edge frames repeated (never its padding). [T, B, D] -> [T, B, D*(1+order)]."""
    T = features.shape[0]
    t = torch.arange(T, device=features.device)[:, None]
    last = (lengths.clamp(min=1) - 1)[None, :]
    mask = _mask(lengths, T, features.dtype)[..., None]
    norm = 2.0 * sum(n * n for n in range(1, width + 1))
    out, current = [features], features
    for _ in range(order):
        d = torch.zeros_like(current)
        for n in range(1, width + 1):
            ahead = torch.minimum(t + n, last).expand(T, features.shape[1])[..., None].expand_as(current)
            behind = (t - n).clamp(min=0).expand(T, features.shape[1])[..., None].expand_as(current)
            d = d + n * (current.gather(0, ahead) - current.gather(0, behind))
        current = d / norm * mask
        out.append(current)
    return torch.cat(out, dim=-1)


def window_stats(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Per item, the mean and standard deviation of each dimension over its valid frames:
    [T, B, D] (padding zero) -> [B, 2D]."""
    n = lengths.clamp(min=1).to(x.dtype)[:, None]
    mask = _mask(lengths, x.shape[0], x.dtype)[..., None]
    mean = x.sum(0) / n
    var = (((x - mean[None]) * mask) ** 2).sum(0) / n
    return torch.cat([mean, torch.sqrt(var + 1e-6)], dim=-1)


def pool(features: torch.Tensor, lengths: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of each run of `k` frames (the last run of an item may be shorter); [T, B, D] ->
    [ceil(T/k), B, D] and the new lengths. Padding frames must be zero."""
    T, B, D = features.shape
    groups = (T + k - 1) // k
    x = nn.functional.pad(features, (0, 0, 0, 0, 0, groups * k - T))
    x = x.reshape(groups, k, B, D).sum(1)
    starts = torch.arange(groups, device=features.device)[:, None] * k
    counts = (lengths[None, :] - starts).clamp(min=0, max=k).to(features.dtype)  # [G, B]
    return x / counts.clamp(min=1)[..., None], (lengths + k - 1) // k


def reverse_index(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """[T, B] time indices that reverse each item's valid frames and leave its padding in place."""
    t = torch.arange(T, device=lengths.device)[:, None]
    return torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)


class BiLstm(nn.Module):
    """A bidirectional LSTM layer over padded, sequence-major batches.

    The backward direction runs on each item reversed within its own length, so padding
    never reaches a valid frame in either direction: a padded batch gives each item what
    it would get alone. Two plain LSTMs do this several times faster on CPU than packed
    sequences, and export to ONNX as ordinary LSTM nodes.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.forward_lstm = nn.LSTM(input_size, hidden_size)
        self.backward_lstm = nn.LSTM(input_size, hidden_size)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        T = x.shape[0]
        idx = reverse_index(lengths, T)[..., None]
        forward, _ = self.forward_lstm(x)
        backward, _ = self.backward_lstm(x.gather(0, idx.expand_as(x)))
        backward = backward.gather(0, idx.expand_as(backward))
        return torch.cat([forward, backward], dim=-1)


@dataclass
class SpecAugment:
    """Training-time masks on standardised features: `freq_masks` bands of up to `freq_width`
    dimensions and `time_masks` runs of up to `time_width` frames are set to zero."""

    freq_masks: int = 0
    freq_width: int = 0
    time_masks: int = 0
    time_width: int = 0
    generator: Optional[torch.Generator] = field(default=None, repr=False)

    def __call__(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        T, B, D = x.shape
        keep = torch.ones(T, B, D, device=x.device, dtype=x.dtype)
        g = self.generator

        def draw(high: int) -> torch.Tensor:
            return torch.randint(0, max(high, 1), (B,), generator=g).to(x.device)

        for _ in range(self.freq_masks):
            width, start = draw(self.freq_width + 1), draw(D)
            d = torch.arange(D, device=x.device)[None, :]
            band = (d >= start[:, None]) & (d < (start + width)[:, None])  # [B, D]
            keep = keep * (~band).to(x.dtype)[None]
        for _ in range(self.time_masks):
            width = torch.minimum(draw(self.time_width + 1), lengths // 5)
            start = (torch.rand(B, generator=g).to(x.device) * (lengths - width).clamp(min=1)).long()
            t = torch.arange(T, device=x.device)[:, None]
            run = (t >= start[None, :]) & (t < (start + width)[None, :])  # [T, B]
            keep = keep * (~run).to(x.dtype)[..., None]
        return x * keep


class BiLstmAttention(nn.Module):
    """Inputs: features [batch, time, dim] and lengths [batch]; outputs logits [batch, classes]
    and attention weights [batch, time] (zero on padding)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.spec_augment: Optional[SpecAugment] = None
        self.register_buffer("feature_mean", torch.zeros(c.lstm_input_dim))
        self.register_buffer("feature_std", torch.ones(c.lstm_input_dim))
        self.lstm1 = BiLstm(c.lstm_input_dim, c.hidden1)
        self.drop1 = nn.Dropout(c.dropout)
        self.lstm2 = BiLstm(2 * c.hidden1, c.hidden2)
        self.drop2 = nn.Dropout(c.dropout)
        self.attention = nn.Linear(2 * c.hidden2, 1)
        self.stats_drop = nn.Dropout(c.dropout) if c.stats else None
        self.dense = nn.Linear(c.embedding_dim, c.dense)
        self.out = nn.Linear(c.dense, c.n_classes)

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Dataset statistics of front-end output (see `front_end`) of the training features."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-5))

    def front_end(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Window normalisation and deltas, before standardisation: [T, B, D] -> [T, B, D']."""
        c = self.config
        if c.normalise == "mean":
            x = window_normalise(x, lengths)
        elif c.normalise in ("level", "level-power"):
            x = level_normalise(x, lengths, c.level_groups, power=c.normalise == "level-power", floor=c.floor)
        else:
            x = x * _mask(lengths, x.shape[0], x.dtype)[..., None]
        return deltas(x, lengths, c.deltas) if c.deltas else x

    def head(self, context: torch.Tensor) -> torch.Tensor:
        """The logits from the pooled attention vector (forward's `return_context` output)."""
        return self.out(torch.relu(self.dense(context)))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, return_context: bool = False,
                return_steps: bool = False):
        """(logits, attention), and with `return_context` the dense layer's input [batch, embedding_dim]
        (the pooled attention vector, and the window statistics with `stats`); with `return_steps`
        (and `return_context`) also the second LSTM's outputs [steps, batch, 2*hidden2] and each
        clip's count of valid steps [batch] (training only)."""
        x = features.transpose(0, 1)  # sequence-major [T, B, D]
        T = x.shape[0]
        mask = _mask(lengths, T, x.dtype)[..., None]
        x = (self.front_end(x, lengths) - self.feature_mean) / self.feature_std * mask
        if self.training and self.spec_augment is not None:
            x = self.spec_augment(x, lengths)
        stats = self.stats_drop(window_stats(x, lengths)) if self.stats_drop is not None else None
        k = self.config.subsample
        steps = lengths
        if k > 1:
            x, steps = pool(x, lengths, k)
        h = self.drop1(self.lstm1(x, steps))
        h = self.drop2(self.lstm2(h, steps))
        valid = torch.arange(h.shape[0], device=x.device)[:, None] < steps[None, :]  # [T', B]
        scores = torch.tanh(self.attention(h)).squeeze(-1)  # e_t = tanh(W h_t + b)
        scores = scores.masked_fill(~valid, float("-inf"))
        alpha = torch.softmax(scores, dim=0)  # over valid steps
        context = (alpha[..., None] * h).sum(0)  # [B, 2*hidden2]
        if stats is not None:
            context = torch.cat([context, stats], dim=-1)
        logits = self.head(context)
        if k > 1:  # spread each step's weight over its frames: attention stays per frame
            alpha = alpha.repeat_interleave(k, dim=0)[:T] * mask[..., 0]
            alpha = alpha / alpha.sum(0, keepdim=True).clamp(min=1e-12)
        if return_steps:
            return logits, alpha.transpose(0, 1), context, (h, steps)
        if return_context:
            return logits, alpha.transpose(0, 1), context
        return logits, alpha.transpose(0, 1)


class Ensemble(nn.Module):
    """Models of one configuration whose class probabilities are averaged.

    Same inputs as one model; outputs: the log of the mean probabilities (a softmax of them
    gives the mean, so the runtime treats them as logits), the mean attention, and with
    `return_context` the members' pooled attention vectors side by side.
    """

    def __init__(self, members: Sequence[BiLstmAttention]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        configs = {m.config for m in members}
        if len(configs) != 1:
            raise ValueError("the models of an ensemble must share one configuration")
        self.members = nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, features: torch.Tensor, lengths: torch.Tensor, return_context: bool = False):
        outs = [m(features, lengths, return_context=True) for m in self.members]
        probs = torch.stack([torch.softmax(o[0], dim=-1) for o in outs]).mean(0)
        logits = torch.log(probs.clamp(min=1e-12))
        attention = torch.stack([o[1] for o in outs]).mean(0)
        if return_context:
            return logits, attention, torch.cat([o[2] for o in outs], dim=-1)
        return logits, attention
