"""lib/techniques/sensitivity.py: the FP32-kept groups, ranked by logit change per weight and chosen greedily on val F1."""
import pandas as pd
import pytest

from lib.data.batching import make_loader
from lib.runtime.pytorch import torch_predictor
from lib.techniques import sensitivity
from lib.techniques.onnx_export import save_onnx_fp32
from tests.test_quantize import SENTENCES, tiny  # noqa: F401  (tiny is a fixture)


def test_fp32_order_ranks_by_logit_change_per_weight_not_noisy_f1():
    sens = [{"group": "all", "val_delta_pts": -0.6, "mean_abs_diff": 0.1, "params": 100},
            # the F1 drop is the largest, but it is one flipped sentence: the logits barely move
            {"group": "embeddings", "val_delta_pts": -0.46, "mean_abs_diff": 0.005, "params": 11_000_000},
            {"group": "L0 ffn_out", "val_delta_pts": -0.2, "mean_abs_diff": 0.05, "params": 600_000},
            {"group": "L1 ffn_in", "val_delta_pts": -0.3, "mean_abs_diff": 0.03, "params": 600_000}]
    assert sensitivity.fp32_order(sens) == ["L0 ffn_out", "L1 ffn_in", "embeddings"]


def test_greedy_keep_stops_at_the_first_prefix_within_budget():
    calls = []

    def delta_with(keep):  # val F1 delta in points, negative = worse
        calls.append(list(keep))
        return {1: -2.0, 2: -0.5, 3: -0.1}[len(keep)]
    assert sensitivity.greedy_keep(["a", "b", "c"], delta_with, -3.0, 1.0) == (["a", "b"], -0.5)
    assert calls == [["a"], ["a", "b"]]
    assert sensitivity.greedy_keep(["a", "b", "c"], delta_with, -0.5, 1.0) == ([], -0.5)  # already within budget
    assert sensitivity.greedy_keep(["a", "b", "c"], delta_with, -3.0, 0.0) == (["a", "b", "c"], -0.1)  # budget never met


def test_onnx_fp32_groups_are_chosen_on_onnx_runtime_val_f1(tiny, tokenizer, tmp_path):
    df = pd.DataFrame({"text": SENTENCES * 4, "label": [0, 1, 2, 1] * 4})
    loader = make_loader(df, tokenizer, 8, 32)
    ref = sensitivity.evaluate_predictor(torch_predictor(tiny), loader)
    sens = sensitivity.sensitivity(tiny, loader, ref["macro_f1"], ref["logits"], True)
    fp32_dir, _ = save_onnx_fp32("tiny", tiny, tokenizer, SENTENCES, tmp_path, 1e-4)
    keep, delta = sensitivity.choose_onnx_fp32_groups(tiny, tokenizer, fp32_dir, loader, ref["macro_f1"], sens, 100.0)
    assert keep == [] and delta > -100.0  # any loss is within a 100-point budget: everything INT8
    # a budget nothing meets keeps every group FP32, in the sensitivity order
    keep, _ = sensitivity.choose_onnx_fp32_groups(tiny, tokenizer, fp32_dir, loader, ref["macro_f1"], sens, -1.0)
    assert keep == sensitivity.fp32_order(sens)


def onnx_int8_f1(model, tokenizer, fp32_dir, loader, groups: list, folder) -> float:
    """Val macro-F1 of the ONNX Runtime INT8 graph with `groups` FP32, scored here with sklearn."""
    from sklearn.metrics import f1_score
    from lib.core.variants import ONNX_FILE
    from lib.techniques import quantize as q
    folder.mkdir()
    tokenizer.save_pretrained(folder)
    q.quantize_onnx(fp32_dir / ONNX_FILE, folder / ONNX_FILE, q.QuantConfig(keep_fp32=tuple(q.modules_in(model, groups))))
    predict = q.load_onnx(folder)[0]
    preds, labels = [], []
    for batch in loader:
        preds += predict({k: v for k, v in batch.items() if k in q.INPUT_NAMES}).argmax(-1).tolist()
        labels += batch["labels"].tolist()
    return f1_score(labels, preds, average="macro", labels=[0, 1, 2], zero_division=0)


def test_onnx_fp32_groups_follow_the_measured_onnx_runtime_f1(tiny, tokenizer, tmp_path):
    """Issue 23, mutation 4: against a reference 1 point above full INT8's measured F1, the greedy choice must keep
    groups FP32, and the delta it reports is the one measured here for the groups it kept."""
    df = pd.DataFrame({"text": SENTENCES * 4, "label": [0, 1, 2, 1] * 4})
    loader = make_loader(df, tokenizer, 8, 32)
    ref = sensitivity.evaluate_predictor(torch_predictor(tiny), loader)
    sens = sensitivity.sensitivity(tiny, loader, ref["macro_f1"], ref["logits"], True)
    fp32_dir, _ = save_onnx_fp32("tiny", tiny, tokenizer, SENTENCES, tmp_path, 1e-4)
    order = sensitivity.fp32_order(sens)
    reference = onnx_int8_f1(tiny, tokenizer, fp32_dir, loader, [], tmp_path / "none") + 0.01
    keep, delta = sensitivity.choose_onnx_fp32_groups(tiny, tokenizer, fp32_dir, loader, reference, sens, 0.5)
    assert keep and keep == order[:len(keep)]
    measured = [100 * (onnx_int8_f1(tiny, tokenizer, fp32_dir, loader, order[:k], tmp_path / f"k{k}") - reference)
                for k in range(1, len(keep) + 1)]
    assert delta == pytest.approx(measured[-1])
    assert all(d <= -0.5 for d in measured[:-1]) and (delta > -0.5 or keep == order)  # stops at the first within budget
