"""lib/distill.py: losses against hand-computed values, padding masks, student construction, notebook 02 smoke run."""
import json
import math
import re

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig, BertForSequenceClassification

from lib import common, distill
from lib.common import FinCompressError

# Teacher probs [0.75, 0.25] vs uniform student: KL = 0.75 ln 1.5 + 0.25 ln 0.5
KL_75_25 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def tiny_teacher(layers: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=3, attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


def tiny_batch():
    ids = torch.tensor([[2, 5, 7, 9, 3], [2, 11, 3, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([0, 2]),
            "idx": torch.tensor([1, 0])}


def test_kd_loss_known_value():
    s, t = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    assert distill.kd_loss(s, t, 1.0).item() == pytest.approx(KL_75_25, rel=1e-5)


def test_kd_loss_divides_by_t_and_scales_by_t_squared():
    # at T=2 these teacher logits give the same [0.75, 0.25], so only the T^2 factor changes the value
    s, t = torch.zeros(1, 2), torch.tensor([[2 * math.log(3.0), 0.0]])
    assert distill.kd_loss(s, t, 2.0).item() == pytest.approx(4 * KL_75_25, rel=1e-5)


def test_kd_loss_is_batch_mean_and_zero_when_equal():
    s = torch.zeros(2, 2)
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    assert distill.kd_loss(s, t, 1.0).item() == pytest.approx(KL_75_25 / 2, rel=1e-5)
    x = torch.randn(4, 3)
    assert distill.kd_loss(x, x, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_mixed_loss_weights_kd_and_ce():
    s, t, y = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    loss, parts = distill.mixed_loss(s, t, y, 0.3, 1.0)
    assert loss.item() == pytest.approx(0.3 * KL_75_25 + 0.7 * math.log(2), rel=1e-5)
    assert parts["ce"] == pytest.approx(math.log(2), rel=1e-5)
    assert distill.mixed_loss(s, t, y, 0.0, 1.0)[0].item() == pytest.approx(math.log(2), rel=1e-5)
    assert distill.mixed_loss(s, t, torch.tensor([1]), 1.0, 1.0)[0].item() == pytest.approx(KL_75_25, rel=1e-5)


def test_unlabeled_rows_get_kd_only():
    s = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.5, 0.5]])
    loss, parts = distill.mixed_loss(s, t, torch.tensor([0, -1]), 0.3, 1.0)
    kd = distill.kd_loss(s, t, 1.0).item()  # KD over both rows
    assert parts["ce"] == pytest.approx(math.log(2), rel=1e-5)  # CE from the labeled row alone
    assert loss.item() == pytest.approx(0.3 * kd + 0.7 * math.log(2), rel=1e-5)
    unlabeled, parts = distill.mixed_loss(s, t, torch.tensor([-1, -1]), 0.3, 1.0)
    assert unlabeled.item() == pytest.approx(0.3 * kd, rel=1e-5) and parts["ce"] == 0.0


def test_hidden_mse_known_value_and_padding_ignored():
    mask = torch.tensor([[1, 1, 0]])
    s, t = torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)
    t[0, 0] = 2.0  # one real token off by 2 in all 4 dims: 4 * 4 / (2 tokens * 4 dims) = 2
    assert distill.hidden_mse([s], [t], mask).item() == pytest.approx(2.0)
    t_pad = t.clone()
    t_pad[0, 2] = 100.0
    assert distill.hidden_mse([s], [t_pad], mask).item() == pytest.approx(2.0)
    assert distill.hidden_mse([s, s], [t, s], mask).item() == pytest.approx(1.0)  # mean over layers


def test_attention_mse_known_value_and_padding_ignored():
    mask = torch.tensor([[1, 1, 0]])
    s, t = torch.zeros(1, 2, 3, 3), torch.full((1, 2, 3, 3), 0.5)
    assert distill.attention_mse([s], [t], mask).item() == pytest.approx(0.25)
    t_pad = t.clone()
    t_pad[:, :, 2, :] = 9.0  # padded query row
    t_pad[:, :, :, 2] = 9.0  # padded key column
    assert distill.attention_mse([s], [t_pad], mask).item() == pytest.approx(0.25)
    t_real = t.clone()
    t_real[0, 0, 1, 1] = 1.5  # a real (query, key) pair does count: (2.25 - 0.25) / 8 more
    assert distill.attention_mse([s], [t_real], mask).item() == pytest.approx(0.25 + 2.0 / 8)


@pytest.mark.parametrize("n,k,expected", [(6, 2, [2, 5]), (12, 4, [2, 5, 8, 11]), (6, 6, [0, 1, 2, 3, 4, 5]),
                                          (6, 1, [5]), (12, 6, [1, 3, 5, 7, 9, 11])])
def test_layer_map_is_evenly_spaced_and_ends_at_top(n, k, expected):
    assert distill.layer_map(n, k) == expected


def test_student_layers_auto_and_bad_values():
    assert distill.resolve_student_layers(6, 0) == 3
    assert distill.resolve_student_layers(12, 0) == 6
    for bad in (7, -1):
        with pytest.raises(FinCompressError, match="student_layers"):
            distill.resolve_student_layers(6, bad)


def test_student_copies_mapped_layers_embeddings_and_head():
    teacher = tiny_teacher(6)
    assert distill.build_student(teacher, 0)[1] == [1, 3, 5]  # the default: half the depth
    student, mapping = distill.build_student(teacher, 2)
    assert type(student) is type(teacher) and mapping == [2, 5]
    assert student.config.num_hidden_layers == 2 and student.config.distill_layer_map == [2, 5]
    assert teacher.config.num_hidden_layers == 6  # the teacher's config is not mutated
    t_layers, s_layers = teacher.bert.encoder.layer, student.bert.encoder.layer
    for i, j in enumerate(mapping):
        for (name, p), (_, q) in zip(s_layers[i].named_parameters(), t_layers[j].named_parameters()):
            assert torch.equal(p, q), f"student layer {i} {name} differs from teacher layer {j}"
        assert not torch.equal(s_layers[i].output.dense.weight, t_layers[(j + 1) % 6].output.dense.weight)
    for a, b in [(student.bert.embeddings, teacher.bert.embeddings), (student.classifier, teacher.classifier),
                 (student.bert.pooler, teacher.bert.pooler)]:
        assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    student.bert.embeddings.word_embeddings.weight.data.add_(1.0)  # copies, not shared storage
    assert not torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)


def test_full_depth_student_reproduces_teacher_and_intermediate_terms_vanish():
    teacher = tiny_teacher(4)
    student, mapping = distill.build_student(teacher, 4)
    student.eval()
    batch = tiny_batch()
    loss_fn = distill.intermediate_loss_fn(teacher, mapping, 0.5, 2.0, 1.0, 1.0)
    loss, parts = loss_fn(student, batch)
    assert parts["kd"] == pytest.approx(0, abs=1e-6)
    assert parts["hidden"] == pytest.approx(0, abs=1e-8) and parts["attention"] == pytest.approx(0, abs=1e-8)
    assert loss.item() == pytest.approx(0.5 * float(parts["ce"]), rel=1e-5)


def test_shallow_student_intermediate_loss_is_positive_and_differentiable():
    teacher = tiny_teacher(6)
    student, mapping = distill.build_student(teacher, 2)
    loss, parts = distill.intermediate_loss_fn(teacher, mapping, 0.5, 2.0, 1.0, 1.0)(student, tiny_batch())
    assert parts["hidden"] > 0 and parts["attention"] > 0
    loss.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())


def test_vanilla_loss_looks_up_teacher_logits_by_idx():
    student = tiny_teacher(2, seed=1)
    table = torch.tensor([[3.0, 0.0, -3.0], [0.0, 0.0, 5.0]])
    batch = tiny_batch()
    loss, _ = distill.vanilla_loss_fn(table, 0.7, 2.0)(student, batch)
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = 0.7 * distill.kd_loss(logits, table[[1, 0]], 2.0) + 0.3 * F.cross_entropy(logits, batch["labels"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


HPARAMS = dict(student_layers=0, epochs=1, lr=1e-4, batch_size=8, max_length=32, alpha=0.5, temperature=2.0,
               hidden_weight=1.0, attention_weight=1.0, patience=1, seed=0)


@pytest.mark.parametrize("name,value", [("alpha", 1.5), ("alpha", -0.1), ("temperature", 0.0), ("temperature", -1.0),
                                        ("hidden_weight", -1.0), ("epochs", 0)])
def test_bad_hyperparameters_are_one_line_errors(tmp_path, name, value):
    run = {**common.stage_paths(tmp_path), "device": torch.device("cpu")}
    with pytest.raises(FinCompressError, match=name):
        distill.setup(run, **{**HPARAMS, name: value})


def test_missing_teacher_says_run_stage_01(tmp_path):
    run = {**common.stage_paths(tmp_path), "device": torch.device("cpu")}
    with pytest.raises(FinCompressError, match="run stage 01 first"):
        distill.setup(run, **HPARAMS)


def test_notebook_02_smoke(smoke_run):
    report = json.loads((smoke_run / "reports" / "02_distillation.json").read_text())
    assert report["stage"] == "02_distillation"
    m = report["metrics"]
    names = [v["name"] for v in m["variants"]]
    assert names == ["student_baseline", "student_kd_vanilla", "student_kd_intermediate"]
    for v in m["variants"]:
        assert v["format"] == "hf" and v["parent"] == "teacher" and not v["path"].startswith("/")
        assert (smoke_run / v["path"] / "config.json").is_file() and v["params"] < m["teacher"]["params"]
        info = json.loads((smoke_run / v["path"] / "checkpoint_info.json").read_text())
        assert info["layer_map"] == m["layer_map"] == [1, 3, 5]
        assert 0 <= v["test_macro_f1"] <= 1 and v["disk_bytes"] > 0 and v["latency_ms"] > 0
    best = max(m["variants"], key=lambda v: v["val_macro_f1"])
    assert m["best_student"] == {"name": best["name"], "path": best["path"]}
    for name in ["teacher", *names]:
        row = m["comparison"][name]
        assert 0 <= row["agreement_test"] <= 1 and set(m["sizes"][name]) >= {"params", "disk_bytes", "latency_ms"}
    assert report["headline"]["best student"] == best["name"]
    html = (smoke_run / "reports" / "02_distillation.html").read_text()
    # curves, F1 bars, confusions, per-class F1 (the template's CSS holds one more data URL, not counted)
    assert len(re.findall(r'<img[^>]+src="data:image/png', html)) >= 4
    assert "Traceback" not in html
