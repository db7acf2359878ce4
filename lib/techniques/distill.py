"""Knowledge distillation: a shallow student cut from the teacher, and the intermediate-layer KD objective.

The KD+CE objective itself lives in lib.modeling.losses (pruning recovery uses it too)."""
import copy

import torch

from lib.core.errors import FinCompressError
from lib.data.batching import autocast, model_inputs, to_device
from lib.modeling.losses import attention_mse, hidden_mse, mixed_loss, table_rows


def layer_map(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, each the top of its block, so the last student layer copies the last teacher layer."""
    return [(i + 1) * teacher_layers // student_layers - 1 for i in range(student_layers)]


def resolve_student_layers(teacher_layers: int, student_layers: int) -> int:
    """0 halves the depth (3 of 6, 6 of 12 as in DistilBERT); anything else must fit inside the teacher."""
    # Half, not a third: on the real split 2-of-6 MiniLM students landed 2-4 test points below the
    # teacher over four seeds, the 3-of-6 student 0.9-1.5 over three.
    auto = max(1, teacher_layers // 2)
    if student_layers == 0:
        return auto
    if not 1 <= student_layers <= teacher_layers:
        raise FinCompressError(f"student_layers={student_layers} but the teacher has {teacher_layers} layers; "
                               f"pass 1..{teacher_layers} (0 picks {auto})")
    return student_layers


def _teacher_key(key: str, mapping: list[int]) -> str:
    if ".layer." not in key:
        return key
    head, _, rest = key.partition(".layer.")
    i, _, tail = rest.partition(".")
    return f"{head}.layer.{mapping[int(i)]}.{tail}"


def build_student(teacher, student_layers: int):
    """Same class as the teacher with fewer layers: embeddings, mapped layers, pooler and head copied."""
    n = teacher.config.num_hidden_layers
    k = resolve_student_layers(n, student_layers)
    mapping = layer_map(n, k)
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = k
    config.distill_layer_map = mapping  # saved in config.json: which teacher layer each student layer came from
    student = type(teacher)(config)
    source = teacher.state_dict()
    student.load_state_dict({key: source[_teacher_key(key, mapping)].clone() for key in student.state_dict()})
    return student, mapping


@torch.no_grad()
def teacher_targets(teacher, loader, mapping: list[int], device, amp: bool = False) -> dict:
    """What every KD student learns from, per sentence of `loader` (row = the idx its batches carry): the teacher's
    logits, and its hidden states and attention maps at the layers in `mapping` cut to the real tokens. All fixed, so
    one pass serves every seed and epoch."""
    teacher.eval()
    logits = torch.zeros(len(loader.dataset), teacher.config.num_labels)
    hidden, attention = [None] * len(loader.dataset), [None] * len(loader.dataset)
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp):
            t = teacher(**model_inputs(batch), output_hidden_states=True, output_attentions=True)
        logits[batch["idx"].cpu()] = t.logits.float().cpu()
        for b, i in enumerate(batch["idx"].tolist()):
            real = batch["attention_mask"][b].bool()
            # hidden_states[0] is the embedding output, so layer j's output sits at j + 1
            hidden[i] = torch.stack([t.hidden_states[j + 1][b, real] for j in mapping]).float().cpu()
            attention[i] = torch.stack([t.attentions[j][b][:, real][:, :, real] for j in mapping]).float().cpu()
    return {"logits": logits, "hidden": hidden, "attention": attention}


def padded_internals(internals: dict[str, list], idx: list[int], mask) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch's rows of teacher_targets' internals laid out on its padding: (layers, B, T, H) and (layers, B, heads, T, T),
    zero where `mask` has padding (the MSE terms mask those positions out)."""
    h0, a0 = internals["hidden"][idx[0]], internals["attention"][idx[0]]
    b, t = mask.shape
    hidden = torch.zeros(h0.shape[0], b, t, h0.shape[-1])
    attention = torch.zeros(a0.shape[0], b, a0.shape[1], t, t)
    for row, i in enumerate(idx):
        pos = mask[row].bool().nonzero().squeeze(1).cpu()
        hidden[:, row, pos] = internals["hidden"][i]
        attention[:, row][:, :, pos[:, None], pos[None, :]] = internals["attention"][i]
    return hidden, attention


def intermediate_loss_fn(logits_table, internals: dict[str, list], alpha, temperature, hidden_weight,
                         attention_weight):
    """KD+CE plus hidden-state and attention MSE against the teacher's fixed outputs (teacher_targets over the
    training set, looked up by the batch's idx): no teacher forward per batch."""
    def loss_fn(model, batch):
        s = model(**model_inputs(batch), output_hidden_states=True, output_attentions=True)
        mask = batch["attention_mask"]
        hidden, attention = (x.to(s.logits.device) for x in padded_internals(internals, batch["idx"].tolist(), mask))
        loss, parts = mixed_loss(s.logits, table_rows(logits_table, batch, s.logits.device), batch["labels"], alpha,
                                 temperature)
        hid = hidden_mse(s.hidden_states[1:], list(hidden), mask)
        att = attention_mse(s.attentions, list(attention), mask)
        parts.update(hidden=hid.detach(), attention=att.detach())
        return loss + hidden_weight * hid + attention_weight * att, parts
    return loss_fn
