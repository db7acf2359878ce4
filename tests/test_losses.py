"""lib/modeling/losses.py: KD, the one KD+CE objective, its precomputed-logits form, hidden and attention MSE, by hand."""
import math

import pytest
import torch
import torch.nn.functional as F

from lib.modeling import losses
from tests.test_distill import tiny_batch, tiny_teacher

# Teacher probs [0.75, 0.25] vs uniform student: KL = 0.75 ln 1.5 + 0.25 ln 0.5
KL_75_25 = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)


def test_kd_loss_known_value():
    s, t = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    assert losses.kd_loss(s, t, 1.0).item() == pytest.approx(KL_75_25, rel=1e-5)


def test_kd_loss_divides_by_t_and_scales_by_t_squared():
    # at T=2 these teacher logits give the same [0.75, 0.25], so only the T^2 factor changes the value
    s, t = torch.zeros(1, 2), torch.tensor([[2 * math.log(3.0), 0.0]])
    assert losses.kd_loss(s, t, 2.0).item() == pytest.approx(4 * KL_75_25, rel=1e-5)


def test_kd_loss_is_batch_mean_and_zero_when_equal():
    s = torch.zeros(2, 2)
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    assert losses.kd_loss(s, t, 1.0).item() == pytest.approx(KL_75_25 / 2, rel=1e-5)
    x = torch.randn(4, 3)
    assert losses.kd_loss(x, x, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_mixed_loss_weights_kd_and_ce():
    s, t, y = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]]), torch.tensor([0])
    loss, parts = losses.mixed_loss(s, t, y, 0.3, 1.0)
    assert loss.item() == pytest.approx(0.3 * KL_75_25 + 0.7 * math.log(2), rel=1e-5)
    assert parts["ce"] == pytest.approx(math.log(2), rel=1e-5)
    assert losses.mixed_loss(s, t, y, 0.0, 1.0)[0].item() == pytest.approx(math.log(2), rel=1e-5)
    assert losses.mixed_loss(s, t, torch.tensor([1]), 1.0, 1.0)[0].item() == pytest.approx(KL_75_25, rel=1e-5)


def test_unlabeled_rows_get_kd_only():
    s = torch.tensor([[0.0, 0.0], [2.0, -1.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.5, 0.5]])
    loss, parts = losses.mixed_loss(s, t, torch.tensor([0, -1]), 0.3, 1.0)
    kd = losses.kd_loss(s, t, 1.0).item()  # KD over both rows
    assert parts["ce"] == pytest.approx(math.log(2), rel=1e-5)  # CE from the labeled row alone
    assert loss.item() == pytest.approx(0.3 * kd + 0.7 * math.log(2), rel=1e-5)
    unlabeled, parts = losses.mixed_loss(s, t, torch.tensor([-1, -1]), 0.3, 1.0)
    assert unlabeled.item() == pytest.approx(0.3 * kd, rel=1e-5) and parts["ce"] == 0.0


def test_hidden_mse_known_value_and_padding_ignored():
    mask = torch.tensor([[1, 1, 0]])
    s, t = torch.zeros(1, 3, 4), torch.zeros(1, 3, 4)
    t[0, 0] = 2.0  # one real token off by 2 in all 4 dims: 4 * 4 / (2 tokens * 4 dims) = 2
    assert losses.hidden_mse([s], [t], mask).item() == pytest.approx(2.0)
    t_pad = t.clone()
    t_pad[0, 2] = 100.0
    assert losses.hidden_mse([s], [t_pad], mask).item() == pytest.approx(2.0)
    assert losses.hidden_mse([s, s], [t, s], mask).item() == pytest.approx(1.0)  # mean over layers


def test_attention_mse_known_value_and_padding_ignored():
    mask = torch.tensor([[1, 1, 0]])
    s, t = torch.zeros(1, 2, 3, 3), torch.full((1, 2, 3, 3), 0.5)
    assert losses.attention_mse([s], [t], mask).item() == pytest.approx(0.25)
    t_pad = t.clone()
    t_pad[:, :, 2, :] = 9.0  # padded query row
    t_pad[:, :, :, 2] = 9.0  # padded key column
    assert losses.attention_mse([s], [t_pad], mask).item() == pytest.approx(0.25)
    t_real = t.clone()
    t_real[0, 0, 1, 1] = 1.5  # a real (query, key) pair does count: (2.25 - 0.25) / 8 more
    assert losses.attention_mse([s], [t_real], mask).item() == pytest.approx(0.25 + 2.0 / 8)


def test_precomputed_kd_loss_looks_up_teacher_logits_by_idx():
    """Distillation (vanilla KD) and pruning recovery both train with this one loss."""
    student = tiny_teacher(2, seed=1)
    table = torch.tensor([[3.0, 0.0, -3.0], [0.0, 0.0, 5.0]])
    batch = tiny_batch()
    loss, _ = losses.precomputed_kd_loss(table, 0.7, 2.0)(student, batch)
    logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    expected = 0.7 * losses.kd_loss(logits, table[[1, 0]], 2.0) + 0.3 * F.cross_entropy(logits, batch["labels"])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mixed_loss_on_fully_labeled_batches_is_bitwise_plain_kd_plus_ce():
    """Pruning recovery used alpha * KD + (1 - alpha) * CE without the unlabeled mask; the one shared loss must give
    exactly the same value and gradients there, or stage 04's results would move."""
    torch.manual_seed(0)
    s1 = torch.randn(8, 3, requires_grad=True)
    s2 = s1.detach().clone().requires_grad_(True)
    t, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    shared, _ = losses.mixed_loss(s1, t, y, 0.7, 2.0)
    plain = 0.7 * losses.kd_loss(s2, t, 2.0) + 0.3 * F.cross_entropy(s2.float(), y)
    shared.backward()
    plain.backward()
    assert torch.equal(shared, plain) and torch.equal(s1.grad, s2.grad)
