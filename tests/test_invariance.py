"""lib/measure/invariance.py: labels that depend on batch-mates (batch flips) counted on a real dynamic-INT8 ONNX model
and on a fake whose output depends on its batch, and the shipped model's F1 as `python -m lib.predict` gives it."""
import json

import numpy as np
import pandas as pd
import pytest
import torch

from lib.core.variants import LABELS, Variant
from lib.measure import bench, harness, invariance
from lib.modeling.train import scores
from lib.predict import command
from tests import tiny_model

# 40 sentences of 2 to 40 words: batch-mates of many lengths, so a batch pads most of them
TEXTS = [" ".join(tiny_model.TEXTS[i % 6:i % 6 + 1 + i % 4]) + " and more words follow here" * (i % 3) for i in range(40)]


@pytest.fixture(scope="module")
def onnx_variants(tmp_path_factory):
    """(root, FP32 variant, dynamic INT8 variant): the tiny classifier exported as stage 06 exports a model."""
    from lib.techniques.onnx_export import save_onnx_fp32, save_onnx_int8
    root = tmp_path_factory.mktemp("invariance")
    model, tokenizer = tiny_model.tiny_classifier()
    fp32, _ = save_onnx_fp32("tiny", model, tokenizer, tiny_model.TEXTS, root / "stacked", 1e-3)
    int8 = save_onnx_int8("tiny", fp32, tokenizer, root / "stacked", [])
    return root, *(Variant(d.name, "onnx", str(d.relative_to(root))) for d in (fp32, int8))


def alone(root, variant, texts) -> np.ndarray:
    """Each sentence alone, unpadded, through a plain ONNX Runtime session: the batch-1 labels, without lib."""
    import onnxruntime
    from transformers import AutoTokenizer
    folder = variant.location(root)
    session, tok = onnxruntime.InferenceSession(str(folder / "model.onnx")), AutoTokenizer.from_pretrained(folder)
    return np.array([session.run(None, dict(tok(t, return_tensors="np")))[0][0].argmax() for t in texts])


def test_dynamic_int8_labels_flip_with_batch_mates_and_fp32_labels_do_not(onnx_variants):
    root, fp32, int8 = onnx_variants
    flips = {}
    for v in (fp32, int8):
        r = bench.measure_variant(v, root, {"val": TEXTS, "test": TEXTS[:8]}, threads=1, latency_n=3,
                                  flip_sets=("val", "ood_val"), seed=3)  # a set not measured is skipped
        batched = np.asarray(r["logits"]["val"]).argmax(1)
        expected = int((alone(root, v, TEXTS) != batched).sum())  # the count, recomputed without lib
        assert r["batch_flips"] == {"val": {"flips": expected, "n": len(TEXTS)}}, v.name
        flips[v.name] = expected
    # DynamicQuantizeLinear scales each batch as a whole, padding included: the tiny model's INT8 labels move
    assert flips == {fp32.name: 0, int8.name: flips[int8.name]} and flips[int8.name] >= 5


def test_the_counter_compares_each_sentence_alone_with_its_batch(tokenizer):
    """A fake model whose logit for class 1 is a sentence's length minus its batch's mean length: alone it reads 0
    (class 0); in a batch, every sentence longer than the batch's mean turns to class 1."""
    def predict(inputs):
        n = torch.as_tensor(inputs["attention_mask"]).sum(1).float()
        return torch.stack([torch.zeros_like(n), n - n.mean(), torch.zeros_like(n)], 1)
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    singles = bench.batch1_inputs(tokenizer, TEXTS, seq_len=None, n=len(TEXTS))
    longer = int((batch["attention_mask"].sum(1).float() > batch["attention_mask"].sum(1).float().mean()).sum())
    assert 0 < longer < len(TEXTS)
    assert invariance.batch_flips(predict, singles, predict(batch).numpy()) == {"flips": longer, "n": len(TEXTS)}
    def own(inputs):  # a model that reads each sentence on its own: nothing flips
        n = torch.as_tensor(inputs["attention_mask"]).sum(1).float()
        return torch.stack([n % 3, 1 - n % 3, torch.zeros_like(n)], 1)
    assert invariance.batch_flips(own, singles, own(batch).numpy())["flips"] == 0


def test_each_set_is_shuffled_by_its_seed_and_put_back_in_input_order():
    order = invariance.shuffled(50, seed=42)
    assert sorted(order) == list(range(50)) and (order != np.arange(50)).any()
    assert (invariance.shuffled(50, 42) == order).all() and (invariance.shuffled(50, 43) != order).any()
    logits = np.arange(50.0)[:, None] * [1, -1, 0]
    assert (invariance.in_input_order(logits[order], order) == logits).all()


def test_flip_columns_per_set_from_the_childs_report():
    raw = {"batch_flips": {"val": {"flips": 2, "n": 505}, "ood_val": {"flips": 0, "n": 2829}}}
    assert harness.flip_columns(raw) == {"val_batch_flips": 2, "val_batch_n": 505, "ood_val_batch_flips": 0,
                                         "ood_val_batch_n": 2829}
    assert harness.flip_columns({}) == {}  # a yardstick (no set measured one sentence at a time)


def test_served_f1_is_what_predict_prints(tmp_path, monkeypatch, capsys):
    model = tiny_model.build(tmp_path)
    monkeypatch.setattr(command, "CHUNK_ROWS", 7)  # several chunks, as a set longer than 2,048 rows has
    texts, labels = tiny_model.TEXTS * 3, np.arange(18) % 3
    pd.DataFrame({"text": texts}).to_csv(tmp_path / "s.csv", index=False)
    monkeypatch.setenv("RAYON_NUM_THREADS", "1")  # predict sets it; monkeypatch puts it back
    assert command.main(["--model", str(model), "--csv", str(tmp_path / "s.csv"), "--json", "--threads", "1"]) == 0
    predicted = [LABELS.index(json.loads(line)["label"]) for line in capsys.readouterr().out.splitlines()]
    assert len(predicted) == 18
    served = invariance.served_f1(model, {"s": (texts, labels)}, threads=1)
    assert served == {"s": pytest.approx(scores(labels, np.array(predicted))["macro_f1"], abs=1e-12)}
    row = {"name": "m", "s_macro_f1": served["s"]}
    assert "the same as the table's (shuffled batches of 32) on every set" in invariance.served_text(row, served)
    text = invariance.served_text({**row, "s_macro_f1": served["s"] - 0.01}, served)
    assert f"differ: s {served['s'] - 0.01:.3f}, because batch-mates move its labels" in text


def test_the_gate_admits_a_variant_by_its_macro_f1_on_the_deciding_set(onnx_variants):
    """FlipGate: flips are counted at or above the floor, not below it, and where the deciding set was not scored;
    measure_variant then returns no flips at all for a variant the gate refuses."""
    labels = (0, 1, 2, 0)
    right, wrong = np.eye(3)[[0, 1, 2, 0]], np.eye(3)[[1, 2, 0, 1]]
    gate = invariance.FlipGate("val", labels, scores(np.array(labels), np.array([0, 1, 2, 0]))["macro_f1"])
    assert gate.admits({"val": right}) and not gate.admits({"val": wrong}) and gate.admits({"test": wrong})
    root, fp32, _ = onnx_variants
    texts = {"val": TEXTS[:8], "test": TEXTS[:4]}
    shut = invariance.FlipGate("val", tuple([0] * 8), 1.1)  # no macro-F1 reaches 1.1
    r = bench.measure_variant(fp32, root, texts, threads=1, latency_n=2, flip_sets=("val",), flip_gate=shut)
    assert r["batch_flips"] == {}
    r = bench.measure_variant(fp32, root, texts, threads=1, latency_n=2, flip_sets=("val",),
                              flip_gate=invariance.FlipGate("val", tuple([0] * 8), 0.0))
    assert r["batch_flips"]["val"]["n"] == 8
