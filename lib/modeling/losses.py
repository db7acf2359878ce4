"""Distillation losses shared by every technique that learns from a teacher (students, pruning recovery)."""
import torch
import torch.nn.functional as F

from lib.data.batching import model_inputs


def kd_loss(student_logits, teacher_logits, temperature: float):
    """KL(teacher/T || student/T) * T^2; the T^2 keeps gradient size independent of T (Hinton et al.)."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits.float() / t, -1), F.softmax(teacher_logits.float() / t, -1),
                    reduction="batchmean") * t * t


def mixed_loss(student_logits, teacher_logits, labels, alpha: float, temperature: float):
    """The one KD+CE objective: alpha * KD + (1 - alpha) * CE on the gold labels; returns (loss, parts)."""
    kd = kd_loss(student_logits, teacher_logits, temperature)
    labeled = labels >= 0  # transfer-set sentences (label -1) have soft targets only
    ce = (F.cross_entropy(student_logits[labeled].float(), labels[labeled]) if labeled.any()
          else student_logits.sum() * 0.0)
    return alpha * kd + (1 - alpha) * ce, {"kd": kd.detach(), "ce": ce.detach()}


def table_rows(table, batch, device):
    """The rows of a per-training-row table (teacher logits) that a batch holds, by the idx it carries, on `device`."""
    return table[batch["idx"].to(table.device)].to(device)


def precomputed_kd_loss(logits_table, alpha: float, temperature: float):
    """mixed_loss against teacher logits computed once for the whole training set, looked up by the batch's idx.

    The teacher's logits are fixed, so one pass over the training set replaces a teacher forward per batch."""
    def loss_fn(model, batch):
        logits = model(**model_inputs(batch)).logits
        return mixed_loss(logits, table_rows(logits_table, batch, logits.device), batch["labels"], alpha, temperature)
    return loss_fn


def hidden_mse(student_states, teacher_states, attention_mask):
    """MSE over real tokens, averaged over paired layers; padded positions carry no signal."""
    mask = attention_mask.unsqueeze(-1).float()
    denom = mask.sum() * student_states[0].shape[-1]
    per_layer = [(((s.float() - t.float()) ** 2) * mask).sum() / denom for s, t in zip(student_states, teacher_states)]
    return torch.stack(per_layer).mean()


def attention_mse(student_maps, teacher_maps, attention_mask):
    """MSE of attention probabilities (B, heads, query, key) where both query and key are real tokens."""
    m = attention_mask.float()
    mask = (m[:, :, None] * m[:, None, :]).unsqueeze(1)
    denom = mask.sum() * student_maps[0].shape[1]
    per_layer = [(((s.float() - t.float()) ** 2) * mask).sum() / denom for s, t in zip(student_maps, teacher_maps)]
    return torch.stack(per_layer).mean()
