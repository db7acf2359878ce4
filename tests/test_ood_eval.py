"""lib.measure.ood_eval: the OOD-val figures stages 02-04 report beside val, and nothing when stage 01 wrote no OOD sets."""
import pandas as pd
from sklearn.metrics import f1_score

from lib.measure import ood_eval


def result(preds, labels=(0, 1, 2, 0, 1, 2)):
    f1 = f1_score(labels, preds, average="macro", labels=[0, 1, 2], zero_division=0)
    return {"labels": list(labels), "preds": list(preds), "macro_f1": float(f1)}


def test_fields_are_the_paired_delta_to_the_reference_in_points():
    ref, other = result([0, 1, 2, 0, 1, 2]), result([0, 1, 2, 0, 0, 0])
    f = ood_eval.ood_fields(other, ref, seed=0)
    assert f["ood_val_macro_f1"] == other["macro_f1"] < 1.0
    assert abs(f["ood_val_delta_pts"] - 100 * (other["macro_f1"] - ref["macro_f1"])) < 1e-9
    assert ood_eval.ood_fields(ref, ref, seed=0)["ood_val_delta_pts"] == 0.0


def test_absent_sets_add_nothing(tmp_path):
    assert ood_eval.ood_val_loader(tmp_path, None, 8, 16) is None
    assert ood_eval.fp32_ood(None, tmp_path, None, 16, None) == {}
    assert ood_eval.ood_fields(None, None, seed=0) == {}
    assert ood_eval.level_cells({"val": 1}, False) == {}
    assert ood_eval.readable_columns(pd.DataFrame({"val_macro_f1": [0.5]})) == {}
    results = {"m": {"base": {"path": "nowhere"}, "levels": [{"path": "nowhere"}]}}
    ood_eval.score_pruned(results, tmp_path, 16, "cpu", 0)
    assert results == {"m": {"base": {"path": "nowhere"}, "levels": [{"path": "nowhere"}]}}


def test_table_cells_leave_the_reference_delta_blank():
    assert ood_eval.level_cells({"ood_val_macro_f1": 0.5}, True) == {"OOD-val macro-F1": 0.5, "OOD-val Δ (pts)": ""}
    cells = ood_eval.level_cells({"ood_val_macro_f1": 0.4, "ood_val_delta_pts": -1.234}, False)
    assert cells["OOD-val Δ (pts)"] == "-1.23"
    t = pd.DataFrame({"ood_val_macro_f1": [0.5, 0.4], "ood_val_delta_pts": [0.0, 2.5]}, index=["teacher", "s"])
    assert ood_eval.readable_columns(t)["OOD-val Δ (pts)"].tolist() == ["+0.00", "+2.50"]
