"""Which layer groups can be INT8: a per-group sensitivity scan and the greedy choice of groups kept FP32,
for PyTorch dynamic INT8 and for ONNX Runtime INT8 (the same order, each measured on its own val F1)."""
import tempfile
from pathlib import Path

import torch

from lib.core.variants import ONNX_FILE
from lib.data.batching import input_order
from lib.modeling.train import scores
from lib.runtime.pytorch import torch_predictor
from lib.techniques import quantize as q


def run_logits(predict, loader) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and labels over a loader, in its dataset's order (evaluation batches run length-sorted)."""
    logits, labels, idx = [], [], []
    for batch in loader:
        logits.append(torch.as_tensor(predict({k: v for k, v in batch.items() if k in q.INPUT_NAMES})).float())
        labels.append(batch["labels"])
        idx += [batch["idx"]] if "idx" in batch else []
    order = input_order(idx)
    return torch.cat(logits)[order], torch.cat(labels)[order]


def evaluate_predictor(predict, loader, ref: torch.Tensor | None = None) -> dict:
    """Scores, predictions (for confusion matrices) and agreement with the FP32 reference logits."""
    logits, labels = run_logits(predict, loader)
    out = {**scores(labels, logits.argmax(-1)), "labels": labels.tolist(), "preds": logits.argmax(-1).tolist(),
           "logits": logits}
    if ref is not None:
        out["vs_fp32"] = q.logit_diff(logits, ref)
    return out


def sensitivity(model, loader, ref_f1: float, ref_logits, per_channel: bool) -> list[dict]:
    """Val F1 delta (INT8 - FP32, points: negative = worse) when only one group is INT8 (the rest FP32), plus
    everything INT8 at once."""
    names = q.quantizable(model)
    rows = []
    for group in ["all"] + list(dict.fromkeys(names.values())):
        mods = [n for n, g in names.items() if group in ("all", g)]
        keep = [n for n, g in names.items() if group not in ("all", g)]
        m = evaluate_predictor(torch_predictor(q.quantize_torch(model, keep, per_channel)), loader, ref_logits)
        params = sum(model.get_submodule(n).weight.numel() for n in mods)
        rows.append({"group": group, "val_macro_f1": m["macro_f1"], "val_delta_pts": 100 * (m["macro_f1"] - ref_f1),
                     "params": params, **m["vs_fp32"]})
    return rows


def fp32_order(sens: list[dict]) -> list[str]:
    """Groups in the order they are kept FP32: most logit change per weight first, not most F1 drop.

    One flipped val sentence moves F1 by ~0.2 points; ranking by it once put the embedding table
    (half the bytes, a tiny logit change) first and gave an "INT8" model 1.4x smaller instead of 3x.
    """
    return [r["group"] for r in sorted(sens[1:], key=lambda r: r["mean_abs_diff"] / max(1, r["params"]), reverse=True)]


def greedy_keep(order: list[str], delta_with, delta: float, max_drop_pts: float) -> tuple[list, float]:
    """Keep groups FP32 in `order`, one at a time, until full INT8 loses < max_drop_pts on val.
    delta_with(keep) is the val F1 delta (negative = worse) with the groups in `keep` FP32; `delta` is the
    delta with none kept."""
    keep = []
    while delta <= -max_drop_pts and len(keep) < len(order):
        keep.append(order[len(keep)])
        delta = delta_with(keep)
    return keep, delta


def choose_fp32_groups(model, loader, ref_f1, sens, per_channel, max_drop_pts) -> tuple[list, float]:
    """greedy_keep for PyTorch dynamic INT8, starting from the sensitivity study's all-INT8 drop."""
    def delta_with(keep):
        m = evaluate_predictor(torch_predictor(q.quantize_torch(model, q.modules_in(model, keep), per_channel)), loader)
        return 100 * (m["macro_f1"] - ref_f1)
    return greedy_keep(fp32_order(sens), delta_with, sens[0]["val_delta_pts"], max_drop_pts)


def choose_onnx_fp32_groups(model, tokenizer, fp32_dir: Path, loader, ref_f1, sens, max_drop_pts) -> tuple[list, float]:
    """greedy_keep, same order, for ONNX Runtime INT8 of the saved FP32 graph, measured on its own val F1: its
    activations are full 8-bit (PyTorch's x86 kernels use 7), so it often needs fewer FP32 groups, and an FP32
    MatMul left among INT8 ones costs more batch-1 time than the INT8 one it replaces."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer.save_pretrained(tmp)

        def delta_with(keep):
            q.quantize_onnx(fp32_dir / ONNX_FILE, tmp / ONNX_FILE, q.QuantConfig(keep_fp32=tuple(q.modules_in(model, keep))))
            return 100 * (evaluate_predictor(q.load_onnx(tmp)[0], loader)["macro_f1"] - ref_f1)
        return greedy_keep(fp32_order(sens), delta_with, delta_with([]), max_drop_pts)
