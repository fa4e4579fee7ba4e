"""The model front end (normalisation, deltas, pooling), training options, augmentation and recipes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ser_edge.features import FeatureConfig, extract  # noqa: E402
from ser_edge.training.data import Augmenter, Example, FeatureCache, speaker_normalise  # noqa: E402
from ser_edge.training.model import (  # noqa: E402
    BiLstmAttention,
    ModelConfig,
    SpecAugment,
    deltas,
    level_groups,
    level_normalise,
    pool,
)
from ser_edge.training.recipes import RECIPES, get_recipe  # noqa: E402
from ser_edge.training.trainer import TrainConfig, train_model  # noqa: E402


def _config(**kw):
    return ModelConfig(input_dim=12, n_classes=3, hidden1=16, hidden2=8, dense=8, **kw)


@pytest.mark.parametrize("kw", [dict(), dict(normalise="level", level_groups=((0, 8),)), dict(deltas=2),
                                dict(subsample=3), dict(normalise="none", deltas=1, subsample=2)])
def test_a_padded_batch_scores_each_item_as_if_alone_with_every_front_end(kw):
    torch.manual_seed(0)
    model = BiLstmAttention(_config(**kw)).eval()
    x = torch.randn(3, 50, 12)
    lengths = torch.tensor([50, 31, 7])
    with torch.no_grad():
        logits, attention = model(x, lengths)
        for b in range(3):
            one, att = model(x[b : b + 1, : lengths[b]], lengths[b : b + 1])
            torch.testing.assert_close(one[0], logits[b], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(att[0], attention[b, : lengths[b]], atol=1e-6, rtol=1e-5)
            assert float(attention[b, lengths[b]:].abs().sum()) == 0.0
            assert float(attention[b].sum()) == pytest.approx(1.0, abs=1e-5)


def test_level_normalisation_cancels_a_gain_but_keeps_the_spectral_shape():
    fc = FeatureConfig.preset("logmel").replace(blocks=["logmel", "mfcc"])
    groups = level_groups(fc)
    assert groups == ((0, 40),)  # MFCC without c0 does not move with gain
    assert level_groups(fc.replace(mfcc_include_c0=True)) == ((0, 40), (40, 41))
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(16000).astype(np.float32) * np.linspace(0.1, 1, 16000, dtype=np.float32)
    base = torch.from_numpy(extract(signal, fc))[:, None, :]
    loud = torch.from_numpy(extract(signal * 7.0, fc))[:, None, :]
    lengths = torch.tensor([base.shape[0]])
    a, b = level_normalise(base, lengths, groups), level_normalise(loud, lengths, groups)
    torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)
    # The per-band mean over time (the window's spectral shape) is kept, unlike "mean".
    assert float(a[:, 0, :40].mean(0).std()) > 0.1


def test_deltas_equal_the_regression_formula_inside_and_repeat_edges():
    x = torch.randn(30, 1, 4, dtype=torch.float64)
    out = deltas(x, torch.tensor([30]), order=2)
    padded = torch.cat([x[:1]] * 2 + [x] + [x[-1:]] * 2)
    expected = sum(n * (padded[2 + n : 32 + n] - padded[2 - n : 32 - n]) for n in (1, 2)) / 10.0
    torch.testing.assert_close(out[..., 4:8], expected)
    librosa = pytest.importorskip("librosa")
    # Away from the edges this is librosa's delta with width 5.
    ref = librosa.feature.delta(x[:, 0].T.numpy(), width=5, order=1, mode="nearest").T
    np.testing.assert_allclose(out[2:-2, 0, 4:8].numpy(), ref[2:-2], atol=1e-10)


def test_pooling_averages_runs_of_frames_within_each_length():
    x = torch.arange(7, dtype=torch.float64)[:, None, None].repeat(1, 2, 1)
    x[5:, 1] = 0  # the second item has 5 frames
    pooled, lengths = pool(x, torch.tensor([7, 5]), 3)
    assert lengths.tolist() == [3, 2]
    assert pooled[:, 0, 0].tolist() == [1.0, 4.0, 6.0]
    assert pooled[:2, 1, 0].tolist() == [1.0, 3.5]


def test_spec_augment_masks_only_in_training():
    model = BiLstmAttention(_config())
    model.spec_augment = SpecAugment(2, 4, 2, 5, generator=torch.Generator().manual_seed(0))
    x, lengths = torch.randn(2, 40, 12), torch.tensor([40, 40])
    model.eval()
    with torch.no_grad():
        a, b = model(x, lengths)[0], model(x, lengths)[0]
    torch.testing.assert_close(a, b)
    masked = model.spec_augment(torch.ones(40, 2, 12), lengths)
    assert 0 < float(masked.mean()) < 1


@pytest.mark.parametrize("bad", [dict(normalise="pcen"), dict(deltas=3), dict(subsample=0),
                                 dict(level_groups=((5, 40),))])
def test_model_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        _config(**bad)


@pytest.mark.parametrize("bad", [dict(schedule="step"), dict(monitor="acc"), dict(label_smoothing=1.0),
                                 dict(spec_augment=(1, 2, 3)), dict(crop_frames=-1)])
def test_train_config_rejects_bad_values(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_training_options_run_and_crops_never_exceed_the_limit():
    rng = np.random.default_rng(0)
    examples = [Example(rng.standard_normal((int(rng.integers(30, 90)), 12)).astype(np.float32) + (i % 3),
                        i % 3, f"s{i % 4}", None) for i in range(24)]
    config = TrainConfig(max_epochs=3, seed=1, weight_decay=0.01, label_smoothing=0.1, schedule="cosine",
                         monitor="uar", crop_frames=40, spec_augment=(1, 3, 1, 5), balance="weights", device="cpu")
    result = train_model(examples[:18], examples[18:], _config(deltas=1, subsample=2), config, log=None)
    assert len(result.history) == 3 and all("val_uar" in h for h in result.history)
    from ser_edge.training.trainer import _batches

    for x, lengths, _ in _batches(examples, np.arange(24), 8, torch.device("cpu"), crop=40, rng=rng):
        assert int(lengths.max()) <= 40 and x.shape[1] <= 40


def test_speed_copies_change_the_duration_and_noise_copies_do_not(tmp_path):
    import soundfile as sf

    rng = np.random.default_rng(0)
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"c{i}.wav")
        sf.write(paths[-1], 0.1 * rng.standard_normal(16000), 16000)
    cache = FeatureCache(FeatureConfig.preset("logmel"), root=tmp_path / "cache")
    examples = [Example(cache.features(p), i, f"s{i}", p) for i, p in enumerate(paths)]
    copies = Augmenter(cache, ["speed:0.8", "speed:1.25", "pink:10", "babble:10"])(examples)
    assert len(copies) == 8
    n = len(examples[0].features)
    assert [len(c.features) for c in copies[:4:2]] == [pytest.approx(n * 1.25, abs=2), pytest.approx(n * 0.8, abs=2)]
    assert len(copies[4].features) == n and not np.allclose(copies[4].features, examples[0].features)
    assert [(c.label, c.group) for c in copies[:2]] == [(0, "s0"), (1, "s1")]
    with pytest.raises(ValueError, match="KIND:NUMBER"):
        Augmenter(cache, ["speed"])
    with pytest.raises(ValueError, match="unknown augmentation"):
        Augmenter(cache, ["reverb:3"])


def test_speaker_normalisation_centres_each_speaker():
    rng = np.random.default_rng(0)
    examples = [Example(rng.standard_normal((20, 3)).astype(np.float32) + 5 * (i % 2), 0, f"s{i % 2}", None)
                for i in range(6)]
    out = speaker_normalise(examples)
    for g in ("s0", "s1"):
        frames = np.concatenate([e.features for e in out if e.group == g])
        np.testing.assert_allclose(frames.mean(0), 0, atol=1e-5)


def test_recipes_are_named_and_validated():
    assert {"seed", "default"} <= set(RECIPES)
    seed = get_recipe("seed")
    assert seed.features == FeatureConfig() and seed.model_config(4).hidden1 == 256
    changed = seed.derive(features="logmel", model={"deltas": 2}, train={"lr": 3e-4})
    assert changed.model_config(7).input_dim == 40 and changed.model_config(7).lstm_input_dim == 120
    assert changed.train.lr == 3e-4 and seed.train.lr == 1e-3
    with pytest.raises(ValueError, match="unknown recipe"):
        get_recipe("best")
    with pytest.raises(ValueError):
        seed.derive(model={"deltas": 5})


@pytest.mark.parametrize("normalise", ["mean", "level"])
def test_the_default_front_end_exports_to_onnx_and_matches_torch(tmp_path, normalise):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from ser_edge.training.export import export_onnx, quantise_int8

    recipe = get_recipe("default").derive(model={"normalise": normalise})
    torch.manual_seed(0)
    model = BiLstmAttention(recipe.model_config(4)).eval()
    fp32 = export_onnx(model, recipe.features, ["a", "b", "c", "d"], tmp_path / "m.onnx")
    int8 = quantise_int8(fp32, tmp_path / "m.int8.onnx")
    x = torch.randn(3, 101, recipe.features.dim)
    lengths = torch.tensor([101, 50, 8])
    with torch.no_grad():
        logits, attention = model(x, lengths)
    feeds = {"features": x.numpy(), "lengths": lengths.numpy()}
    got = ort.InferenceSession(str(fp32), providers=["CPUExecutionProvider"]).run(None, feeds)
    np.testing.assert_allclose(got[0], logits.numpy(), atol=1e-4)
    np.testing.assert_allclose(got[1], attention.numpy(), atol=1e-5)
    q = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert q[0].shape == (3, 4) and np.isfinite(q[0]).all()
