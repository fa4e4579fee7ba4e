"""The comparison's anchors: Whisper's front end and encoder through CTranslate2 (on a tiny
random-weight model built here), openSMILE functionals, the cache and the classifiers."""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import pytest
import soundfile as sf

from ser_edge.audio import load
from ser_edge.training.anchors import (
    ANCHORS,
    AnchorError,
    cost_per_second,
    embed_clips,
    make_classifier,
    opensmile_embedder,
    whisper_embedder,
    whisper_log_mel,
)


def _tiny_whisper(folder, d=16, ff=32, vocab=64, seed=0):
    """A Whisper model of one encoder and one decoder layer (2 heads, width 16) with random
    weights, written in the CTranslate2 format (the layout faster-whisper and get-whisper-base use)."""
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
    spec.validate()
    spec.optimize()
    folder.mkdir(parents=True, exist_ok=True)
    spec.save(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    pytest.importorskip("ctranslate2", reason="the anchors extra (ctranslate2) is not installed")
    return _tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny")


def _speechlike(seconds, seed=0, rate=16000):
    """A voiced sound: five harmonics of a pitch gliding around 140 Hz, in light noise."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    f0 = 140 + 30 * np.sin(2 * np.pi * (3 + seed) * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = 0.1 * sum(np.sin(k * phase) / k for k in range(1, 6))
    return (voiced + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


def _librosa_whisper_log_mel(x):
    """Whisper's front end built from librosa in float64: centred reflect-padded STFT with a
    periodic Hann window, Slaney mel filters, the last frame dropped, log10 with floors."""
    librosa = pytest.importorskip("librosa")
    stft = librosa.stft(x.astype(np.float64), n_fft=400, hop_length=160, window="hann", center=True, pad_mode="reflect")
    mel = librosa.filters.mel(sr=16000, n_fft=400, n_mels=80, fmin=0.0, fmax=8000.0, htk=False, norm="slaney",
                              dtype=np.float64) @ (np.abs(stft[:, :-1]) ** 2)
    log = np.log10(np.maximum(mel, 1e-10))
    return (np.maximum(log, log.max() - 8.0) + 4.0) / 4.0


@pytest.mark.parametrize("n", [20800, 8037, 48000])
def test_whisper_log_mel_equals_a_librosa_reference(n):
    x = _speechlike(n / 16000, seed=n % 7)
    ref = _librosa_whisper_log_mel(x)
    ours = whisper_log_mel(x)
    assert ours.dtype == np.float32 and ours.shape == ref.shape == (80, n // 160)
    # values lie in about [-1.5, 1.5]; 1e-5 is float32 rounding plus the FFT's float64 noise
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)


def test_whisper_log_mel_floors_80_db_below_the_clip_maximum():
    x = _speechlike(1.0)
    x[8000:] *= 1e-5  # 100 dB quieter: its bands fall under the floor
    ours = whisper_log_mel(x)
    np.testing.assert_allclose(ours, _librosa_whisper_log_mel(x), atol=1e-5, rtol=0)
    assert ours.min() == pytest.approx(ours.max() - 8.0 / 4.0, abs=1e-6)
    assert (ours[:, 60:] == ours.min()).mean() > 0.5


def test_whisper_log_mel_turns_a_gain_into_a_constant_shift():
    x = _speechlike(1.0)
    # power scales by g^2: log10 moves by 2 log10(g), then / 4 (the 80 dB floor moves with the maximum)
    np.testing.assert_allclose(whisper_log_mel(0.1 * x), whisper_log_mel(x) - 0.5, atol=1e-5, rtol=0)
    silence = whisper_log_mel(np.zeros(16000, np.float32))
    np.testing.assert_array_equal(silence, np.full((80, 100), (-10.0 + 4.0) / 4.0, np.float32))


def test_whisper_embedder_pools_a_tiny_random_model_over_time(tiny_whisper):
    embedder = whisper_embedder(tiny_whisper)
    x = _speechlike(2.0)
    v = embedder.embed(x)
    assert v.dtype == np.float32 and v.shape == (32,) and np.isfinite(v).all()  # mean and std of width-16 frames
    assert embedder.dim == 32 and embedder.name == "whisper-d16"
    assert (v[16:] > 0).all()  # the second half is a standard deviation
    np.testing.assert_array_equal(v, embedder.embed(x))
    assert embedder.model_bytes == (tiny_whisper / "model.bin").stat().st_size
    assert len(embedder.key) > 40 and embedder.key == whisper_embedder(tiny_whisper).key

    other = embedder.embed(_speechlike(2.0, seed=4))
    louder = embedder.embed(x * 10 ** (0.5 / 20))  # +0.5 dB
    assert np.linalg.norm(louder - v) < 0.5 * np.linalg.norm(other - v)
    for clip in (x[:5], np.zeros(16000, np.float32), x[:16161], np.tile(x, 16)):  # tiny, silent, odd, 32 s
        w = embedder.embed(clip)
        assert w.shape == (32,) and np.isfinite(w).all()


def test_whisper_embedding_pools_the_encoding_of_the_clips_own_frames(tiny_whisper):
    import ctranslate2

    embedder = whisper_embedder(tiny_whisper)
    model = ctranslate2.models.Whisper(str(tiny_whisper), device="cpu", compute_type="int8", intra_threads=1)

    def encode(mel):
        return np.asarray(model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel[None]))))[0]

    x = _speechlike(2.5)
    frames = encode(whisper_log_mel(x))  # 250 frames in, 125 out: not padded to 3000
    assert frames.shape == (125, 16)
    np.testing.assert_allclose(embedder.embed(x), np.concatenate([frames.mean(0), frames.std(0)]), atol=1e-5)

    long = np.tile(x, 13)  # 32.5 s: 3000 frames, then 250
    mel = whisper_log_mel(long)
    frames = np.concatenate([encode(mel[:, :3000]), encode(mel[:, 3000:])])
    np.testing.assert_allclose(embedder.embed(long), np.concatenate([frames.mean(0), frames.std(0)]), atol=1e-5)


def test_a_missing_whisper_folder_names_the_script(tmp_path):
    for folder in (tmp_path / "nowhere", tmp_path, None):
        with pytest.raises(AnchorError, match="get-whisper-base"):
            whisper_embedder(folder)
    with pytest.raises(AnchorError, match="get-whisper-base"):
        ANCHORS["whisper-logreg"].embedder(None)


@pytest.mark.parametrize("package", ["opensmile", "ctranslate2"])
def test_a_missing_package_says_what_to_install(package, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(AnchorError, match=r'pip install "ser-edge\[anchors\]"'):
        opensmile_embedder() if package == "opensmile" else whisper_embedder(tmp_path)


class _CountingEmbedder:
    """Mean and peak of the clip; counts the clips it really embedded."""

    name, model_bytes = "counting", 0

    def __init__(self, key="counting-1"):
        self.key, self.calls = key, 0

    def embed(self, samples_16k):
        self.calls += 1
        return np.array([samples_16k.mean(), np.abs(samples_16k).max()], np.float32)


def test_embed_clips_skips_unreadable_files_and_keeps_the_rest_aligned(tmp_path):
    paths = [tmp_path / f"{i}.wav" for i in range(3)]
    for i, p in enumerate(paths):
        sf.write(p, (i + 1) * 0.1 * np.ones(1600, np.float32), 16000)
    bad, empty, missing = tmp_path / "bad.wav", tmp_path / "empty.wav", tmp_path / "missing.wav"
    bad.write_bytes(b"RIFF not audio at all")
    empty.write_bytes(b"")
    X, skipped, kept = embed_clips(_CountingEmbedder(), [bad, paths[0], empty, paths[1], missing, paths[2]],
                                   cache_root=tmp_path / "cache")
    assert kept == [1, 3, 5] and [p for p, _ in skipped] == [bad, empty, missing]
    assert all("bad.wav" in why or "empty.wav" in why or "missing.wav" in why for _, why in skipped)
    np.testing.assert_allclose(X[:, 1], [0.1, 0.2, 0.3], atol=1e-4)


def test_the_cache_returns_the_same_vectors_keyed_by_embedder_and_content(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    sf.write(a, _speechlike(1.0), 16000)
    sf.write(b, _speechlike(1.5, seed=3), 16000)
    cache = tmp_path / "cache"
    embedder = _CountingEmbedder()
    first = embed_clips(embedder, [a, b], cache_root=cache)
    again = embed_clips(embedder, [a, b], cache_root=cache)
    assert embedder.calls == 2 and again.X.tobytes() == first.X.tobytes()
    assert sorted(p.name for p in cache.rglob("*") if p.is_file()) == sorted(p.name for p in cache.rglob("*.npy"))
    assert not list(cache.rglob("*.tmp.npy"))

    sf.write(a, 0.5 * _speechlike(1.0), 16000)  # new content: embedded again
    changed = embed_clips(embedder, [a, b], cache_root=cache)
    assert embedder.calls == 3 and changed.X[0, 1] < 0.6 * first.X[0, 1] and changed.X[1, 1] == first.X[1, 1]
    other_version = _CountingEmbedder(key="counting-2")
    embed_clips(other_version, [a, b], cache_root=cache)
    assert other_version.calls == 2


def test_default_cache_follows_ser_edge_cache(tmp_path, monkeypatch):
    clip = tmp_path / "a.wav"
    sf.write(clip, _speechlike(0.5), 16000)
    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "features"))
    embed_clips(_CountingEmbedder(), [clip])
    assert len(list((tmp_path / "features" / "anchors").rglob("*.npy"))) == 1


def test_whisper_vectors_come_back_from_the_cache_unchanged(tiny_whisper, tmp_path):
    clip = tmp_path / "a.wav"
    sf.write(clip, _speechlike(1.0), 16000)
    embedder = whisper_embedder(tiny_whisper)
    X = embed_clips(embedder, [clip], cache_root=tmp_path / "cache").X
    np.testing.assert_array_equal(X, embed_clips(embedder, [clip], cache_root=tmp_path / "cache").X)
    np.testing.assert_array_equal(X[0], embedder.embed(load(clip, 16000)))


def test_opensmile_functionals_have_their_published_sizes():
    pytest.importorskip("opensmile", reason="the anchors extra (opensmile) is not installed")
    x = _speechlike(1.5)
    for anchor, name, dim in (("egemaps-svm", "egemaps", 88), ("compare-svm", "compare", 6373)):
        embedder = ANCHORS[anchor].embedder()
        v = embedder.embed(x)
        assert v.dtype == np.float32 and v.shape == (dim,) and np.isfinite(v).all()
        assert embedder.name == name and embedder.model_bytes == 0 and "opensmile" in embedder.key
    with pytest.raises(AnchorError, match="eGeMAPSv02"):
        opensmile_embedder("eGeMAPS-v9")


@pytest.mark.parametrize("kind", ["svm", "logreg"])
@pytest.mark.parametrize("dim", [20, 2000])  # fewer and more features than clips, like eGeMAPS and ComParE
def test_classifiers_separate_separable_classes_without_warnings(kind, dim):
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), [40, 20, 30, 30])
    X = 1.5 * rng.standard_normal((4, dim))[y] + rng.standard_normal((len(y), dim))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clf = make_classifier(kind).fit(X[::2], y[::2])
        pred = clf.predict(X[1::2])
    recall = [np.mean(pred[y[1::2] == c] == c) for c in range(4)]
    assert np.mean(recall) > 0.9
    np.testing.assert_array_equal(make_classifier(kind).fit(X[::2], y[::2]).predict(X[1::2]), pred)


def test_an_unknown_classifier_is_refused():
    with pytest.raises(ValueError, match="svm"):
        make_classifier("forest")


def test_every_anchor_names_a_known_classifier():
    assert set(ANCHORS) == {"egemaps-svm", "compare-svm", "whisper-logreg"}
    for anchor in ANCHORS.values():
        make_classifier(anchor.classifier)


def test_cost_per_second_is_cpu_time_per_second_of_audio():
    class Busy:
        """10 ms of CPU per second of audio, after 0.2 s of set-up on the first call."""

        name, key, model_bytes, ready = "busy", "busy", 0, False

        def embed(self, samples_16k):
            end = time.process_time() + 0.01 * len(samples_16k) / 16000 + (0.0 if self.ready else 0.2)
            self.ready = True
            while time.process_time() < end:
                pass
            return np.zeros(1, np.float32)

    assert 0.009 < cost_per_second(Busy(), [np.zeros(16000), np.zeros(32000)]) < 0.02


def test_the_teacher_frames_are_what_the_embedding_pools_and_are_cached_by_content(tiny_whisper, tmp_path,
                                                                                    monkeypatch):
    soundfile = pytest.importorskip("soundfile")
    from ser_edge.training import teacher

    embedder = whisper_embedder(tiny_whisper)
    x = _speechlike(1.3)
    frames = embedder.frames(x)
    assert frames.shape == (65, 16)  # one encoder frame per 20 ms
    v = embedder.embed(x)
    np.testing.assert_allclose(v, np.concatenate([frames.mean(0), frames.std(0)]), rtol=1e-6, atol=1e-6)

    monkeypatch.setenv("SER_EDGE_CACHE", str(tmp_path / "cache"))
    paths = []
    for i, seconds in enumerate((1.3, 0.7)):
        paths.append(tmp_path / f"{i}.wav")
        soundfile.write(paths[-1], _speechlike(seconds, seed=i), 16000, subtype="FLOAT")
    paths.append(tmp_path / "missing.wav")
    got = teacher.frames(paths, tiny_whisper)
    assert set(got) == {str(p) for p in paths[:2]}  # an unreadable file is left out, not raised
    assert got[str(paths[0])].dtype == np.float16 and got[str(paths[0])].shape == (65, 16)
    assert got[str(paths[1])].shape == (35, 16)
    np.testing.assert_allclose(got[str(paths[0])], embedder.frames(_speechlike(1.3, seed=0)), atol=2e-3, rtol=2e-3)
    cached = list((tmp_path / "cache").rglob("*.npy"))
    assert len(cached) == 2
    again = teacher.frames(paths[:2], tiny_whisper)  # served from the cache
    np.testing.assert_array_equal(again[str(paths[1])], got[str(paths[1])])
