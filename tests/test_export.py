"""ONNX export and int8 quantisation, checked on real clips against torch."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the train extra (torch) is not installed")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed")

from conftest import DATA_DIR, corpus_clips, session  # noqa: E402
from ser_edge.features import FeatureConfig  # noqa: E402
from ser_edge.training.corpora import SHARED_LABELS, read_emodb, read_urdu, to_shared  # noqa: E402
from ser_edge.training.data import FeatureCache, load_examples  # noqa: E402
from ser_edge.training.export import MODEL_FORMAT, export_onnx, quantise_int8  # noqa: E402
from ser_edge.training.model import ModelConfig  # noqa: E402
from ser_edge.training.protocols import fit  # noqa: E402
from ser_edge.training.trainer import TrainConfig  # noqa: E402

pytestmark = pytest.mark.skipif(
    not corpus_clips("emodb-2s") or not corpus_clips("urdu"),
    reason=f"corpora not found in {DATA_DIR} (set SER_EDGE_DATA to the folder holding urdu/ and emodb-2s/)",
)

CONFIG = FeatureConfig()
LABELS = list(SHARED_LABELS)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A small model trained briefly on EmoDB (4 classes), exported fp32 and int8, and real
    clips from both corpora (URDU clips are up to 3 s: lengths differ within a batch)."""
    tmp = tmp_path_factory.mktemp("export")
    cache = FeatureCache(CONFIG, root=tmp / "cache")
    train, _ = load_examples(to_shared(read_emodb(DATA_DIR / "emodb-2s")), LABELS, cache)
    result = fit(train, ModelConfig(CONFIG.dim, 4, hidden1=48, hidden2=32, dense=32),
                 TrainConfig(max_epochs=6, seed=0), log=None)
    fp32 = export_onnx(result.model, CONFIG, LABELS, tmp / "model.onnx", training={"corpora": ["emodb-2s"]})
    int8 = quantise_int8(fp32, tmp / "model.int8.onnx")
    clips, _ = load_examples(read_urdu(DATA_DIR / "urdu")[::4] + to_shared(read_emodb(DATA_DIR / "emodb-2s"))[::3],
                             LABELS, cache)
    return result.model, fp32, int8, clips


def _padded(examples):
    lengths = np.array([len(e.features) for e in examples], dtype=np.int64)
    x = np.zeros((len(examples), lengths.max(), CONFIG.dim), np.float32)
    for i, e in enumerate(examples):
        x[i, : lengths[i]] = e.features
    return x, lengths


def _run(path, x, lengths):
    return session(path).run(None, {"features": x, "lengths": lengths})


def test_fp32_onnx_equals_torch_on_real_clips(exported):
    model, fp32, _, clips = exported
    for start in range(0, len(clips), 7):  # batches of 7: batch != time
        x, lengths = _padded(clips[start : start + 7])
        logits, attention = _run(fp32, x, lengths)
        with torch.no_grad():
            ref_logits, ref_attention = model(torch.from_numpy(x), torch.from_numpy(lengths))
        assert np.abs(logits - ref_logits.numpy()).max() <= 1e-4
        assert np.abs(attention - ref_attention.numpy()).max() <= 1e-4


def test_a_padded_fp32_onnx_batch_equals_items_scored_one_by_one(exported):
    _, fp32, _, clips = exported
    batch = clips[:5] + clips[-3:]
    x, lengths = _padded(batch)
    assert len(set(lengths.tolist())) > 1
    logits, _ = _run(fp32, x, lengths)
    for i, e in enumerate(batch):
        one, _ = _run(fp32, e.features[None], np.array([len(e.features)], np.int64))
        np.testing.assert_allclose(one[0], logits[i], atol=1e-4)


def test_a_padded_int8_batch_moves_an_item_no_more_than_quantisation_does(exported):
    # int8 quantises activations with one scale per tensor, computed over the whole batch,
    # so an item's logits move with its batch-mates. That movement must stay within what
    # quantisation itself does to these items (int8 alone vs fp32 alone; measured with
    # onnxruntime 1.31: movement up to 0.062, quantisation up to 0.23), and keep each label.
    _, fp32, int8, clips = exported
    batch = clips[:5] + clips[-3:]
    x, lengths = _padded(batch)
    logits, _ = _run(int8, x, lengths)
    moves, quantisation = [], []
    for i, e in enumerate(batch):
        single = (e.features[None], np.array([len(e.features)], np.int64))
        one, _ = _run(int8, *single)
        ref, _ = _run(fp32, *single)
        moves.append(np.abs(one[0] - logits[i]).max())
        quantisation.append(np.abs(one[0] - ref[0]).max())
        assert one[0].argmax() == logits[i].argmax()
    assert max(moves) <= max(quantisation), (moves, quantisation)


def test_int8_agrees_with_fp32_on_real_clips(exported):
    _, fp32, int8, clips = exported
    x, lengths = _padded(clips)
    a = _run(fp32, x, lengths)[0].argmax(1)
    b = _run(int8, x, lengths)[0].argmax(1)
    agreement = float(np.mean(a == b))
    assert agreement >= 0.98, f"int8 and fp32 agree on {agreement:.1%} of {len(clips)} clips"


def test_metadata_describes_the_model(exported):
    import onnx

    _, fp32, int8, _ = exported
    for path, precision in ((fp32, "fp32"), (int8, "int8")):
        meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
        assert meta["ser_edge.format"] == MODEL_FORMAT and meta["ser_edge.precision"] == precision
        assert json.loads(meta["ser_edge.labels"]) == LABELS
        assert FeatureConfig.from_json(meta["ser_edge.feature_config"]) == CONFIG
        assert int(meta["ser_edge.feature_dim"]) == CONFIG.dim
        assert float(meta["ser_edge.window_s"]) == 2.0 and float(meta["ser_edge.hop_s"]) == 0.5
        assert meta["ser_edge.decision"] == "blend"  # trained on whole clips: a pass over each segment and its windows
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"DynamicQuantizeLSTM", "MatMulInteger"} <= ops and "LSTM" not in ops
    assert int8.stat().st_size < fp32.stat().st_size / 2.5


def test_export_refuses_a_config_or_labels_that_do_not_fit(exported, tmp_path):
    model = exported[0]
    with pytest.raises(ValueError, match="values per frame"):
        export_onnx(model, FeatureConfig.preset("logmel"), LABELS, tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="labels"):
        export_onnx(model, CONFIG, LABELS[:3], tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="decision must be"):
        export_onnx(model, CONFIG, LABELS, tmp_path / "x.onnx", decision="median")


def test_a_model_trained_on_windows_or_crops_is_decided_by_its_windows(exported, tmp_path):
    from ser_edge.model import OnnxModel
    from ser_edge.training.export import decision_for

    assert decision_for({"crop_frames": 0}) == "blend" and decision_for({"segments": 0.3}) == "segment"
    assert decision_for({"crop_frames": 200}) == decision_for({"windows": [2.0, 0.5]}) == "windows"
    path = export_onnx(exported[0], CONFIG, LABELS, tmp_path / "w.onnx", decision="windows")
    assert OnnxModel(path).decision == "windows"
