"""lib/techniques/quantize.py: INT8 disk round trips, ONNX parity, real size reduction, QAT conversion."""
import json
import re

import onnx
import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.variants import TORCH_WEIGHTS
from lib.data import batching
from lib.measure import bench
from lib.stages.quantization import train_qat
from lib.techniques import quantize as q

SENTENCES = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn.", "Shares fell.",
             "The company said it will cut 120 jobs at its plant in Finland this year.", "Net sales were flat."]


@pytest.fixture(scope="module")
def tiny(tokenizer):
    """A small random BERT with the real vocabulary, so embeddings weigh what they do in MiniLM."""
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=128, max_position_embeddings=128, num_labels=3)
    return BertForSequenceClassification(cfg).eval()


def is_int8(module) -> bool:
    return type(module).__module__.startswith("torch.ao.nn.quantized")


def padded(tokenizer, texts=SENTENCES):
    batch = q.example_inputs(tokenizer, texts)
    assert (batch["attention_mask"] == 0).any(), "the parity batch must contain padding"
    return batch


def test_groups_cover_every_layer(tiny):
    groups = set(q.quantizable(tiny).values())
    assert groups == {"embeddings", "L0 attention", "L0 ffn_in", "L0 ffn_out", "L1 attention", "L1 ffn_in",
                      "L1 ffn_out", "head"}
    assert q.group_of("bert.encoder.layer.3.attention.output.dense") == "L3 attention"
    assert q.group_of("bert.encoder.layer.3.output.dense") == "L3 ffn_out"
    assert q.group_of("classifier") == "head"


def test_int8_saves_loads_and_predicts(tiny, tokenizer, tmp_path):
    qmodel = q.quantize_torch(tiny)
    assert is_int8(qmodel.bert.encoder.layer[0].intermediate.dense) and is_int8(qmodel.bert.embeddings.word_embeddings)
    q.save_torch_int8(qmodel, tiny.config, tokenizer, tmp_path / "int8", {"keep_fp32": [], "per_channel": True})
    predict, tok = q.load_torch_int8(tmp_path / "int8")
    batch = padded(tok)
    with torch.inference_mode():
        in_memory, fp32 = qmodel(**batch).logits, tiny(**batch).logits
    reloaded = predict(batch)
    assert reloaded.shape == (len(SENTENCES), 3)
    assert torch.equal(reloaded, in_memory), "reloaded INT8 model differs from the one saved"
    assert q.logit_diff(reloaded, fp32)["max_abs_diff"] < 0.1


def test_size_reduction_is_real(tiny, tokenizer, tmp_path):
    tiny.save_pretrained(tmp_path / "fp32")
    q.save_torch_int8(q.quantize_torch(tiny), tiny.config, tokenizer, tmp_path / "int8", {"keep_fp32": [], "per_channel": True})
    ratio = bench.weight_bytes(tmp_path / "fp32") / bench.weight_bytes(tmp_path / "int8")
    assert ratio >= 3.0, f"INT8 weights only {ratio:.2f}x smaller on disk"


def test_keep_fp32_leaves_named_modules_alone(tiny):
    keep = q.modules_in(tiny, ["head", "L1 ffn_out"])
    qmodel = q.quantize_torch(tiny, keep)
    assert type(qmodel.classifier) is nn.Linear and type(qmodel.bert.encoder.layer[1].output.dense) is nn.Linear
    assert is_int8(qmodel.bert.encoder.layer[0].output.dense)


def test_onnx_export_parity_on_padded_batch(tiny, tokenizer, tmp_path):
    q.export_onnx(tiny, padded(tokenizer, SENTENCES[:3]), tmp_path / "model.onnx")
    tokenizer.save_pretrained(tmp_path)
    predict, _ = q.load_onnx(tmp_path)
    other = padded(tokenizer, SENTENCES[1:] + ["Profit warning."])  # other batch size and length: axes are dynamic
    with torch.inference_mode():
        diff = q.logit_diff(predict(other), tiny(**other).logits)
    assert diff["max_abs_diff"] < 1e-4 and diff["agreement"] == 1.0


def test_onnx_int8_smaller_and_respects_exclusions(tiny, tokenizer, tmp_path):
    q.export_onnx(tiny, padded(tokenizer), tmp_path / "fp32.onnx")
    q.quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "all.onnx")
    q.quantize_onnx(tmp_path / "fp32.onnx", tmp_path / "keep.onnx",
                    q.QuantConfig(keep_fp32=tuple(q.modules_in(tiny, ["L0 attention", "L1 ffn_out"]))))
    assert bench.disk_bytes(tmp_path / "fp32.onnx") / bench.disk_bytes(tmp_path / "all.onnx") >= 3.0
    ops = {n: [x.op_type for x in onnx.load(str(tmp_path / n)).graph.node] for n in ("all.onnx", "keep.onnx")}
    # L0 attention is one fused QKV node plus the output projection; L1 ffn_out is one MatMul.
    assert ops["all.onnx"].count("QAttention") - ops["keep.onnx"].count("QAttention") == 1
    assert ops["all.onnx"].count("MatMulInteger") - ops["keep.onnx"].count("MatMulInteger") == 2
    assert q.onnx_nodes_for(tmp_path / "fp32.onnx", ["classifier"])


def test_qat_does_not_depend_on_random_draws_made_before_it(tiny, tokenizer):
    import pandas as pd
    rows = pd.DataFrame({"text": SENTENCES * 2, "label": [2, 0, 0, 1] * 2})
    p = {"per_channel": True, "max_length": 32, "seed": 0, "qat_epochs": 1, "qat_lr": 1e-3}
    logits = []
    for draws in (0, 7):
        torch.rand(draws)  # e.g. a different number of evaluations or exports earlier in stage 03
        model, run = train_qat("tiny", tiny, tokenizer, {"train": rows, "val": rows}, [], torch.device("cpu"), p, 0)
        with torch.inference_mode():
            logits.append(model(**padded(tokenizer)).logits)
    assert len(run["history"]) == 1 and torch.equal(logits[0], logits[1])


@pytest.mark.parametrize("gpu", [True, False])
def test_qat_under_gpu_trains_in_bf16_autocast(tiny, tokenizer, monkeypatch, gpu):
    """--gpu: every QAT training step and val batch enters bf16 autocast (CUDA's autocast swapped for the CPU's,
    as in test_train: no GPU here), activations are still rounded in fp32, the master weights stay fp32."""
    import pandas as pd
    entered, rounded = [], []
    monkeypatch.setattr(batching, "autocast", lambda device, enabled: entered.append(enabled) or
                        torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled))
    real_fq = torch.fake_quantize_per_tensor_affine
    monkeypatch.setattr(torch, "fake_quantize_per_tensor_affine", lambda x, *a: rounded.append(x.dtype) or real_fq(x, *a))
    rows = pd.DataFrame({"text": SENTENCES * 2, "label": [2, 0, 0, 1] * 2})
    p = {"per_channel": True, "max_length": 32, "seed": 0, "qat_epochs": 1, "qat_lr": 1e-3, "gpu": gpu}
    model, run = train_qat("tiny", tiny, tokenizer, {"train": rows, "val": rows}, [], torch.device("cpu"), p, 0)
    assert entered == [gpu] * 2 and len(run["history"]) == 1  # 1 training step (8 rows at 32) + 1 val batch (at 64)
    assert [s["step"] for s in run["steps"]] == [1]  # its training curve: that one step
    assert set(rounded) == {torch.float32} and is_int8(model.classifier)


def test_qat_trains_through_rounding_and_converts(tiny, tokenizer):
    qat = q.prepare_qat(tiny)
    assert isinstance(qat.bert.encoder.layer[0].attention.self.query, q.FakeQuantLinear)
    batch = padded(tokenizer)
    loss = nn.functional.cross_entropy(qat(**batch).logits, torch.tensor([0, 1, 2, 1]))
    loss.backward()  # the straight-through estimator lets gradients reach the FP32 weights
    grad = qat.bert.encoder.layer[0].attention.self.query.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    qat.zero_grad()
    converted = q.convert_qat(qat)
    assert not any(isinstance(m, q.FakeQuantLinear) for m in converted.modules())
    assert is_int8(converted.classifier)
    with torch.inference_mode():
        fake, real = qat.eval()(**batch).logits, converted(**batch).logits
    assert q.logit_diff(fake, real)["max_abs_diff"] < 0.05, "QAT trained on something other than what ships"


class OpensAFile:
    """Unpickled in full, this calls open(marker, "w"): the marker shows code from the file ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_a_crafted_int8_file_is_refused_and_nothing_in_it_runs(tiny, tokenizer, tmp_path):
    folder, marker = tmp_path / "int8", tmp_path / "ran"
    q.save_torch_int8(q.quantize_torch(tiny), tiny.config, tokenizer, folder, {"keep_fp32": [], "per_channel": True})
    torch.save({"classifier.scale": OpensAFile(marker)}, folder / TORCH_WEIGHTS)
    manifest.write_manifest(folder)  # a hostile folder brings a manifest that matches
    with pytest.raises(FinCompressError, match=r"names \S*open, which a weights-only load refuses; nothing from it"):
        q.load_torch_int8(folder)
    assert not marker.exists()
    torch.save({"classifier.scale": torch.zeros(7, 7)}, folder / TORCH_WEIGHTS)  # tensors only, wrong ones
    manifest.write_manifest(folder)
    with pytest.raises(FinCompressError, match="does not fit its config.json"):
        q.load_torch_int8(folder)


def test_bad_inputs_are_one_line_errors(tmp_path):
    with pytest.raises(FinCompressError, match="not a torch_int8 model"):
        q.load_torch_int8(tmp_path)
    with pytest.raises(FinCompressError, match="holds no model.onnx"):
        q.load_onnx(tmp_path)
