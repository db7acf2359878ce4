"""Useful MACs per sentence from a BERT ONNX graph (pruned layers, FP32 and INT8 graphs), the peak benchmark's
matmul graphs, session options."""
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lib.measure import roofline as rt
from lib.runtime import onnxrt
from lib.techniques import prune, quantize as q

SENTENCES = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn.", "Shares fell.",
             "The company said it will cut 120 jobs at its plant in Finland this year.", "Net sales were flat."]


@pytest.fixture(scope="module")
def pruned_onnx(tmp_path_factory, tokenizer):
    """hidden 64, 4 heads of 16, FFN 128, three layers pruned to 2/1/4 heads and 64/128/28 neurons."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=128, num_labels=3)
    model = BertForSequenceClassification(cfg).eval()
    prune.prune_units(model, heads=[[0, 2], [1, 2, 3], []], neurons=[list(range(0, 128, 2)), [], list(range(100))])
    path = tmp_path_factory.mktemp("macs") / "fp32.onnx"
    q.export_onnx(model, q.example_inputs(tokenizer, SENTENCES), path)
    return path


def hand_count(lengths) -> float:
    """The same model counted by hand: all_head_size A = heads x 16, FFN width F, hidden 64."""
    per_token = 0
    for a, f in [(32, 64), (16, 128), (64, 28)]:
        per_token += 64 * 3 * a + a * 64 + 64 * f + f * 64  # QKV, output projection, FFN in, FFN out
    scores_and_context = 2 * (32 + 16 + 64)  # x length^2, per layer: QK^T and attention x V
    head = 64 * 64 + 64 * 3  # pooler and classifier, once per sentence
    lengths = np.array(lengths, dtype=float)
    return per_token * lengths.mean() + scores_and_context * (lengths ** 2).mean() + head


def test_macs_match_a_hand_count_for_pruned_layers(pruned_onnx):
    macs = rt.macs_per_sentence(pruned_onnx, [10, 20])
    assert macs["total"] == pytest.approx(hand_count([10, 20])) == pytest.approx(912_768)
    assert macs["attention"] == pytest.approx(224 * 250) and macs["head"] == 4288


def test_int8_graphs_count_the_same_macs(pruned_onnx, tokenizer, tmp_path):
    q.quantize_onnx(pruned_onnx, tmp_path / "dynamic.onnx")
    want = rt.macs_per_sentence(pruned_onnx, [7, 31])
    for name in ("dynamic.onnx",):
        assert rt.macs_per_sentence(tmp_path / name, [7, 31]) == pytest.approx(want)


def test_peak_graphs_compute_the_matmul_they_claim():
    for kind in ("int8", "fp32"):
        model, feed = rt.matmul_model(64, 96, 32, kind)
        got = onnxrt.session(model.SerializeToString(), threads=1).run(None, feed)[0]
        b = next(t for t in model.graph.initializer if t.name == "B")
        from onnx import numpy_helper
        want = feed["A"].astype(np.float64) @ numpy_helper.to_array(b).astype(np.float64)
        assert got.shape == (64, 32) and np.allclose(got, want, rtol=1e-4, atol=1e-2)
    assert rt.share_of_peak(macs=1e6, sentences_per_s=1000, peak_gops=100) == pytest.approx(0.02)


def test_runtime_scripts_reject_bad_input_in_one_line(tmp_path):
    from lib.core.errors import FinCompressError
    from tests.conftest import load_script
    peak, options = load_script("int8_peak"), load_script("bench_runtime_options")
    with pytest.raises(FinCompressError, match="--threads=0 is out of range"):
        peak.main(["--threads", "0"])
    with pytest.raises(FinCompressError, match="holds no model.onnx; pass an ONNX variant folder"):
        peak.main(["--model", str(tmp_path)])
    with pytest.raises(FinCompressError, match="pass an ONNX variant folder and --texts CSV"):
        options.main([str(tmp_path), "--texts", str(tmp_path / "none.csv")])


def test_length_sorted_batches_cover_every_text_once_with_less_padding(tokenizer):
    from lib.data.batching import length_sorted
    texts = [SENTENCES[i % 4] + " x" * (i % 7) for i in range(37)]
    batches = length_sorted(tokenizer, texts, batch_size=8)
    assert sorted(t for b in batches for t in b) == sorted(texts) and [len(b) for b in batches] == [8, 8, 8, 8, 5]
    lengths = [len(tokenizer(t)["input_ids"]) for b in batches for t in b]
    assert lengths == sorted(lengths)
    padded = sum(len(b) * max(len(tokenizer(t)["input_ids"]) for t in b) for b in batches)
    in_order = sum(len(ids) * len(ids[0]) for ids in (tokenizer(texts[i:i + 8], padding=True)["input_ids"]
                                                      for i in range(0, 37, 8)))
    assert padded < in_order


def test_sessions_run_ort_defaults_unless_given_settings(pruned_onnx):
    # issue 30: no setting one machine liked is fixed in code; stage 05 measures them and ships its choice
    def options(sess):
        o = sess.get_session_options()
        return (o.intra_op_num_threads, o.graph_optimization_level.name,
                o.get_session_config_entry("session.intra_op.allow_spinning"), o.enable_mem_pattern)
    assert options(onnxrt.session(pruned_onnx, 1)) == (1, "ORT_ENABLE_ALL", "1", True)
    for level, name in (("basic", "ORT_ENABLE_BASIC"), ("extended", "ORT_ENABLE_EXTENDED")):
        given = onnxrt.Settings(3, level, intra_op_spinning=False, memory_pattern=False)
        assert options(onnxrt.session(pruned_onnx, 1, given)) == (3, name, "0", False)
