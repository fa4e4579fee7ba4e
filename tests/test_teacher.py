"""The training-time teacher: cross-fitted soft targets, attaching them, the missing-model message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn (anchors extra) is not installed")
pytest.importorskip("torch", reason="the train extra (torch) is not installed")

from ser_edge.training.data import Example  # noqa: E402
from ser_edge.training.teacher import TeacherError, attach, soft_targets, teacher_folder  # noqa: E402


def _data(n_speakers=8, per=6, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.tile(np.arange(3), n_speakers * per // 3)[: n_speakers * per]
    x = rng.standard_normal((len(labels), 10)) + 3.0 * np.eye(10)[labels]
    groups = [f"s{i // per}" for i in range(len(labels))]
    return x, labels, groups


def test_soft_targets_are_probabilities_that_follow_the_classes():
    x, y, groups = _data()
    p = soft_targets(x, y, groups, 3, temperature=1.0)
    np.testing.assert_allclose(p.sum(1), 1.0, atol=1e-5)
    assert (p.argmax(1) == y).mean() > 0.8


def test_a_clips_target_comes_from_heads_that_never_saw_its_speaker():
    x, y, groups = _data()
    p = soft_targets(x, y, groups, 3, temperature=1.0)
    # Relabel every clip of one speaker: that speaker's own targets must not move, since
    # no head that labels them was fitted on them; other speakers' targets do move.
    y2 = y.copy()
    own = np.array([g == "s0" for g in groups])
    y2[own] = (y2[own] + 1) % 3
    p2 = soft_targets(x, y2, groups, 3, temperature=1.0)
    np.testing.assert_allclose(p2[own], p[own], atol=1e-6)
    assert np.abs(p2[~own] - p[~own]).max() > 1e-3


def test_a_higher_temperature_softens_the_targets():
    x, y, groups = _data()
    sharp, soft = soft_targets(x, y, groups, 3, 1.0), soft_targets(x, y, groups, 3, 4.0)
    assert soft.max(1).mean() < sharp.max(1).mean()


def test_attach_gives_targets_to_examples_with_a_teacher_vector_only():
    x, y, groups = _data()
    examples = [Example(np.zeros((5, 2), np.float32), int(label), g, Path(f"{i}.wav"))
                for i, (label, g) in enumerate(zip(y, groups))]
    vectors = {str(e.path): x[i] for i, e in enumerate(examples) if i != 3}
    out = attach(examples, vectors, 3, 2.0)
    assert out[3].soft is None and out[3].target_embedding is None
    assert all(e.soft is not None and e.target_embedding is not None for i, e in enumerate(out) if i != 3)
    z = np.stack([e.target_embedding for i, e in enumerate(out) if i != 3])
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)  # standardised over the examples given
    only_emb = attach(examples, vectors, 3, 2.0, soft=False)
    assert only_emb[0].soft is None and only_emb[0].target_embedding is not None


def test_a_missing_teacher_folder_names_the_script_that_gets_it(tmp_path):
    with pytest.raises(TeacherError, match="get-whisper-base"):
        teacher_folder(tmp_path / "nothing")


def test_binary_targets_are_the_heads_probabilities_at_the_temperature(monkeypatch):
    from ser_edge.training import anchors

    class Stub:
        def fit(self, x, y):
            return self

        def decision_function(self, x):
            return np.full(len(x), np.log(3.0))  # p(second class) = 0.75

    monkeypatch.setattr(anchors, "make_classifier", lambda kind: Stub())
    x = np.zeros((8, 2))
    y = np.array([0, 1] * 4)
    groups = [f"s{i}" for i in range(8)]
    np.testing.assert_allclose(soft_targets(x, y, groups, 2, temperature=1.0), [[0.25, 0.75]] * 8, atol=1e-6)
    t2 = soft_targets(x, y, groups, 2, temperature=2.0)
    np.testing.assert_allclose(t2[:, 1], np.sqrt(3) / (1 + np.sqrt(3)), atol=1e-6)


def test_training_targets_leave_out_the_validation_speakers():
    from ser_edge.training.protocols import training_split
    from ser_edge.training.teacher import attach_for_training
    from ser_edge.training.trainer import TrainConfig

    x, y, groups = _data(n_speakers=14, per=6)
    examples = [Example(np.zeros((5, 2), np.float32), int(label), g, Path(f"{i}.wav"))
                for i, (label, g) in enumerate(zip(y, groups))]
    vectors = {str(e.path): x[i] for i, e in enumerate(examples)}
    config = TrainConfig(seed=3, distill=0.5)
    out = attach_for_training(examples, vectors, 3, config)
    _, val = training_split(examples, 3)
    held = {e.group for e in val}
    assert held and all((e.soft is None) == (e.group in held) for e in out)


def test_attached_frames_are_standardised_over_every_clip_and_shared_by_copies():
    from dataclasses import replace

    from ser_edge.training.teacher import attach_frames

    rng = np.random.default_rng(0)
    frames_of = {f"{i}.wav": (3.0 + 2.0 * rng.standard_normal((10 + i, 4))).astype(np.float16) for i in range(4)}
    examples = [Example(np.zeros((5, 2), np.float32), 0, "s0", Path(f"{i}.wav")) for i in range(3)]
    examples.append(replace(examples[0], features=np.ones((5, 2), np.float32)))  # a copy of clip 0
    more = [Example(np.zeros((5, 2), np.float32), -1, "s1", Path("3.wav"), own="c:x"),
            Example(np.zeros((5, 2), np.float32), -1, "s1", Path("9.wav"), own="c:x")]  # no frames
    out, out_more = attach_frames(examples, frames_of, more)
    assert len(out) == 4 and len(out_more) == 2 and out_more[1].teacher_frames is None
    every = np.concatenate([out[0].teacher_frames, out[1].teacher_frames, out[2].teacher_frames,
                            out_more[0].teacher_frames]).astype(np.float64)
    np.testing.assert_allclose(every.mean(0), 0, atol=2e-3)
    np.testing.assert_allclose(every.std(0), 1, atol=2e-3)
    assert out[3].teacher_frames is out[0].teacher_frames  # one array per file
    assert out[0].teacher_frames.shape == (10, 4) and out_more[0].own == "c:x"
    assert attach_frames(examples, {}) == (examples, [])
