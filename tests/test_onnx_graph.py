"""The hand-written fused ONNX graph: parity with PyTorch (pruned layers included), fused ops, fallbacks."""
import onnx
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, DistilBertConfig, DistilBertForSequenceClassification

from lib.core.errors import FinCompressError
from lib.core.variants import ONNX_FILE
from lib.runtime import onnx_graph
from lib.techniques import prune, quantize as q

SENTENCES = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn.", "Shares fell.",
             "The company said it will cut 120 jobs at its plant in Finland this year.", "Net sales were flat."]


def tiny_bert(layers=2, heads=4):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=64, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=128, max_position_embeddings=128, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def onnx_logits(model, batch, tmp_path, tokenizer):
    q.export_onnx(model, batch, tmp_path / ONNX_FILE)
    tokenizer.save_pretrained(tmp_path)
    predict, _ = q.load_onnx(tmp_path)
    return predict(batch)


def test_fused_graph_matches_pytorch_on_a_padded_batch(tokenizer, tmp_path):
    model = tiny_bert()
    batch = q.example_inputs(tokenizer, SENTENCES)
    batch["token_type_ids"][1, 1:3] = 1  # the token-type table is used, not assumed zero
    with torch.inference_mode():
        diff = q.logit_diff(onnx_logits(model, batch, tmp_path, tokenizer), model(**batch).logits)
    assert (batch["attention_mask"] == 0).any() and diff["max_abs_diff"] < 1e-4
    ops = [n.op_type for n in onnx.load(str(tmp_path / ONNX_FILE)).graph.node]
    assert ops.count("Attention") == 2 and "Softmax" not in ops and "Transpose" not in ops


def test_pruned_layers_with_different_widths_export_exactly(tokenizer, tmp_path):
    model = tiny_bert(layers=3)
    prune.prune_units(model, heads=[[0, 2], [1, 2, 3], []], neurons=[list(range(0, 128, 2)), [], list(range(100))])
    assert prune.unit_counts(model) == {"heads": [2, 1, 4], "neurons": [64, 128, 28]}
    batch = q.example_inputs(tokenizer, SENTENCES)
    with torch.inference_mode():
        diff = q.logit_diff(onnx_logits(model, batch, tmp_path, tokenizer), model(**batch).logits)
    assert diff["max_abs_diff"] < 1e-4


def test_int8_fuses_attention_and_keeps_chosen_modules_fp32(tokenizer, tmp_path):
    model = tiny_bert()
    q.export_onnx(model, q.example_inputs(tokenizer, SENTENCES), tmp_path / "fp32.onnx")
    keep = ["bert.encoder.layer.1.attention.self.value"]  # one of Q/K/V keeps its whole fused node FP32
    assert q.onnx_nodes_for(tmp_path / "fp32.onnx", keep) == ["bert.encoder.layer.1.attention.self"]
    q.quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "int8.onnx", q.QuantConfig(keep_fp32=tuple(keep)))
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node]
    assert ops.count("QAttention") == 1 and ops.count("Attention") == 1


def test_other_architectures_fall_back_to_torch_onnx(tokenizer, tmp_path):
    cfg = DistilBertConfig(vocab_size=30522, dim=32, n_layers=1, n_heads=2, hidden_dim=64, num_labels=3)
    model = DistilBertForSequenceClassification(cfg).eval()
    assert "DistilBertForSequenceClassification" in onnx_graph.why_unsupported(model)
    with pytest.raises(FinCompressError, match="does not handle this model"):
        onnx_graph.bert_graph(model)
    batch = {k: v for k, v in q.example_inputs(tokenizer, SENTENCES).items() if k != "token_type_ids"}
    with torch.inference_mode():
        diff = q.logit_diff(onnx_logits(model, batch, tmp_path, tokenizer), model(**batch).logits)
    assert diff["max_abs_diff"] < 1e-4


def test_relative_positions_are_refused():
    model = tiny_bert(layers=1)
    model.config.position_embedding_type = "relative_key"
    assert "relative_key" in onnx_graph.why_unsupported(model)


def test_fused_false_uses_torch_onnx_for_a_bert_too(tokenizer, tmp_path):
    model = tiny_bert(layers=1)
    batch = q.example_inputs(tokenizer, SENTENCES)
    q.export_onnx(model, batch, tmp_path / ONNX_FILE, fused=False)
    ops = {n.op_type for n in onnx.load(str(tmp_path / ONNX_FILE)).graph.node}
    assert "Attention" not in ops and "Softmax" in ops
    tokenizer.save_pretrained(tmp_path)
    with torch.inference_mode():
        assert q.logit_diff(q.load_onnx(tmp_path)[0](batch), model(**batch).logits)["max_abs_diff"] < 1e-4


def test_a_reshaped_layer_falls_back_to_torch_onnx(tokenizer, tmp_path):
    """A technique that replaces a Linear (here an FFN factorized into two) needs no change of the writer: the
    model is not "supported" and exports through torch.onnx with the same logits."""
    model = tiny_bert(layers=1)
    dense = model.bert.encoder.layer[0].intermediate.dense
    u, s, vh = torch.linalg.svd(dense.weight.detach(), full_matrices=False)
    first, second = torch.nn.Linear(64, 64, bias=False), torch.nn.Linear(64, 128)
    with torch.no_grad():
        first.weight.copy_(vh), second.weight.copy_(u * s), second.bias.copy_(dense.bias)
    model.bert.encoder.layer[0].intermediate.dense = torch.nn.Sequential(first, second)
    assert onnx_graph.why_unsupported(model) == "bert.encoder.layer.0.intermediate.dense is a Sequential, not an nn.Linear"
    batch = q.example_inputs(tokenizer, SENTENCES)
    q.export_onnx(model, batch, tmp_path / ONNX_FILE)
    assert "Attention" not in {n.op_type for n in onnx.load(str(tmp_path / ONNX_FILE)).graph.node}
    tokenizer.save_pretrained(tmp_path)
    with torch.inference_mode():
        assert q.logit_diff(q.load_onnx(tmp_path)[0](batch), model(**batch).logits)["max_abs_diff"] < 1e-4


def test_bench_script_reads_the_fp32_groups_of_the_pruned_models_source_from_stage_03(tmp_path):
    """scripts/bench_onnx_graph.py times the groups stage 03 chose for the model a pruned folder came from, not a list
    written into the script."""
    import json
    from tests.conftest import load_script
    script = load_script("bench_onnx_graph")
    reports = tmp_path / "reports"
    reports.mkdir()
    pruned = {"name": "student_pruned_50", "format": "pruned", "path": "checkpoints/pruned/student_50",
              "source": "student_kd_intermediate"}
    (reports / "04_pruning.json").write_text(json.dumps({"stage": "04_pruning", "run_info": {}, "headline": {},
                                                         "metrics": {}, "variants": [pruned]}))
    models = [{"name": "teacher", "keep_fp32_groups": ["L0 ffn_out"]},
              {"name": "student_kd_intermediate", "keep_fp32_groups": ["L1 ffn_in", "L2 attention"]}]
    (reports / "03_quantization.json").write_text(json.dumps({"stage": "03_quantization", "run_info": {}, "headline": {},
                                                              "metrics": {"models": models}}))
    found = script.stage03_groups(tmp_path, tmp_path / "checkpoints" / "pruned" / "student_50")
    assert found == ("student_kd_intermediate", ["L1 ffn_in", "L2 attention"])
    with pytest.raises(FinCompressError, match="student_30 is not a model listed in"):
        script.stage03_groups(tmp_path, tmp_path / "checkpoints" / "pruned" / "student_30")
    models.pop()
    (reports / "03_quantization.json").write_text(json.dumps({"stage": "03_quantization", "run_info": {}, "headline": {},
                                                              "metrics": {"models": models}}))
    with pytest.raises(FinCompressError, match="stage 03 did not quantize student_kd_intermediate"):
        script.stage03_groups(tmp_path, tmp_path / "checkpoints" / "pruned" / "student_50")
