"""Named training recipes: the features, the model's sizes and front end, and how it is trained.

"seed" is the recipe the project started from; "default" is the one `ser-edge train`,
`ser-edge evaluate` and the bundled model use, chosen on the development speakers only
(see results/ablation for how each of its changes was measured).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Optional, Union

from ser_edge.features import FeatureConfig
from ser_edge.training.model import ModelConfig, level_groups
from ser_edge.training.trainer import TrainConfig

__all__ = ["RECIPES", "Recipe", "describe", "get_recipe"]


@dataclass(frozen=True)
class Recipe:
    features: FeatureConfig
    model: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields other than the dimensions
    train: TrainConfig = TrainConfig()
    augment: tuple[str, ...] = ()  # extra training copies, see data.Augmenter ("speed:0.9", "pink:15", ...)
    speaker_norm: bool = False     # subtract each speaker's mean frame (test speakers too: transductive)
    ensemble: int = 1              # models trained with seeds seed..seed+n-1, probabilities averaged in one graph
    baseline: str = ""             # "speaker"/"utterance": ln F0, ln energy relative to that median (data.speaker_baselines)

    def augmenter(self, cache):
        """The Augmenter of this recipe over `cache`, or None when it adds no copies."""
        from ser_edge.training.data import Augmenter

        return Augmenter(cache, self.augment) if self.augment else None

    def model_config(self, n_classes: int, input_dim: Optional[int] = None) -> ModelConfig:
        return ModelConfig(input_dim=input_dim or self.features.dim, n_classes=n_classes,
                           level_groups=self._level_groups(), **self.model)

    def _level_groups(self) -> tuple[tuple[int, int], ...]:
        groups = level_groups(self.features)
        if self.baseline:  # ln energy is already relative to the speaker's: the window keeps its level
            energy = self.features.block_slices()["prosody"].start + 2
            groups = tuple(g for g in groups if g != (energy, energy + 1))
        return groups

    def derive(self, features: Union[str, dict, FeatureConfig, None] = None, model: Optional[dict] = None,
               train: Optional[dict] = None, augment: Optional[tuple[str, ...]] = None,
               speaker_norm: Optional[bool] = None, ensemble: Optional[int] = None,
               baseline: Optional[str] = None) -> "Recipe":
        """A copy with a feature preset name, FeatureConfig fields, model fields or train fields changed."""
        f = self.features
        if isinstance(features, str):
            f = FeatureConfig.preset(features)
        elif isinstance(features, dict):
            f = f.replace(**features)
        elif isinstance(features, FeatureConfig):
            f = features
        m = {**self.model, **(model or {})}
        ModelConfig(input_dim=f.dim, n_classes=2, level_groups=level_groups(f), **m)  # validates
        n = self.ensemble if ensemble is None else int(ensemble)
        if n < 1:
            raise ValueError(f"ensemble must be >= 1 model, got {n}")
        b = self.baseline if baseline is None else baseline
        if b not in ("", "speaker", "utterance"):
            raise ValueError(f"baseline must be '', 'speaker' or 'utterance', got {b!r}")
        if b and "prosody" not in f.blocks:
            raise ValueError("a speaker baseline needs the prosody block (ln F0, voicing, ln energy)")
        return Recipe(f, m, replace(self.train, **(train or {})),
                      self.augment if augment is None else tuple(augment),
                      self.speaker_norm if speaker_norm is None else speaker_norm, n, b)

    def check_runnable(self, name: str) -> None:
        """Refuse a recipe whose features the runtime cannot compute (a speaker baseline)."""
        if self.baseline:
            raise ValueError(f"recipe {name!r} measures a {self.baseline} baseline of ln F0 and ln energy, which "
                             "only the ablation computes (the runtime has no such input); choose another recipe")

    def to_dict(self) -> dict:
        return {"features": json.loads(self.features.to_json()), "model": dict(self.model),
                "train": self.train.to_dict(), "augment": list(self.augment),
                "speaker_norm": self.speaker_norm, "ensemble": self.ensemble,
                **({"baseline": self.baseline} if self.baseline else {})}


RECIPES: dict[str, Recipe] = {
    "seed": Recipe(FeatureConfig.preset("seed")),
}
#: The recipe chosen on the development speakers: round 4 (results/ablation/round4) chose
#: "multicond ×3", the highest mean of clean and 10 dB noisy development UARs (the
#: level-no-deltas model with one noisy copy of every training clip, 3 seeds, probabilities
#: averaged); round 11 (results/ablation/round11) put back the deltas and delta-deltas
#: ("multicond-deltas ×3", above multicond on the development speakers), which then also
#: passed the two conditions fixed before they were measured: ahead of multicond ×3 over the
#: ten cross-corpus and joint protocols in 100 % of speaker draws, and a bundle held-out mean
#: of at least 54.2 (66.5). Its choice as a lever was informed by the published tables
#: (docs/results.md, eleventh round).
#: Round 16 (docs/results.md, sixteenth round) replaced each clean training clip by a copy with
#: a faint floor ("multicond-floor ×3": a candidate on the development speakers by a rule fixed
#: before it ran, then shipped by a second one: its bundle's held-out mean above the previous
#: default's, both decided by the blend: 68.7 against 68.6, +0.08, a tie within −3.2 to +3.4).
RECIPES["default"] = RECIPES["seed"].derive(
    features={"blocks": ["logmel", "prosody"]},
    model={"hidden1": 128, "hidden2": 64, "dense": 64, "subsample": 3, "normalise": "level", "deltas": 2},
    train={"balance": "weights", "max_epochs": 40, "patience": 10, "schedule": "cosine", "monitor": "uar",
           "spec_augment": (2, 8, 2, 20)},
    augment=("mixed:0-20", "floor:25-45"),
    ensemble=3,
)


def _copy(spec: str) -> str:
    kind, _, value = spec.partition(":")
    if kind == "mixed":
        return f"{spec} (per clip white, pink or babble noise at a random {value.replace('-', ' to ')} dB SNR)"
    if kind == "floor":
        return (f"{spec} (each clean clip replaced by a copy with white or pink noise at a random "
                f"{value.replace('-', ' to ')} dB SNR)")
    return spec


def describe(recipe: Recipe) -> str:
    """One paragraph saying what a recipe does, for model cards and result pages."""
    f, m, t = recipe.features, recipe.model_config(2), recipe.train
    blocks = {"spectrogram": f"{f.n_bins}-bin dB spectrogram", "logmel": f"{f.n_mels} log-mel",
              "mfcc": f"MFCC ({f.n_mfcc})", "prosody": "prosody (YIN log F0, voicing, log energy)"}
    parts = [
        f"features: {' + '.join(blocks[b] for b in f.blocks)} ({f.dim} per {1000 * f.hop_s:g} ms frame)",
        {"mean": "per-window mean removal per dimension", "level": "per-window gain removal",
         "level-power": "per-window gain removal by the power-weighted mean of the frames' log levels",
         "none": "no window normalisation"}[m.normalise],
        *(["deltas" + (" and delta-deltas" if m.deltas == 2 else "")] if m.deltas else []),
        *([f"{m.subsample}-frame mean pooling"] if m.subsample > 1 else []),
        f"Bi-LSTM {m.hidden1}/{m.hidden2} + attention + dense {m.dense}, dropout {m.dropout}",
        *(["the window's mean and standard deviation of every standardised frame value beside the "
           "attention context"] if m.stats else []),
        f"{'AdamW' if t.weight_decay else 'Adam'} {t.lr:g}" + (f", weight decay {t.weight_decay:g}" if t.weight_decay else "")
        + (", cosine schedule" if t.schedule == "cosine" else ""),
        f"at most {t.max_epochs} epochs, early stopping on validation {t.monitor} (patience {t.patience})",
        {"undersample": "classes balanced by undersampling", "weights": "class-weighted loss",
         "none": "no class balancing"}[t.balance],
        *([f"label smoothing {t.label_smoothing:g}"] if t.label_smoothing else []),
        *([f"SpecAugment {t.spec_augment}"] if any(t.spec_augment) else []),
        *([f"ln F0 and ln energy relative to the {recipe.baseline}'s median over voiced frames (a baseline; "
           "the window keeps its energy level)"] if recipe.baseline else []),
        *([f"random {t.crop_frames}-frame crops"] if t.crop_frames else []),
        *([f"trained on the runtime's analysis windows ({t.windows[0]:g} s every {t.windows[1]:g} s over the speech "
           "the voice-activity gate finds in each clip, one drawn per clip and epoch), validated on the mean of "
           "each clip's windows"] if t.windows else []),
        *([f"trained on what the runtime decides on (each speech segment the voice-activity gate finds in a clip, "
           f"with {t.segments:g} s of the audio either side, one drawn per clip and epoch), validated as the runtime "
           "decides (the segments weighted by their lengths)"
           + ("; each epoch the segment is widened on each side by a random amount up to the clip's edge"
              if t.segments_widen else "")] if t.segments >= 0 else []),
        *([f"the second LSTM's outputs, through a training-only projection, regress the Whisper-base teacher's "
           f"encoder frames (cosine, weight {t.frame_distill:g})"] if t.frame_distill else []),
        *([f"a training-only {t.adversary} classifier on the pooled attention vector"
           + (" and the clip's label" if t.adversary_given_label else "")
           + (" (only speakers holding every class)" if t.adversary_complete else "")
           + f" through gradient reversal (weight ramping to {t.adversary_weight:g})"]
          if t.adversary and t.adversary_weight else []),
        *([f"extra training copies {', '.join(_copy(a) for a in recipe.augment)}"] if recipe.augment else []),
        *([f"an ensemble of {recipe.ensemble} such models (seeds seed..seed+{recipe.ensemble - 1}) whose "
           "probabilities are averaged inside one exported graph"] if recipe.ensemble > 1 else []),
    ]
    return "; ".join(parts) + "."


def get_recipe(name: str) -> Recipe:
    """A named recipe, or a row of the ablation (see ablation.py) by its name."""
    if name in RECIPES:
        return RECIPES[name]
    from ser_edge.training.ablation import ROWS, resolve

    if name in ROWS:
        return resolve(name)
    raise ValueError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)} or an ablation row "
                     f"({', '.join(ROWS)})")
