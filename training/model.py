"""The seed's classifier: Bi-LSTM -> Bi-LSTM -> additive attention -> dense ReLU -> logits.

Normalisation lives inside the model so that an exported graph needs nothing else: each
analysis window's log features have their per-window mean removed (in the log domain a
gain is a constant shift, so this makes the model gain-invariant without look-ahead),
then the dataset's per-dimension mean and standard deviation (of the mean-removed
training features) standardise them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

__all__ = ["BiLstm", "BiLstmAttention", "ModelConfig", "reverse_index", "window_normalise"]


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of the classifier (the seed's by default)."""

    input_dim: int
    n_classes: int
    hidden1: int = 256  # per direction
    hidden2: int = 128  # per direction
    dense: int = 128
    dropout: float = 0.3

    def to_dict(self) -> dict:
        return asdict(self)


def window_normalise(features: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Subtract each item's mean over its valid frames. features [time, batch, dim], lengths [batch]."""
    T = features.shape[0]
    mask = (torch.arange(T, device=features.device)[:, None] < lengths[None, :]).to(features.dtype)  # [T, B]
    mean = (features * mask[..., None]).sum(0) / lengths.clamp(min=1).to(features.dtype)[:, None]
    return (features - mean[None]) * mask[..., None]


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


class BiLstmAttention(nn.Module):
    """Inputs: features [batch, time, dim] and lengths [batch]; outputs logits [batch, classes]
    and attention weights [batch, time] (zero on padding)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.register_buffer("feature_mean", torch.zeros(c.input_dim))
        self.register_buffer("feature_std", torch.ones(c.input_dim))
        self.lstm1 = BiLstm(c.input_dim, c.hidden1)
        self.drop1 = nn.Dropout(c.dropout)
        self.lstm2 = BiLstm(2 * c.hidden1, c.hidden2)
        self.drop2 = nn.Dropout(c.dropout)
        self.attention = nn.Linear(2 * c.hidden2, 1)
        self.dense = nn.Linear(2 * c.hidden2, c.dense)
        self.out = nn.Linear(c.dense, c.n_classes)

    def set_standardisation(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Dataset statistics of window-normalised training features (per dimension)."""
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp(min=1e-5))

    def forward(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = features.transpose(0, 1)  # sequence-major [T, B, D]
        T = x.shape[0]
        x = window_normalise(x, lengths)
        x = (x - self.feature_mean) / self.feature_std
        h = self.drop1(self.lstm1(x, lengths))
        h = self.drop2(self.lstm2(h, lengths))
        valid = torch.arange(T, device=x.device)[:, None] < lengths[None, :]  # [T, B]
        scores = torch.tanh(self.attention(h)).squeeze(-1)  # e_t = tanh(W h_t + b)
        scores = scores.masked_fill(~valid, float("-inf"))
        alpha = torch.softmax(scores, dim=0)  # over valid frames
        context = (alpha[..., None] * h).sum(0)  # [B, 2*hidden2]
        logits = self.out(torch.relu(self.dense(context)))
        return logits, alpha.transpose(0, 1)
