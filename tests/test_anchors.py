"""The comparison's anchors: Whisper's front end and encoder through CTranslate2 (on a tiny
random-weight model built here), openSMILE functionals, the cache and the classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

ct2 = pytest.importorskip("ctranslate2", reason="the anchors extra (ctranslate2) is not installed")
from ser_edge.training.anchors import (  # noqa: E402
    ANCHORS,
    AnchorError,
    WhisperEmbedder,
    embed_clips,
    make_classifier,
    whisper_log_mel,
)


def _tiny_whisper(folder, d=16, ff=32, vocab=64, seed=0):
    """A Whisper model of one encoder and one decoder layer with random weights, written in
    the CTranslate2 format (the layout faster-whisper and get-whisper-base use)."""
    from ctranslate2.specs import whisper_spec

    rng = np.random.default_rng(seed)

    def r(*shape):
        return (0.2 * rng.standard_normal(shape)).astype(np.float32)

    def norm(x):
        x.gamma, x.beta = np.ones(d, np.float32), np.zeros(d, np.float32)

    def linear(x, out, inp):
        x.weight, x.bias = r(out, inp), r(out)

    spec = whisper_spec.WhisperSpec(1, 2, 1, 2)
    enc, dec = spec.encoder, spec.decoder
    enc.conv1.weight, enc.conv1.bias = r(d, 80, 3), r(d)
    enc.conv2.weight, enc.conv2.bias = r(d, d, 3), r(d)
    enc.position_encodings.encodings = r(1500, d)
    norm(enc.layer_norm)
    dec.embeddings.weight = r(vocab, d)
    dec.position_encodings.encodings = r(448, d)
    norm(dec.layer_norm)
    linear(dec.projection, vocab, d)
    for layer in enc.layer + dec.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        norm(layer.ffn.layer_norm)
        linear(layer.ffn.linear_0, ff, d)
        linear(layer.ffn.linear_1, d, ff)
    for layer in dec.layer:
        cross = layer.attention
        norm(cross.layer_norm)
        linear(cross.linear[0], d, d)
        linear(cross.linear[1], 2 * d, d)
        linear(cross.linear[2], d, d)
    spec.register_vocabulary([f"t{i}" for i in range(vocab)])
    folder.mkdir(parents=True, exist_ok=True)
    spec.validate()
    spec.optimize()
    spec.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    return _tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def _speechlike(seconds, seed=0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    f0 = 140 + 30 * np.sin(2 * np.pi * 3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    return (0.1 * sum(np.sin(k * phase) / k for k in range(1, 6)) + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def test_whisper_log_mel_equals_a_torch_and_librosa_reference():
    torch = pytest.importorskip("torch")
    librosa = pytest.importorskip("librosa")
    x = _speechlike(1.3)
    stft = torch.stft(torch.tensor(x, dtype=torch.float64), 400, 160, window=torch.hann_window(400, dtype=torch.float64),
                      return_complex=True)
    mel = torch.tensor(librosa.filters.mel(sr=16000, n_fft=400, n_mels=80), dtype=torch.float64) @ \
        (stft[..., :-1].abs() ** 2)
    log = torch.clamp(mel, min=1e-10).log10()
    ref = ((torch.maximum(log, log.max() - 8.0) + 4.0) / 4.0).numpy()
    ours = whisper_log_mel(x)
    assert ours.shape == ref.shape == (80, 130)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_whisper_embedder_on_a_tiny_model(tiny_whisper):
    embedder = WhisperEmbedder(tiny_whisper)
    x = _speechlike(2.0)
    v = embedder.embed(x)
    assert v.shape == (32,) and np.isfinite(v).all()  # mean and std of 16-dim encoder frames
    np.testing.assert_array_equal(v, embedder.embed(x))  # deterministic
    assert not np.allclose(v, embedder.embed(_speechlike(2.0, seed=5) * 0.2 + _speechlike(2.0, seed=1)[::-1]))
    # a clip over 30 s is encoded in pieces, not refused
    assert embedder.embed(np.tile(x, 16)).shape == (32,)
    assert embedder.model_bytes == (tiny_whisper / "model.bin").stat().st_size


def test_a_missing_whisper_folder_names_the_script(tmp_path):
    with pytest.raises(AnchorError, match="get-whisper-base"):
        WhisperEmbedder(tmp_path / "nowhere")
    with pytest.raises(AnchorError, match="get-whisper-base"):
        ANCHORS["whisper-logreg"][0](None)


def test_embeddings_are_cached_by_content_and_bad_files_are_skipped(tiny_whisper, tmp_path):
    embedder = WhisperEmbedder(tiny_whisper)
    good, other, bad = tmp_path / "a.wav", tmp_path / "b.wav", tmp_path / "bad.wav"
    sf.write(good, _speechlike(1.0), 16000)
    sf.write(other, _speechlike(1.5, seed=3), 16000)
    bad.write_bytes(b"RIFF not audio at all")
    X, skipped, kept = embed_clips(embedder, [good, bad, other], cache_root=tmp_path / "cache")
    assert kept == [0, 2] and [p for p, _ in skipped] == [bad] and X.shape == (2, 32)
    assert len(list((tmp_path / "cache").rglob("*.npy"))) == 2
    again, _, _ = embed_clips(embedder, [good, other], cache_root=tmp_path / "cache")
    np.testing.assert_array_equal(again, X)
    sf.write(good, _speechlike(1.0, seed=9), 16000)  # new content: a new vector, not the cached one
    changed, _, _ = embed_clips(embedder, [good], cache_root=tmp_path / "cache")
    assert not np.array_equal(changed[0], X[0])


def test_opensmile_functionals_have_their_published_sizes():
    pytest.importorskip("opensmile", reason="the anchors extra (opensmile) is not installed")
    x = _speechlike(1.5)
    assert ANCHORS["egemaps-svm"][0]().embed(x).shape == (88,)
    assert ANCHORS["compare-svm"][0]().embed(x).shape == (6373,)


@pytest.mark.parametrize("kind", ["svm", "logreg"])
def test_classifiers_separate_separable_classes(kind):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((3, 20)) * 3
    y = np.repeat(np.arange(3), 30)
    X = centres[y] + rng.standard_normal((90, 20))
    clf = make_classifier(kind).fit(X[::2], y[::2])
    assert np.mean(clf.predict(X[1::2]) == y[1::2]) > 0.9
    with pytest.raises(ValueError, match="svm"):
        make_classifier("forest")
