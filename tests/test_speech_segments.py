"""Training on what the runtime's "segment" decision scores: each speech segment of a clip
with its context, found for training clips (clean, noisy and speed-changed copies), cut from
them in training and weighted by length in validation, as the runtime decides."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from conftest import quiet, voiced
from ser_edge.audio import load
from ser_edge.features import FeatureConfig, extract
from ser_edge.model import OnnxModel
from ser_edge.recognizer import Recognizer
from ser_edge.stream import speech_segments, speech_windows

RATE = 16000


def _two_segments() -> np.ndarray:
    return np.concatenate([quiet(0.8), voiced(1.6), quiet(0.8, 2), voiced(0.9, 200.0, 3), quiet(0.6, 4)])


def test_speech_segments_are_what_the_runtime_decides_on():
    model = OnnxModel()
    samples = _two_segments()
    rows = speech_segments(samples, model.feature_config)
    events = Recognizer(model).predict(samples, RATE).events  # the bundled model's decision: a blend with the pass
    features = extract(samples, model.feature_config)
    assert rows.shape == (2, 3) == (len(events), 3)
    for (a, b, n), e in zip(rows, events):
        p, _ = model.score(features[a:b])  # the same pass, the same probabilities
        np.testing.assert_allclose([e.pass_probabilities[k] for k in model.labels], p, atol=1e-6)
        assert n == round((e.end_s - e.start_s - model.feature_config.frame_s) / 0.01) + 1  # speech frames
        assert a == round(e.start_s / 0.01) - 30                                           # 0.3 s before
    assert speech_segments(quiet(2.0), model.feature_config).shape == (0, 3)
    bare = speech_segments(samples, model.feature_config, context_s=0.0)  # the segments alone
    np.testing.assert_array_equal(bare[:, 0], rows[:, 0] + 30)


torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from ser_edge.training.corpora import Clip  # noqa: E402
from ser_edge.training.data import Augmenter, Example, FeatureCache, load_examples, with_speech_segments  # noqa: E402
from ser_edge.training.model import BiLstmAttention, ModelConfig  # noqa: E402
from ser_edge.training.trainer import TrainConfig, predict, train_model, windowed_predict  # noqa: E402


@pytest.fixture
def clips(tmp_path) -> list[Clip]:
    out = []
    for i, (speaker, label) in enumerate([("a", "angry"), ("b", "sad"), ("a", "sad"), ("b", "angry")]):
        path = tmp_path / f"{speaker}{i}.wav"
        parts = [quiet(1.0, i), voiced(1.2 + 0.3 * i, 120.0 + 30 * i, i), quiet(0.5, i)]
        if i == 3:  # a clip with two segments
            parts += [voiced(0.8, 250.0, 9), quiet(0.5, 10)]
        sf.write(path, np.concatenate(parts), RATE)
        out.append(Clip(path, label, speaker, "test"))
    return out


def test_examples_find_their_segments_and_copies_their_own(clips, tmp_path):
    config = FeatureConfig()
    cache = FeatureCache(config, root=tmp_path / "cache")
    examples, _ = load_examples(clips, ["angry", "sad"], cache)
    copies = Augmenter(cache, ["speed:0.8"])(examples)
    found = with_speech_segments(examples + copies, 0.3)
    recognizer = Recognizer()
    for e in found[: len(examples)]:
        rows = speech_segments(load(e.path, RATE), config, 0.3)
        np.testing.assert_array_equal(e.windows, rows[:, :2])
        # weighted as Recognizer weighs its events: by end_s - start_s
        events = recognizer.predict(load(e.path, RATE), RATE).events
        np.testing.assert_allclose(e.window_weights, [ev.end_s - ev.start_s for ev in events], atol=1e-9)
    assert len(found[3].windows) == 2
    assert found[len(examples)].windows[0, 1] > found[0].windows[0, 1]  # the slower copy: its own segments
    assert len(list((tmp_path / "cache").rglob("*.segments.npy"))) == len(found)
    assert with_speech_segments(found, 0.3)[0].windows is found[0].windows  # kept, not found again
    from ser_edge.training.data import with_speech_windows

    windows = with_speech_windows(found[:1], 2.0, 0.5)[0]  # other spans: found again, not kept
    np.testing.assert_array_equal(windows.windows, speech_windows(load(windows.path, RATE), config, 2.0, 0.5))
    assert windows.window_weights is None
    again = with_speech_segments([windows], 0.3)[0]
    np.testing.assert_array_equal(again.windows, found[0].windows)


def test_a_clip_is_decided_by_its_segments_weighted_by_length():
    model = BiLstmAttention(ModelConfig(input_dim=4, n_classes=2, hidden1=8, hidden2=4, dense=4)).eval()
    features = np.random.default_rng(0).standard_normal((300, 4)).astype(np.float32)
    e = Example(features, 0, "test:a", Path("a.wav"), windows=np.array([[0, 120], [150, 300]]),
                window_weights=np.array([90.0, 30.0]))
    parts = predict(model, [Example(features[a:b], 0, "", Path("")) for a, b in e.windows])
    np.testing.assert_allclose(windowed_predict(model, [e])[0], 0.75 * parts[0] + 0.25 * parts[1], atol=1e-6)
    from dataclasses import replace

    for bad in (np.array([90.0]), np.array([90.0, 0.0])):
        with pytest.raises(ValueError, match="one per window, each > 0"):
            windowed_predict(model, [replace(e, window_weights=bad)])


def test_a_segments_training_validates_and_is_scored_as_the_runtime_decides(clips, tmp_path):
    cache = FeatureCache(FeatureConfig.preset("logmel"), root=tmp_path / "cache")
    examples, _ = load_examples(clips, ["angry", "sad"], cache)
    config = TrainConfig(max_epochs=1, segments=0.3, device="cpu", balance="none")
    result = train_model(examples[:2], examples[2:], ModelConfig(input_dim=40, n_classes=2, hidden1=8, hidden2=4,
                                                                 dense=4), config, log=None)
    val = with_speech_segments(examples[2:], 0.3)
    p = windowed_predict(result.model, val)
    assert result.history[0]["val_loss"] == pytest.approx(-np.log(p[np.arange(2), [e.label for e in val]]).mean(),
                                                          rel=1e-4)
    np.testing.assert_allclose(result.predict(examples[2:]), p, atol=1e-6)  # the protocols score it so too
    assert not np.allclose(p, predict(result.model, examples[2:]), atol=1e-4)  # not as whole clips


def test_the_segments_option_is_checked_and_left_out_of_older_recipes():
    assert "segments" not in TrainConfig().to_dict() and not TrainConfig().pieces
    assert TrainConfig(segments=0.3).to_dict()["segments"] == 0.3 and TrainConfig(segments=0.0).pieces
    for other in ({"windows": (2.0, 0.5)}, {"crop_frames": 200}):
        with pytest.raises(ValueError, match="segments cannot be combined"):
            TrainConfig(segments=0.3, **other)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="segments must be a finite number"):
            TrainConfig(segments=bad)
    from ser_edge.training.export import decision_for

    assert decision_for(TrainConfig(segments=0.3).to_dict()) == "segment"  # what the runtime decides on


def test_widened_segments_reach_from_the_segment_to_the_whole_clip():
    import torch

    from ser_edge.training.trainer import _batches

    features = np.random.default_rng(0).standard_normal((200, 3)).astype(np.float32)
    example = Example(features, 0, "s", Path("a.wav"), windows=np.array([[50, 120]]))
    plain = Example(features, 0, "s", Path("b.wav"))  # no segment: whole, widened or not
    rng = np.random.default_rng(1)
    starts, stops = set(), set()
    for _ in range(400):
        (x, lengths, _), = _batches([example, plain], np.arange(2), 2, torch.device("cpu"), rng=rng, windows=True,
                                     widen=True)
        n = int(lengths[0])
        found = [(a, a + n) for a in range(0, 51) if a + n >= 120 and np.array_equal(x[0, :n].numpy(),
                                                                                   features[a:a + n])]
        assert found, "a widened item is not a stretch of the clip holding the segment"
        starts.add(found[0][0])
        stops.add(found[0][1])
        assert int(lengths[1]) == 200
    assert min(starts) == 0 and max(starts) == 50 and min(stops) == 120 and max(stops) == 200
    assert len(starts) > 40 and len(stops) > 60  # every amount of context, not a few


def test_the_widen_option_needs_segments():
    assert "segments_widen" not in TrainConfig(segments=0.3).to_dict()
    assert TrainConfig(segments=0.3, segments_widen=True).to_dict()["segments_widen"] is True
    with pytest.raises(ValueError, match="segments_widen needs segments"):
        TrainConfig(segments_widen=True)
