"""How the runtime decides a speech segment: one pass of the model over the segment with
context around it, the mean of its windows, or the mean of the two (the bundled model's);
streaming equals offline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import quiet, voiced
from ser_edge.audio import load
from ser_edge.features import extract
from ser_edge.model import ModelError, OnnxModel
from ser_edge.recognizer import Recognizer
from ser_edge.stream import StreamRecognizer, VadConfig

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.wav"
RATE = 16000
HOP = 0.01


def _two_segments() -> np.ndarray:
    """Silence, 2.6 s of voice, a pause, 0.8 s of voice, silence."""
    return np.concatenate([quiet(0.5), voiced(2.6), quiet(0.8, 2), voiced(0.8, 200.0, 3), quiet(0.5, 4)])


@pytest.fixture(scope="module")
def model() -> OnnxModel:
    return OnnxModel()


def _frame(seconds: float) -> int:
    return int(round(seconds / HOP))


def _span(event, model) -> tuple[int, int]:
    """The frames [a, b) of the stream's one-shot features that the event's pass scored."""
    return _frame(event.scored_from_s), _frame(event.scored_to_s - model.feature_config.frame_s) + 1


@pytest.mark.parametrize("which", ["demo", "two segments"])
def test_a_segment_is_one_pass_over_it_and_its_context(model, which):
    samples = load(DEMO, RATE) if which == "demo" else _two_segments()
    features = extract(samples, model.feature_config)
    events = Recognizer(model, decision="segment").predict(samples, RATE).events
    assert len(events) >= 1 and (which == "demo" or len(events) == 2)
    for e in events:
        a, b = _frame(e.start_s), _frame(e.end_s - model.feature_config.frame_s) + 1
        # 0.3 s before and after, clipped to the stream (the gate's hang-over holds the 0.3 s after)
        assert (_frame(e.scored_from_s), _span(e, model)[1]) == (max(0, a - 30), min(len(features), b + 30))
        p, _ = model.score(features[slice(*_span(e, model))])
        np.testing.assert_allclose([e.probabilities[k] for k in model.labels], p, atol=1e-6)
        assert e.label == model.labels[int(p.argmax())]
        assert e.windows  # the windows are still scored, for live displays


def test_context_can_be_changed_or_switched_off(model):
    samples = _two_segments()
    features = extract(samples, model.feature_config)
    for context_s, frames in ((0.0, 0), (0.1, 10)):
        for e in Recognizer(model, decision="segment", context_s=context_s).predict(samples, RATE).events:
            a, b = _frame(e.start_s), _frame(e.end_s - model.feature_config.frame_s) + 1
            assert _span(e, model) == (a - frames, b + frames)
            p, _ = model.score(features[a - frames:b + frames])
            np.testing.assert_allclose([e.probabilities[k] for k in model.labels], p, atol=1e-6)


def test_the_context_before_is_clipped_to_the_start_of_the_stream(model):
    samples = np.concatenate([quiet(0.1), voiced(1.5), quiet(1.0)])
    (event,) = Recognizer(model).predict(samples, RATE).events
    assert 0 < event.start_s < 0.3 and event.scored_from_s == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_in_random_chunks_gives_the_offline_decisions(model, seed):
    samples = _two_segments()
    offline = Recognizer(model).predict(samples, RATE)
    rng = np.random.default_rng(seed)
    stream, events, at = StreamRecognizer(model), [], 0
    while at < len(samples):
        n = int(rng.integers(1, 4000))
        events += stream.push(samples[at:at + n], RATE)
        at += n
    events += stream.close()
    assert [(e.start_s, e.end_s, e.scored_from_s, e.scored_to_s, e.label) for e in events] == \
        [(e.start_s, e.end_s, e.scored_from_s, e.scored_to_s, e.label) for e in offline.events]
    for a, b in zip(events, offline.events):
        assert a.probabilities == pytest.approx(b.probabilities, abs=1e-6)


def test_the_decision_comes_as_soon_as_with_windows(model):
    """The context after a segment is its hang-over, already buffered: no later event."""
    samples = _two_segments()
    when = {}
    for decision in ("segment", "windows", "blend"):
        stream = StreamRecognizer(model, decision=decision)
        when[decision] = [i for i, at in enumerate(range(0, len(samples), 160))
                          for _ in stream.push(samples[at:at + 160], RATE)]
    assert when["segment"] == when["windows"] == when["blend"] and len(when["segment"]) == 2


def test_a_recording_is_its_segments_weighted_by_duration(model):
    samples = _two_segments()
    p = Recognizer(model).predict(samples, RATE)
    durations = [e.end_s - e.start_s for e in p.events]
    assert len(durations) == 2 and min(durations) > 0.5
    expected = np.average([[e.probabilities[k] for k in model.labels] for e in p.events], axis=0, weights=durations)
    np.testing.assert_allclose([p.probabilities[k] for k in model.labels], expected, atol=1e-9)
    assert p.label == model.labels[int(expected.argmax())]


@pytest.mark.parametrize("which", ["demo", "two segments"])
def test_a_blend_is_the_mean_of_the_pass_and_of_the_windows(model, which):
    samples = load(DEMO, RATE) if which == "demo" else _two_segments()
    blend = Recognizer(model, decision="blend").predict(samples, RATE)
    one = Recognizer(model, decision="segment").predict(samples, RATE)
    windows = Recognizer(model, decision="windows").predict(samples, RATE)
    assert len(blend.events) == len(one.events) == len(windows.events) >= 1
    for b, s, w in zip(blend.events, one.events, windows.events):
        assert (b.start_s, b.end_s, b.scored_from_s, b.scored_to_s) == (s.start_s, s.end_s, s.scored_from_s,
                                                                        s.scored_to_s)
        assert b.pass_probabilities == pytest.approx(s.probabilities, abs=1e-7)
        expected = [(s.probabilities[k] + w.probabilities[k]) / 2 for k in model.labels]
        np.testing.assert_allclose([b.probabilities[k] for k in model.labels], expected, atol=1e-7)
        assert b.label == model.labels[int(np.argmax(expected))] and w.pass_probabilities is None
    expected = np.average([[e.probabilities[k] for k in model.labels] for e in blend.events], axis=0,
                          weights=[e.weight for e in blend.events])
    np.testing.assert_allclose([blend.probabilities[k] for k in model.labels], expected, atol=1e-9)


def test_the_windows_decision_is_the_mean_of_the_windows(model):
    samples = _two_segments()
    p = Recognizer(model, decision="windows").predict(samples, RATE)
    mean = np.mean([[w.probabilities[k] for k in model.labels] for w in p.windows], axis=0)
    np.testing.assert_allclose([p.probabilities[k] for k in model.labels], mean, atol=1e-9)
    for e in p.events:
        assert e.scored_from_s is None and e.scored_to_s is None
        np.testing.assert_allclose([e.probabilities[k] for k in model.labels],
                                   np.mean([[w.probabilities[k] for k in model.labels] for w in e.windows], axis=0))


def test_the_model_says_how_it_is_decided(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    from ser_edge.model import set_metadata

    assert model.decision == "blend" and Recognizer(model).decision == "blend"  # the bundled model's
    graph = onnx.load(str(model.path))
    meta = {p.key: p.value for p in graph.metadata_props}
    for value, ok in (("windows", True), ("median", False)):
        set_metadata(graph, {**meta, "ser_edge.decision": value})
        path = tmp_path / f"{value}.onnx"
        onnx.save(graph, str(path))
        if ok:
            assert Recognizer(path).decision == "windows"
            assert StreamRecognizer(path, decision="segment").decision == "segment"  # asked for explicitly
        else:
            with pytest.raises(ModelError, match="ser_edge.decision"):
                OnnxModel(path)


def test_bad_options_are_refused(model):
    with pytest.raises(ValueError, match="decision must be one of blend, segment, windows"):
        StreamRecognizer(model, decision="median")
    for bad in (-0.1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="context_s must be a finite number of seconds >= 0"):
            Recognizer(model, context_s=bad)


def _one_pass(model, features, event):
    p, _ = model.score(features[slice(*_span(event, model))])
    return p


def test_a_stream_closed_mid_speech_decides_on_what_it_has(model):
    samples = np.concatenate([quiet(0.6), voiced(1.6)])  # ends in speech: close() ends the segment
    stream = StreamRecognizer(model, decision="segment")
    events = stream.push(samples, RATE)
    assert events == []
    (event,) = stream.close()
    features = extract(samples, model.feature_config)
    a = _frame(event.start_s)
    assert _span(event, model) == (a - 30, len(features))  # no context after: the stream ended
    np.testing.assert_allclose([event.probabilities[k] for k in model.labels], _one_pass(model, features, event),
                               atol=1e-6)


def test_segments_close_together_and_a_segment_cut_at_the_maximum_length(model):
    # a 0.45 s pause (longer than the 0.3 s hang-over): the second segment's context before
    # reaches back into the first segment's hang-over
    samples = np.concatenate([quiet(0.5), voiced(1.0), quiet(0.45, 2), voiced(1.0, 200.0, 3), quiet(0.5, 4)])
    features = extract(samples, model.feature_config)
    first, second = Recognizer(model, decision="segment").predict(samples, RATE).events
    assert _span(second, model)[0] == _frame(second.start_s) - 30 < _span(first, model)[1]
    for e in (first, second):
        np.testing.assert_allclose([e.probabilities[k] for k in model.labels], _one_pass(model, features, e),
                                   atol=1e-6)
    # 5 s of speech with segments cut at 2 s: the pieces follow each other
    samples = np.concatenate([quiet(0.5), voiced(5.0), quiet(0.6, 2)])
    features = extract(samples, model.feature_config)
    pieces = Recognizer(model, decision="segment", vad=VadConfig(max_segment_s=2.0)).predict(samples, RATE).events
    assert len(pieces) == 3
    assert _span(pieces[0], model)[1] == _frame(pieces[1].start_s)     # cut: no context after
    assert _span(pieces[1], model)[0] == _frame(pieces[1].start_s) - 30  # the end of the piece before
    for e in pieces:
        np.testing.assert_allclose([e.probabilities[k] for k in model.labels], _one_pass(model, features, e),
                                   atol=1e-6)


def test_an_adapted_model_from_before_models_said_how_defaults_to_windows(model, tmp_path):
    onnx = pytest.importorskip("onnx")
    from ser_edge.model import set_metadata

    graph = onnx.load(str(model.path))
    meta = {p.key: p.value for p in graph.metadata_props if p.key != "ser_edge.decision"}
    set_metadata(graph, {**meta, "ser_edge.adapted": "{}"})
    onnx.save(graph, str(tmp_path / "old-adapted.onnx"))
    assert OnnxModel(tmp_path / "old-adapted.onnx").decision == "windows"


def test_the_context_buffer_stays_bounded_in_silence(model):
    stream = StreamRecognizer(model, vad=VadConfig())
    for _ in range(50):
        stream.push(quiet(1.0), RATE)
    assert len(stream._recent) == 30 and not stream.in_speech
