"""Training on what the runtime scores: the speech windows of the streaming path, found for
training clips (clean, noisy and speed-changed copies), cut from them in training and
averaged per clip in validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import quiet, voiced
from ser_edge.audio import load
from ser_edge.features import FeatureConfig, extract
from ser_edge.model import OnnxModel
from ser_edge.stream import StreamRecognizer, speech_windows

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.wav"
RATE = 16000


def _utterance() -> np.ndarray:
    """Silence, 2.6 s of voice, a pause, 0.8 s of voice, silence: a long and a short segment."""
    return np.concatenate([quiet(0.5), voiced(2.6), quiet(0.8, 2), voiced(0.8, 200.0, 3), quiet(0.5, 4)])


def test_speech_windows_are_the_windows_the_stream_scores():
    model = OnnxModel()
    seen: list[np.ndarray] = []
    score = model.score
    model.score = lambda features: (seen.append(np.array(features)), score(features))[1]  # type: ignore[method-assign]
    for samples in (load(DEMO, RATE), _utterance()):
        seen.clear()
        stream = StreamRecognizer(model, decision="windows")  # the model scores windows only
        stream.push(samples, RATE)
        stream.close()
        spans = speech_windows(samples, model.feature_config, model.window_s, model.hop_s)
        features = extract(samples, model.feature_config)
        assert len(spans) == len(seen) > 1
        for (a, b), scored in zip(spans, seen):
            np.testing.assert_array_equal(features[a:b], scored)


def test_a_long_and_a_short_segment_give_full_windows_and_one_whole_segment():
    config = FeatureConfig()
    spans = speech_windows(_utterance(), config, 2.0, 0.5)
    full = spans[spans[:, 1] - spans[:, 0] == 200]
    assert len(full) >= 2 and np.all(np.diff(full[:, 0]) == 50)          # every 0.5 s within the long segment
    assert 40 <= full[0, 0] <= 60                                          # it starts with the voice (0.5 s)
    last = spans[-1]
    assert 300 <= last[0] <= 400 and 60 <= last[1] - last[0] < 200        # the short one, scored whole
    assert speech_windows(quiet(3.0), config, 2.0, 0.5).shape == (0, 2)   # no speech, no window


torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from ser_edge.training.data import (  # noqa: E402
    Augmenter,
    Example,
    FeatureCache,
    NoiseSpec,
    load_examples,
    noisy,
    with_speech_windows,
)
from ser_edge.training.corpora import Clip  # noqa: E402
from ser_edge.training.model import ModelConfig  # noqa: E402
from ser_edge.training.trainer import (  # noqa: E402
    TrainConfig,
    _batches,
    TrainResult,
    predict,
    train_model,
    windowed_predict,
)


@pytest.fixture
def clips(tmp_path) -> list[Clip]:
    out = []
    for i, (speaker, label) in enumerate([("a", "angry"), ("b", "sad"), ("a", "sad"), ("b", "angry")]):
        path = tmp_path / f"{speaker}{i}.wav"
        sf.write(path, np.concatenate([quiet(0.3, i), voiced(1.5 + 0.5 * i, 120.0 + 30 * i, i), quiet(0.4, i)]),
                 RATE)
        out.append(Clip(path, label, speaker, "test"))
    return out


def test_examples_find_the_windows_of_their_own_audio(clips, tmp_path):
    config = FeatureConfig()
    cache = FeatureCache(config, root=tmp_path / "cache")
    examples, _ = load_examples(clips, ["angry", "sad"], cache)
    copies = Augmenter(cache, ["speed:0.8", "white:0"])(examples)
    found = with_speech_windows(examples + copies, 2.0, 0.5)
    for e in found[: len(examples)]:
        np.testing.assert_array_equal(e.windows, speech_windows(load(e.path, RATE), config, 2.0, 0.5))
    slow, loud_noise = found[len(examples)], found[2 * len(examples)]
    assert slow.source.speed == 0.8 and slow.windows[-1, 1] <= len(slow.features)
    assert slow.windows[-1, 1] > found[0].windows[-1, 1]   # the slower copy is longer: its own windows
    noise = loud_noise.source.noise
    assert noise == NoiseSpec("white", 0.0, seed=101)
    expected = speech_windows(noisy(load(loud_noise.path, RATE), loud_noise.path, noise), config, 2.0, 0.5)
    np.testing.assert_array_equal(loud_noise.windows, expected)
    assert with_speech_windows(found, 2.0, 0.5)[0].windows is found[0].windows  # kept, not found again
    assert len(list((tmp_path / "cache").rglob("*.windows.npy"))) == len(found)  # cached beside the features


def test_an_example_without_a_record_of_its_audio_is_refused_clearly():
    example = Example(np.zeros((50, 3), np.float32), 0, "test:a", Path("made-up.wav"))
    with pytest.raises(ValueError, match="Example.source"):
        with_speech_windows([example], 2.0, 0.5)


def _example(frames: int, label: int, windows, seed: int = 0) -> Example:
    features = np.random.default_rng(seed).standard_normal((frames, 4)).astype(np.float32)
    return Example(features, label, f"test:{seed}", Path(f"{seed}.wav"),
                   windows=None if windows is None else np.array(windows, np.int64).reshape(-1, 2))


def test_training_batches_are_speech_windows_and_clips_without_any_are_whole():
    examples = [_example(300, 0, [(10, 210), (60, 260)], 0), _example(120, 1, [], 1), _example(90, 1, None, 2)]
    cuts = {0: set(), 1: set(), 2: set()}
    rng = np.random.default_rng(0)
    for _ in range(20):
        for x, lengths, _ in _batches(examples, np.arange(3), 3, torch.device("cpu"), rng=rng, windows=True):
            for i, e in enumerate(examples):
                n = int(lengths[i])
                matches = [a for a, b in (e.windows if e.windows is not None and len(e.windows) else [(0, len(e.features))])
                           if b - a == n and np.array_equal(x[i, :n].numpy(), e.features[a:b])]
                assert matches, f"example {i}: a batch item that is not one of its windows"
                cuts[i].add(matches[0])
    assert cuts == {0: {10, 60}, 1: {0}, 2: {0}}  # both windows drawn; the others whole


def test_validation_scores_a_clip_by_the_mean_of_its_windows():
    model_config = ModelConfig(input_dim=4, n_classes=2, hidden1=8, hidden2=4, dense=4)
    from ser_edge.training.model import BiLstmAttention

    model = BiLstmAttention(model_config).eval()
    examples = [_example(300, 0, [(0, 200), (50, 250), (100, 300)], 0), _example(80, 1, [], 1)]
    p = windowed_predict(model, examples)
    first = predict(model, [Example(examples[0].features[a:b], 0, "", Path("")) for a, b in examples[0].windows])
    np.testing.assert_allclose(p[0], first.mean(0), atol=1e-6)
    np.testing.assert_allclose(p[1], predict(model, examples[1:])[0], atol=1e-6)


def test_a_windows_training_standardises_and_validates_on_windows(clips, tmp_path, monkeypatch):
    cache = FeatureCache(FeatureConfig.preset("logmel"), root=tmp_path / "cache")
    examples, _ = load_examples(clips, ["angry", "sad"], cache)
    seen = []
    import ser_edge.training.trainer as trainer

    real = trainer.standardisation
    monkeypatch.setattr(trainer, "standardisation", lambda ex, model: (seen.append(ex), real(ex, model))[1])
    config = TrainConfig(max_epochs=1, windows=(1.0, 0.5), device="cpu", balance="none")
    result = train_model(examples[:2], examples[2:], ModelConfig(input_dim=40, n_classes=2, hidden1=8, hidden2=4,
                                                                 dense=4), config, log=None)
    windows = with_speech_windows(examples[:2], 1.0, 0.5)
    assert sum(len(e.windows) for e in windows) > 2
    assert [len(e.features) for e in seen[0]] == [b - a for e in windows for a, b in e.windows]
    val = with_speech_windows(examples[2:], 1.0, 0.5)
    p = windowed_predict(result.model, val)
    loss = -np.log(p[np.arange(2), [e.label for e in val]]).mean()
    assert result.history[0]["val_loss"] == pytest.approx(loss, rel=1e-4)


def test_the_windows_option_is_checked_and_left_out_of_older_recipes():
    assert "windows" not in TrainConfig().to_dict()
    assert TrainConfig(windows=[2, 0.5]).to_dict()["windows"] == (2.0, 0.5)
    for bad in ((2.0,), (2.0, 0.0), (2.0, 0.5, 1.0)):
        with pytest.raises(ValueError, match="window_s, hop_s"):
            TrainConfig(windows=bad)
    with pytest.raises(ValueError, match="crop_frames"):
        TrainConfig(windows=(2.0, 0.5), crop_frames=200)


def test_a_model_trained_on_windows_is_scored_on_windows_by_the_protocols(clips, tmp_path):
    from ser_edge.training.model import BiLstmAttention

    cache = FeatureCache(FeatureConfig.preset("logmel"), root=tmp_path / "cache")
    examples, _ = load_examples(clips, ["angry", "sad"], cache)
    model = BiLstmAttention(ModelConfig(input_dim=40, n_classes=2, hidden1=8, hidden2=4, dense=4)).eval()
    windowed = TrainResult(model, windows=(1.0, 0.5)).predict(examples)
    np.testing.assert_allclose(windowed, windowed_predict(model, with_speech_windows(examples, 1.0, 0.5)), atol=1e-6)
    assert not np.allclose(windowed, predict(model, examples), atol=1e-4)
    np.testing.assert_array_equal(TrainResult(model).predict(examples), predict(model, examples))


def test_the_comparisons_clips_can_find_their_windows_in_noise_too(clips, tmp_path):
    from ser_edge.training.comparison import Task, _example

    task = Task("t", "t", "within", ["angry", "sad"], clips)
    cache = FeatureCache(FeatureConfig.preset("logmel"), root=tmp_path / "cache")
    clean, babble = _example(task, clips[0], cache), _example(task, clips[0], cache, "babble")
    assert clean.source.noise is None and babble.source.noise.kind == "babble" and babble.source.talkers
    found = with_speech_windows([clean, babble], 1.0, 0.5)
    audio = noisy(load(clips[0].path, RATE), clips[0].path, babble.source.noise, babble.source.talkers)
    np.testing.assert_array_equal(found[1].windows, speech_windows(audio, cache.config, 1.0, 0.5))
