"""lib/techniques/distill.py: the student cut from the teacher's layers, and the intermediate-layer KD objective."""
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lib.core.errors import FinCompressError
from lib.modeling import losses
from lib.techniques import distill


def tiny_teacher(layers: int = 6, seed: int = 0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=3, attn_implementation="eager")
    return BertForSequenceClassification(config).eval()


def tiny_batch():
    ids = torch.tensor([[2, 5, 7, 9, 3], [2, 11, 3, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.tensor([0, 2]),
            "idx": torch.tensor([1, 0])}


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


class Loader(list):
    """Batches with the idx rows they hold, as make_loader yields them, and the dataset size teacher_internals reads."""
    dataset = range(2)


def cached_targets(teacher, mapping, loader=None):
    """The teacher's logits table and internals over the two sentences of tiny_batch, each run alone (unpadded)."""
    b = tiny_batch()
    alone = loader or Loader([{"input_ids": b["input_ids"][r:r + 1, :int(b["attention_mask"][r].sum())],
                               "attention_mask": b["attention_mask"][r:r + 1, :int(b["attention_mask"][r].sum())],
                               "labels": b["labels"][r:r + 1], "idx": b["idx"][r:r + 1]} for r in (1, 0)])
    targets = distill.teacher_targets(teacher, alone, mapping, torch.device("cpu"))
    with torch.no_grad():
        for x in alone:  # logits by idx, as every KD student looks them up
            direct = teacher(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
            assert torch.allclose(targets["logits"][x["idx"]], direct, atol=1e-6)
    return targets.pop("logits"), targets


def per_batch_loss(teacher, mapping, student, batch):
    """The objective with the teacher run on the batch itself: what the cached targets must reproduce."""
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
    with torch.no_grad():
        t = teacher(**inputs, output_hidden_states=True, output_attentions=True)
    s = student(**inputs, output_hidden_states=True, output_attentions=True)
    loss, _ = losses.mixed_loss(s.logits, t.logits, batch["labels"], 0.5, 2.0)
    hid = losses.hidden_mse(s.hidden_states[1:], [t.hidden_states[j + 1] for j in mapping], batch["attention_mask"])
    att = losses.attention_mse(s.attentions, [t.attentions[j] for j in mapping], batch["attention_mask"])
    return loss + hid + att


def test_full_depth_student_reproduces_teacher_and_intermediate_terms_vanish():
    teacher = tiny_teacher(4)
    student, mapping = distill.build_student(teacher, 4)
    student.eval()
    loss_fn = distill.intermediate_loss_fn(*cached_targets(teacher, mapping), 0.5, 2.0, 1.0, 1.0)
    loss, parts = loss_fn(student, tiny_batch())  # padded differently from the unpadded pass that cached the targets
    assert parts["kd"] == pytest.approx(0, abs=1e-6)
    assert parts["hidden"] == pytest.approx(0, abs=1e-8) and parts["attention"] == pytest.approx(0, abs=1e-8)
    assert loss.item() == pytest.approx(0.5 * float(parts["ce"]), rel=1e-5)


def test_cached_targets_give_the_loss_of_a_teacher_run_on_every_batch():
    teacher = tiny_teacher(6)
    student, mapping = distill.build_student(teacher, 2)
    student.eval()
    batch = tiny_batch()
    cached, _ = distill.intermediate_loss_fn(*cached_targets(teacher, mapping), 0.5, 2.0, 1.0, 1.0)(student, batch)
    assert cached.item() == pytest.approx(per_batch_loss(teacher, mapping, student, batch).item(), rel=1e-5)
    # cached from the padded batch itself, in its own row order: the same
    logits, internals = cached_targets(teacher, mapping, Loader([batch]))
    assert internals["hidden"][0].shape == (2, 3, 16) and internals["attention"][1].shape == (2, 2, 5, 5)
    again, _ = distill.intermediate_loss_fn(logits, internals, 0.5, 2.0, 1.0, 1.0)(student, batch)
    assert again.item() == pytest.approx(cached.item(), rel=1e-5)
    wrong = {k: v[::-1] for k, v in internals.items()}  # rows swapped: another sentence's targets
    with pytest.raises(RuntimeError):
        distill.intermediate_loss_fn(logits, wrong, 0.5, 2.0, 1.0, 1.0)(student, batch)


def test_shallow_student_intermediate_loss_is_positive_and_differentiable():
    teacher = tiny_teacher(6)
    student, mapping = distill.build_student(teacher, 2)
    loss, parts = distill.intermediate_loss_fn(*cached_targets(teacher, mapping), 0.5, 2.0, 1.0, 1.0)(student, tiny_batch())
    assert parts["hidden"] > 0 and parts["attention"] > 0
    loss.backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad is not None
    assert all(p.grad is None for p in teacher.parameters())
