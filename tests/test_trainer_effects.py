"""Each training option of TrainConfig has an effect on what `train_model` does.

Tiny synthetic clips and a tiny model keep every run well under a second. Where a test needs
the model's initial weights it trains with lr=0 (Adam then leaves every weight as it was), so
the returned model is the one that computed the first epoch's training loss.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.nn import functional as F  # noqa: E402
from torch.optim.optimizer import register_optimizer_step_pre_hook  # noqa: E402

from ser_edge.training import trainer  # noqa: E402
from ser_edge.training.data import Example  # noqa: E402
from ser_edge.training.model import BiLstmAttention, ModelConfig, SpecAugment  # noqa: E402
from ser_edge.training.trainer import TrainConfig, train_model  # noqa: E402

DIM = 4


def _model_config(n_classes: int = 2, **kw) -> ModelConfig:
    base = dict(input_dim=DIM, n_classes=n_classes, hidden1=6, hidden2=4, dense=4, dropout=0.0, normalise="none")
    return ModelConfig(**{**base, **kw})


def _train_config(**kw) -> TrainConfig:
    base = dict(max_epochs=1, batch_size=64, lr=0.0, patience=1, balance="none", seed=0, device="cpu")
    return TrainConfig(**{**base, **kw})


def _clips(labels, seed: int = 0, lengths=None, offset: float = 0.0, scale: float = 1.0,
           flip: bool = False) -> list[Example]:
    """One clip per label: noise plus a per-class offset in the dimension of its class (of the
    other class when `flip`, for two classes), then `scale` and `offset` on every value."""
    rng = np.random.default_rng(seed)
    out = []
    for i, label in enumerate(labels):
        T = int(lengths[i]) if lengths is not None else int(rng.integers(12, 24))
        x = 0.5 * rng.standard_normal((T, DIM))
        x[:, (1 - label) if flip else label] += 1.5
        out.append(Example((x * scale + offset).astype(np.float32), int(label), f"s{i % 3}", None))
    return out


def _logits(model: BiLstmAttention, examples) -> torch.Tensor:
    """Each clip scored alone (a padded batch gives the same, see test_recipe)."""
    model.eval()
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(e.features)[None], torch.tensor([len(e.features)]))[0]
                          for e in examples])


def _targets(examples) -> torch.Tensor:
    return torch.tensor([e.label for e in examples])


@pytest.fixture
def optimiser_steps():
    """(optimiser class, its param_groups' lr and weight_decay) at every optimiser step taken."""
    steps = []

    def hook(optimiser, args, kwargs):
        steps.append((type(optimiser), [g["lr"] for g in optimiser.param_groups],
                      [g["weight_decay"] for g in optimiser.param_groups]))

    handle = register_optimizer_step_pre_hook(hook)
    yield steps
    handle.remove()


@pytest.fixture
def forwards(monkeypatch):
    """Every forward pass of the model that train_model builds: (training?, lengths, SpecAugment
    calls during the pass)."""
    calls = {"spec_augment": 0}
    passes = []

    class CountingSpecAugment(SpecAugment):
        def __call__(self, x, lengths):
            calls["spec_augment"] += 1
            return super().__call__(x, lengths)

    class RecordingModel(BiLstmAttention):
        def forward(self, features, lengths, **kwargs):
            before = calls["spec_augment"]
            out = super().forward(features, lengths, **kwargs)
            passes.append((self.training, lengths.tolist(), calls["spec_augment"] - before))
            return out

    monkeypatch.setattr(trainer, "SpecAugment", CountingSpecAugment)
    monkeypatch.setattr(trainer, "BiLstmAttention", RecordingModel)
    return passes


def _epochs(passes) -> list[list[int]]:
    """The clip lengths trained on in each epoch (the training passes between evaluations)."""
    epochs, current = [], []
    for training, lengths, _ in passes:
        if training:
            current += lengths
        elif current:
            epochs.append(current)
            current = []
    return epochs


def test_weight_decay_gives_adamw_with_that_decay_and_shrinks_the_weights(optimiser_steps):
    train, val = _clips([0, 1] * 6), _clips([0, 1] * 3, seed=1)
    config = _train_config(lr=0.05, batch_size=2)
    plain = train_model(train, val, _model_config(), config, log=None)
    assert optimiser_steps and {s[0] for s in optimiser_steps} == {torch.optim.Adam}
    assert all(s[2] == [0.0] * len(s[2]) for s in optimiser_steps)
    optimiser_steps.clear()

    decayed = train_model(train, val, _model_config(), _train_config(lr=0.05, batch_size=2, weight_decay=5.0),
                          log=None)
    assert len(optimiser_steps) == 6
    assert {s[0] for s in optimiser_steps} == {torch.optim.AdamW}
    assert all(s[1] == [0.05] * len(s[1]) and s[2] == [5.0] * len(s[2]) for s in optimiser_steps)

    # Decoupled decay multiplies every weight by (1 - lr * decay) = 0.75 at each of the 6 steps.
    def norm(model):
        return float(torch.sqrt(sum((p.detach() ** 2).sum() for p in model.parameters())))

    assert norm(decayed.model) < 0.5 * norm(plain.model)


@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_label_smoothing_is_the_training_loss(smoothing):
    train, val = _clips([0, 1, 1, 0, 1, 0, 0, 1]), _clips([0, 1], seed=1)
    result = train_model(train, val, _model_config(), _train_config(label_smoothing=smoothing), log=None)
    logits, y = _logits(result.model, train), _targets(train)
    expected = float(F.cross_entropy(logits, y, label_smoothing=smoothing))
    other = float(F.cross_entropy(logits, y, label_smoothing=0.3 - smoothing))
    assert abs(expected - other) > 1e-3  # far beyond the tolerance below: the settings are told apart
    assert result.history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)
    # Validation losses stay plain cross-entropy, comparable between settings.
    assert result.history[0]["val_loss"] == pytest.approx(float(F.cross_entropy(_logits(result.model, val),
                                                                                _targets(val))), rel=1e-5)


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_the_learning_rate_follows_the_schedule_over_max_epochs(optimiser_steps, schedule):
    train, val = _clips([0, 1] * 4), _clips([0, 1], seed=1)
    config = _train_config(lr=0.02, max_epochs=5, patience=5, schedule=schedule)  # one batch per epoch
    result = train_model(train, val, _model_config(), config, log=None)
    assert len(result.history) == 5 and len(optimiser_steps) == 5
    lrs = [s[1][0] for s in optimiser_steps]
    if schedule == "cosine":
        expected = [0.02 * (1 + math.cos(math.pi * e / 5)) / 2 for e in range(5)]
    else:
        expected = [0.02] * 5
    assert lrs == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_class_weights_are_inversely_proportional_to_the_class_counts(monkeypatch):
    counts = [2, 6, 4]
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    train, val = _clips(labels), _clips([0, 1, 2], seed=1)
    used = []

    class RecordingLoss(torch.nn.CrossEntropyLoss):
        def forward(self, input, target):
            if input.requires_grad:
                used.append(None if self.weight is None else self.weight.detach().clone())
            return super().forward(input, target)

    monkeypatch.setattr(trainer.nn, "CrossEntropyLoss", RecordingLoss)
    result = train_model(train, val, _model_config(3), _train_config(balance="weights"), log=None)
    assert len(used) == 1 and used[0] is not None
    product = used[0] * torch.tensor(counts, dtype=used[0].dtype)
    torch.testing.assert_close(product, torch.full_like(product, float(product[0])))

    logits, y = _logits(result.model, train), _targets(train)
    weights = 1.0 / torch.tensor(counts, dtype=torch.float32)
    weighted = float(F.cross_entropy(logits, y, weight=weights))
    plain = float(F.cross_entropy(logits, y))
    assert abs(weighted - plain) > 1e-3
    assert result.history[0]["train_loss"] == pytest.approx(weighted, rel=1e-5)


@pytest.mark.parametrize("balance", ["undersample", "weights", "none"])
def test_undersampling_trains_each_epoch_on_a_balanced_subset(forwards, balance):
    counts = [2, 6, 4]
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    lengths = 20 + np.arange(len(labels))  # a clip is known by its length
    train = _clips(labels, lengths=lengths)
    val = _clips([0, 1, 2], seed=1, lengths=[60, 61, 62])
    config = _train_config(lr=0.01, batch_size=4, max_epochs=3, patience=3, balance=balance)
    train_model(train, val, _model_config(3), config, log=None)
    label_of = {int(t): label for t, label in zip(lengths, labels)}
    epochs = _epochs(forwards)
    assert len(epochs) == 3
    for seen in epochs:
        assert set(seen) <= set(label_of) and len(seen) == len(set(seen))  # training clips, each once
        per_class = np.bincount([label_of[t] for t in seen], minlength=3).tolist()
        assert per_class == ([2, 2, 2] if balance == "undersample" else counts)


def test_spec_augment_masks_training_passes_only(forwards):
    train, val = _clips([0, 1] * 4, lengths=[30] * 8), _clips([0, 1], seed=1)
    config = _train_config(max_epochs=2, patience=2, spec_augment=(2, 2, 2, 4))
    result = train_model(train, val, _model_config(), config, log=None)
    augment = result.model.spec_augment
    assert isinstance(augment, SpecAugment)
    assert (augment.freq_masks, augment.freq_width, augment.time_masks, augment.time_width) == (2, 2, 2, 4)
    assert {training for training, _, _ in forwards} == {True, False}
    assert all(calls == (1 if training else 0) for training, _, calls in forwards)

    # With lr=0 the masks change what the training loss sees, never the validation loss.
    forwards.clear()
    plain = train_model(train, val, _model_config(), _train_config(max_epochs=2, patience=2), log=None)
    assert plain.model.spec_augment is None and all(calls == 0 for _, _, calls in forwards)
    assert abs(result.history[0]["train_loss"] - plain.history[0]["train_loss"]) > 1e-4
    assert result.history[0]["val_loss"] == pytest.approx(plain.history[0]["val_loss"], rel=1e-6)


def test_the_best_epochs_weights_are_returned():
    # Validation clips carry the other class's pattern: the better the model learns the training
    # clips, the worse its validation loss, so epoch 1 is the best of all.
    train = _clips([0, 1] * 8)
    val = _clips([0, 1] * 3, seed=1, flip=True)
    config = _train_config(lr=0.05, batch_size=4, max_epochs=4, patience=4)
    result = train_model(train, val, _model_config(), config, log=None)
    losses = [h["val_loss"] for h in result.history]
    assert len(losses) == 4 and all(a < b for a, b in zip(losses, losses[1:]))
    assert result.best_epoch == 1

    returned = float(F.cross_entropy(_logits(result.model, val), _targets(val)))
    assert returned == pytest.approx(losses[0], rel=1e-5)
    assert returned < losses[-1] - 1e-3
    # The same run stopped after its first epoch has exactly the returned weights.
    first = train_model(train, val, _model_config(), config.__class__(**{**config.to_dict(), "max_epochs": 1}),
                        log=None)
    returned_state, first_state = result.model.state_dict(), first.model.state_dict()
    assert returned_state.keys() == first_state.keys()
    for name in returned_state:
        torch.testing.assert_close(returned_state[name], first_state[name], rtol=0, atol=0)


def test_the_monitor_picks_the_best_epoch_by_loss_or_by_uar():
    rng = np.random.default_rng(1)
    train = _clips(rng.integers(0, 3, 18).tolist(), seed=1)
    val = _clips([0, 1, 2] * 3, seed=101)
    for e in val[:3]:  # a few clips the training clips do not explain
        e.label = (e.label + 1) % 3
    config = _train_config(lr=0.05, batch_size=4, max_epochs=6, patience=6)
    by_loss = train_model(train, val, _model_config(3), config, log=None)
    by_uar = train_model(train, val, _model_config(3), TrainConfig(**{**config.to_dict(), "monitor": "uar"}),
                         log=None)
    history = by_loss.history
    assert [h["val_loss"] for h in by_uar.history] == [h["val_loss"] for h in history]  # the same run
    lowest_loss = min(history, key=lambda h: h["val_loss"])["epoch"]
    highest_uar = min(history, key=lambda h: (-round(h["val_uar"], 6), h["val_loss"]))["epoch"]  # ties: lower loss
    assert lowest_loss != highest_uar
    assert (by_loss.best_epoch, by_uar.best_epoch) == (lowest_loss, highest_uar)
    for result in (by_loss, by_uar):
        returned = float(F.cross_entropy(_logits(result.model, val), _targets(val)))
        assert returned == pytest.approx(history[result.best_epoch - 1]["val_loss"], rel=1e-5)


def _front_end_stats(examples, normalise: str) -> tuple[np.ndarray, np.ndarray]:
    frames = [e.features.astype(np.float64) for e in examples]
    if normalise == "mean":
        frames = [f - f.mean(0) for f in frames]
    frames = np.concatenate(frames)
    return frames.mean(0), frames.std(0)


@pytest.mark.parametrize("normalise, shift", [("none", dict(offset=1000.0)), ("mean", dict(scale=100.0))])
def test_standardisation_uses_the_training_clips_only(normalise, shift):
    train = _clips([0, 1] * 5)
    val = _clips([0, 1] * 5, seed=1, **shift)  # far from the training clips after the front end
    result = train_model(train, val, _model_config(normalise=normalise), _train_config(), log=None)
    mean, std = _front_end_stats(train, normalise)
    both_mean, both_std = _front_end_stats(train + val, normalise)
    assert max(np.abs(both_mean - mean).max(), np.abs(both_std - std).max()) > 10  # val would show
    np.testing.assert_allclose(result.model.feature_mean.numpy(), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(result.model.feature_std.numpy(), std, rtol=1e-5, atol=1e-5)


def _with_teacher(examples, soft=None, embedding=None):
    from dataclasses import replace


    return [replace(e, soft=None if soft is None else soft[i].astype(np.float32),
                    target_embedding=None if embedding is None else embedding[i].astype(np.float32))
            for i, e in enumerate(examples)]


@pytest.mark.parametrize("weight, temperature", [(0.5, 2.0), (1.0, 4.0)])
def test_distillation_mixes_the_teachers_kl_into_the_training_loss(weight, temperature):
    rng = np.random.default_rng(0)
    soft = rng.dirichlet(np.ones(2), size=8)
    train = _with_teacher(_clips([0, 1, 1, 0, 1, 0, 0, 1]), soft=soft)
    val = _clips([0, 1], seed=1)
    result = train_model(train, val, _model_config(), _train_config(distill=weight, temperature=temperature),
                         log=None)
    logits, y = _logits(result.model, train), _targets(train)
    target = torch.tensor(soft, dtype=torch.float32)
    kl = float((target * (target.log() - F.log_softmax(logits / temperature, -1))).sum(-1).mean())
    expected = (1 - weight) * float(F.cross_entropy(logits, y)) + weight * kl * temperature**2
    assert result.history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_examples_without_teacher_targets_count_for_cross_entropy_only():
    train = _clips([0, 1, 1, 0])
    soft = np.array([[0.9, 0.1], [0.2, 0.8]])
    train = _with_teacher(train[:2], soft=soft) + train[2:]
    result = train_model(train, _clips([0, 1], seed=1), _model_config(), _train_config(distill=0.5), log=None)
    logits, y = _logits(result.model, train), _targets(train)
    target = torch.tensor(soft, dtype=torch.float32)
    kl = float((target * (target.log() - F.log_softmax(logits[:2] / 2.0, -1))).sum(-1).mean())
    expected = 0.5 * float(F.cross_entropy(logits, y)) + 0.5 * kl * 4.0
    assert result.history[0]["train_loss"] == pytest.approx(expected, rel=1e-5)


def test_the_embedding_loss_trains_a_projection_of_the_context_towards_the_teacher():
    rng = np.random.default_rng(1)
    labels = [0, 1] * 16
    teacher = rng.standard_normal((len(labels), 5))
    train = _with_teacher(_clips(labels), embedding=teacher)
    val = _clips([0, 1], seed=1)
    config = _train_config(max_epochs=30, patience=30, lr=0.01)

    def fitted(embed_distill):
        torch.manual_seed(0)
        result = train_model(train, val, _model_config(), replace_config(config, embed_distill=embed_distill),
                             log=None)
        return result

    plain, distilled = fitted(0.0), fitted(1.0)
    # With the embedding loss the training loss carries an extra term that starts near 1
    # (cosine of a random projection) and is driven down; without it the loss is cross-entropy.
    logits = _logits(plain.model, train)
    assert plain.history[-1]["train_loss"] == pytest.approx(float(F.cross_entropy(logits, _targets(train))),
                                                           rel=0.2)
    assert distilled.history[0]["train_loss"] > plain.history[0]["train_loss"] + 0.5
    assert distilled.history[-1]["train_loss"] < distilled.history[0]["train_loss"] - 0.5


def replace_config(config, **kw):
    from dataclasses import replace


    return replace(config, **kw)


def test_distillation_without_teacher_targets_is_refused():
    with pytest.raises(ValueError, match="teacher targets"):
        train_model(_clips([0, 1, 1, 0]), _clips([0, 1], seed=1), _model_config(), _train_config(distill=0.5),
                    log=None)
    with pytest.raises(ValueError, match="teacher embeddings"):
        train_model(_clips([0, 1, 1, 0]), _clips([0, 1], seed=1), _model_config(),
                    _train_config(embed_distill=1.0), log=None)


def test_gradient_reversal_is_the_identity_forward_and_flips_the_gradient():
    x = torch.randn(3, 5, requires_grad=True)
    y = trainer._reverse(x, 0.7)
    assert torch.equal(y, x)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.full_like(x, -0.7))


def test_an_adversary_tells_apart_corpora_or_speakers_and_only_where_there_are_two():
    from pathlib import Path

    clips = [Example(np.zeros((5, DIM), np.float32), 0, group, Path(f"/{i}.wav"))
             for i, group in enumerate(["a:1", "a:2", "b:1", "b:1"])]
    config = _model_config()
    head, domains = trainer._adversary(clips, config, _train_config(adversary="corpus"), "cpu")
    assert domains == {"a": 0, "b": 1} and head[-1].out_features == 2
    head, domains = trainer._adversary(clips, config, _train_config(adversary="speaker"), "cpu")
    assert domains == {"a:1": 0, "a:2": 1, "b:1": 2}
    assert trainer._adversary(clips[:2], config, _train_config(adversary="corpus"), "cpu") == (None, {})
    assert trainer._adversary(clips, config, _train_config(), "cpu") == (None, {})
    with pytest.raises(ValueError, match="adversary must be"):
        _train_config(adversary="accent")
    assert "adversary" not in _train_config().to_dict() and _train_config(adversary="speaker").to_dict()["adversary"]


def test_the_adversary_changes_training_and_stays_out_of_the_model():
    train, val = _clips([0, 1] * 12, seed=1), _clips([0, 1] * 4, seed=2)
    plain = train_model(train, val, _model_config(), _train_config(lr=0.01, max_epochs=3, patience=5))
    adv = train_model(train, val, _model_config(), _train_config(lr=0.01, max_epochs=3, patience=5,
                                                                 adversary="speaker", adversary_weight=1.0))
    assert set(adv.model.state_dict()) == set(plain.model.state_dict())  # no head in the exported model
    assert [h["train_loss"] for h in adv.history] != [h["train_loss"] for h in plain.history]
    # The reversed gradient reaches the encoder: its weights end elsewhere.
    a, p = adv.model.state_dict(), plain.model.state_dict()
    assert any(not torch.equal(a[k], p[k]) for k in a if "lstm" in k.lower())


def test_an_adversary_given_the_label_sees_it_beside_the_attention_vector():
    from pathlib import Path

    clips = [Example(np.zeros((5, DIM), np.float32), i % 2, group, Path(f"/{i}.wav"))
             for i, group in enumerate(["a:1", "a:2", "b:1", "b:1"])]
    config = _model_config()
    plain, _ = trainer._adversary(clips, config, _train_config(adversary="speaker"), "cpu")
    given, _ = trainer._adversary(clips, config, _train_config(adversary="speaker", adversary_given_label=True), "cpu")
    assert given[0].in_features == plain[0].in_features + config.n_classes
    assert "adversary_given_label" not in _train_config(adversary="speaker").to_dict()  # older recipes unchanged
    assert _train_config(adversary="speaker", adversary_given_label=True).to_dict()["adversary_given_label"] is True


def test_a_complete_only_adversary_tells_apart_only_speakers_holding_every_class():
    from pathlib import Path

    # Speaker "a:1" holds both classes, "a:2" and "b:1" one each (as most URDU speakers do); the
    # clip of "a:2" outside the classes (label -1) does not count towards a class.
    clips = [Example(np.zeros((5, DIM), np.float32), label, group, Path(f"/{i}.wav"), own="a:x" if label < 0 else "")
             for i, (label, group) in enumerate([(0, "a:1"), (1, "a:1"), (0, "a:2"), (-1, "a:2"), (1, "b:1"),
                                                 (0, "b:2"), (1, "b:2")])]
    config = _model_config()
    complete = _train_config(adversary="speaker", adversary_complete=True)
    head, domains = trainer._adversary(clips, config, complete, "cpu")
    assert domains == {"a:1": 0, "b:2": 1} and head[-1].out_features == 2
    assert trainer._adversary(clips[:5], config, complete, "cpu") == (None, {})  # one such speaker: nothing to tell
    _, every = trainer._adversary(clips, config, _train_config(adversary="speaker"), "cpu")
    assert set(every) == {"a:1", "a:2", "b:1", "b:2"}
    assert "adversary_complete" not in _train_config(adversary="speaker").to_dict()  # older recipes unchanged
    assert complete.to_dict()["adversary_complete"] is True


def test_a_complete_only_adversary_trains_as_before_where_every_speaker_holds_every_class():
    from dataclasses import replace

    kwargs = dict(lr=0.01, max_epochs=3, patience=5, adversary="speaker", adversary_weight=1.0)
    val = _clips([0, 1] * 4, seed=2)
    train = _clips([0, 1] * 12, seed=1)  # speakers s0, s1, s2 each hold both classes
    adv = train_model(train, val, _model_config(), _train_config(**kwargs))
    same = train_model(train, val, _model_config(), _train_config(**kwargs, adversary_complete=True))
    assert [h["train_loss"] for h in same.history] == [h["train_loss"] for h in adv.history]
    # One more speaker holding one class: the plain adversary tells it apart, the complete-only one ignores it.
    lone = [replace(e, group="s9") for e in _clips([0] * 6, seed=3)]
    adv = train_model(train + lone, val, _model_config(), _train_config(**kwargs))
    same = train_model(train + lone, val, _model_config(), _train_config(**kwargs, adversary_complete=True))
    assert [h["train_loss"] for h in same.history] != [h["train_loss"] for h in adv.history]
    assert set(same.model.state_dict()) == set(adv.model.state_dict())  # no head in the exported model


def test_telling_the_adversary_the_label_changes_training_and_not_the_exported_model():
    train, val = _clips([0, 1] * 12, seed=1), _clips([0, 1] * 4, seed=2)
    kwargs = dict(lr=0.01, max_epochs=3, patience=5, adversary="speaker", adversary_weight=1.0)
    adv = train_model(train, val, _model_config(), _train_config(**kwargs))
    given = train_model(train, val, _model_config(), _train_config(**kwargs, adversary_given_label=True))
    assert set(given.model.state_dict()) == set(adv.model.state_dict())
    assert [h["train_loss"] for h in given.history] != [h["train_loss"] for h in adv.history]


def _owned(labels, own, seed: int = 0) -> list[Example]:
    """Clips as `_clips` makes them, each with its label among all of its corpus's labels."""
    return [Example(e.features, e.label, e.group, e.path, own=o) for e, o in zip(_clips(labels, seed=seed), own)]


def test_the_own_label_head_has_a_softmax_per_corpus():
    clips = _owned([0, 1, 0, -1, -1], ["a:x", "a:y", "b:x", "b:z", "a:w"])
    config = _model_config()
    head, index, allowed = trainer._own_head(clips, config, _train_config(own_labels=0.5), "cpu")
    assert index == {"a:w": 0, "a:x": 1, "a:y": 2, "b:x": 3, "b:z": 4} and head[-1].out_features == 5
    assert allowed.tolist() == [[True, True, True, False, False]] * 3 + [[False, False, False, True, True]] * 2
    assert trainer._own_head(clips[:3], config, _train_config(), "cpu") == (None, {}, None)
    with pytest.raises(ValueError, match="own_labels > 0"):  # clips without a class would train nothing
        trainer._own_head(clips, config, _train_config(), "cpu")
    with pytest.raises(ValueError, match="no own label"):
        trainer._own_head(_owned([0, -1], ["a:x", ""]), config, _train_config(own_labels=0.5), "cpu")
    with pytest.raises(ValueError, match="own_labels must be >= 0"):
        _train_config(own_labels=-1.0)
    assert "own_labels" not in _train_config().to_dict()  # older recipes' dicts unchanged
    assert _train_config(own_labels=0.5).to_dict()["own_labels"] == 0.5


def test_the_class_loss_ignores_clips_without_a_class():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, requires_grad=True)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-1)
    config = _train_config()
    loss = trainer._loss(logits, None, torch.tensor([0, -1, 1]), [], loss_fn, config, None, "cpu")
    assert torch.allclose(loss, F.cross_entropy(logits[[0, 2]], torch.tensor([0, 1])))
    none = trainer._loss(logits, None, torch.tensor([-1, -1, -1]), [], loss_fn, config, None, "cpu")
    assert float(none.detach()) == 0.0 and none.requires_grad  # a batch of such clips alone: no NaN
    keep = trainer._balanced_subset(_owned([0, 0, 0, 1, -1, -1], ["a:x"] * 6), np.random.default_rng(0))
    assert {4, 5} <= set(keep.tolist()) and len(keep) == 4  # one of each class, every clip without one


def test_clips_without_a_class_train_the_encoder_through_the_own_head_only():
    train = _owned([0, 1] * 12, ["a:x", "a:y"] * 12, seed=1)
    extra = _owned([0, 1] * 6, ["a:z", "a:w"] * 6, seed=3)
    extra = [Example(e.features, -1, e.group, e.path, own=e.own) for e in extra]
    val = _clips([0, 1] * 4, seed=2)
    kwargs = dict(lr=0.01, max_epochs=3, patience=5, own_labels=1.0)
    with pytest.raises(ValueError, match="own_labels"):
        train_model(train + extra, val, _model_config(), _train_config(lr=0.01), log=None)
    plain = train_model(train, val, _model_config(), _train_config(**kwargs))
    more = train_model(train + extra, val, _model_config(), _train_config(**kwargs))
    assert set(more.model.state_dict()) == set(plain.model.state_dict())  # the head is never exported
    assert all(math.isfinite(h["train_loss"]) for h in more.history)
    a, p = more.model.state_dict(), plain.model.state_dict()
    assert any(not torch.equal(a[k], p[k]) for k in a if "lstm" in k.lower())  # they reached the encoder


def test_each_step_regresses_the_teacher_frame_at_the_same_relative_time():
    from pathlib import Path

    # 3 valid steps of clip 0 against 6 teacher frames: steps 0, 1, 2 take frames 1, 3, 5; clip 1
    # (2 valid steps of 3) has no frames and counts for nothing.
    width = 4
    teacher = np.eye(width, dtype=np.float32)[[0, 1, 2, 3, 0, 1]]
    items = [Example(np.zeros((9, DIM), np.float32), 0, "s0", Path("/0.wav"), teacher_frames=teacher.astype(np.float16)),
             Example(np.zeros((6, DIM), np.float32), 1, "s1", Path("/1.wav"))]
    projection = torch.nn.Linear(width, width, bias=False)
    with torch.no_grad():
        projection.weight.copy_(torch.eye(width))
    h = torch.zeros(3, 2, width)
    h[:, 0] = torch.from_numpy(teacher[[1, 3, 5]])
    h[:2, 1] = torch.randn(2, width)
    steps = torch.tensor([3, 2])
    assert float(trainer._frame_loss(h, steps, items, projection, "cpu").detach()) == pytest.approx(0.0, abs=1e-6)
    h[2, 0] = torch.from_numpy(teacher[4])  # frame 4 instead of 5: orthogonal, cos 0 on one of 3 steps
    assert float(trainer._frame_loss(h, steps, items, projection, "cpu").detach()) == pytest.approx(1 / 3, abs=1e-6)
    assert float(trainer._frame_loss(h, steps, items[1:] * 2, projection, "cpu").detach()) == 0.0  # no frames: no loss


def test_frame_distillation_trains_the_encoder_and_stays_out_of_the_model():
    from dataclasses import replace

    rng = np.random.default_rng(5)
    train = [replace(e, teacher_frames=rng.standard_normal((len(e.features) // 2, 6)).astype(np.float16))
             for e in _clips([0, 1] * 12, seed=1)]
    val = _clips([0, 1] * 4, seed=2)
    kwargs = dict(lr=0.01, max_epochs=3, patience=5)
    plain = train_model(train, val, _model_config(), _train_config(**kwargs))
    taught = train_model(train, val, _model_config(), _train_config(**kwargs, frame_distill=1.0))
    assert set(taught.model.state_dict()) == set(plain.model.state_dict())  # the projection is not exported
    assert [h["train_loss"] for h in taught.history] != [h["train_loss"] for h in plain.history]
    a, p = taught.model.state_dict(), plain.model.state_dict()
    assert any(not torch.equal(a[k], p[k]) for k in a if "lstm" in k.lower())
    with pytest.raises(ValueError, match="teacher frames"):
        train_model(_clips([0, 1] * 12, seed=1), val, _model_config(), _train_config(**kwargs, frame_distill=1.0))
    with pytest.raises(ValueError, match="crop_frames"):
        _train_config(frame_distill=1.0, crop_frames=20)
    assert "frame_distill" not in _train_config().to_dict()


@pytest.mark.parametrize("lam", [1.0, 0.3])
def test_mixup_mixes_the_pooled_vectors_and_the_labels_losses_alike(monkeypatch, lam):
    # Two clips of two classes in one batch, each other's partner: the loss is the same whichever
    # order the batch holds them in, so it can be computed here from the (unchanged, lr=0) model.
    train, val = _clips([0, 1], lengths=[16, 16]), _clips([0, 1], seed=1)
    draws = []

    def draw(rng, n, alpha):
        draws.append((n, alpha))
        return lam, np.array([1, 0])

    monkeypatch.setattr(trainer, "_mixup_draw", draw)
    result = train_model(train, val, _model_config(), _train_config(mixup=0.4), log=None)
    assert draws == [(2, 0.4)]
    model = result.model.eval()
    with torch.no_grad():
        context = torch.cat([model(torch.from_numpy(e.features)[None], torch.tensor([len(e.features)]),
                                   return_context=True)[2] for e in train])
        logits = model.head(lam * context + (1 - lam) * context.flip(0))
        y = _targets(train)
        expected = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y.flip(0))
        plain = F.cross_entropy(model.head(context), y)
    assert result.history[0]["train_loss"] == pytest.approx(float(expected), rel=1e-5)
    if lam == 1.0:  # a clip mixed with nothing is plain cross-entropy
        assert float(expected) == pytest.approx(float(plain), rel=1e-6)
    else:
        assert abs(float(expected) - float(plain)) > 1e-3
    # head() is what forward applies to the pooled vector
    assert torch.allclose(model.head(context), _logits(model, train), atol=1e-6)


def test_mixup_changes_training_reproducibly_and_is_checked():
    train, val = _clips([0, 1] * 8), _clips([0, 1] * 2, seed=1)

    def losses(**kw):
        config = _train_config(lr=0.01, batch_size=4, max_epochs=2, **kw)
        return [h["train_loss"] for h in train_model(train, val, _model_config(), config, log=None).history]

    mixed = losses(mixup=0.4)
    assert mixed == losses(mixup=0.4)
    assert mixed != losses()
    assert "mixup" not in _train_config().to_dict()  # older recipes' dicts unchanged
    assert _train_config(mixup=0.4).to_dict()["mixup"] == 0.4
    for bad in ({"mixup": -0.1}, {"mixup": math.inf}, {"mixup": 0.4, "distill": 0.5}):
        with pytest.raises(ValueError, match="mixup"):
            _train_config(**bad)
