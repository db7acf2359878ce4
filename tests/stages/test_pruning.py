"""Stage 04 (lib/stages/pruning.py): sparsity levels, and the smoke run's pruned variants."""
import json
import statistics

import pytest

from lib import formats
from lib.core import seeds
from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.stages import pruning


@pytest.mark.parametrize("heads,ffn,msg", [("0.3,1.2", "0.3,0.5", r"in \[0, 1\)"), ("0.3", "0.3,0.5", "same number"),
                                           ("0.5,0.3", "0.5,0.3", "increase"), ("a", "0.3", "comma-separated")])
def test_parse_levels_rejects_bad_input(heads, ffn, msg):
    with pytest.raises(FinCompressError, match=msg):
        pruning.parse_levels(heads, ffn)


def test_notebook_04_smoke(smoke_run):
    metrics = json.loads((smoke_run / "reports" / "04_pruning.json").read_text())
    variants = metrics["variants"]
    assert all(v["format"] == "pruned" for v in variants)
    best_student = json.loads((smoke_run / "reports" / "02_distillation.json").read_text())["metrics"]["best_student"]
    assert {v["source"] for v in variants} == {"teacher", best_student["name"]}  # the real lineage, not a role name
    for model in metrics["metrics"]["models"].values():
        base, levels = model["base"], model["levels"]
        assert [lv["params"] for lv in levels] == sorted((lv["params"] for lv in levels), reverse=True)
        assert all(lv["params"] < base["params"] and lv["disk_bytes"] < base["disk_bytes"] for lv in levels)
        assert all(min(lv["counts"]["heads"]) >= 1 for lv in levels)
    teacher_50 = Variant.from_dict(next(v for v in variants if v["name"] == "teacher_pruned_50"))
    assert teacher_50.techniques == ("finetune", "prune") and teacher_50.metrics["head_fraction"] == 0.5
    predict, tok = formats.load(teacher_50, smoke_run)
    assert predict(dict(tok("Profit rose", return_tensors="pt"))).shape == (1, 3)
    assert any(k.endswith("batch-1 speedup") for k in metrics["headline"])
    # each model's level is chosen on val and judged there: every goal for every model, with its number
    gs = metrics["goals"]
    assert [g["goal"] for g in gs] == ["max_f1_drop_pts", "min_speedup"] * 2
    for role, level in metrics["metrics"]["chosen"].items():
        lv = next(lv for lv in metrics["metrics"]["models"][role]["levels"] if lv["name"] == level)
        assert {g["subject"] for g in gs if g["subject"].startswith(role)} == {f"{role}_pruned_{level}"}
        assert lv["val_delta_pts"] == next(g["value"] for g in gs if g["subject"] == f"{role}_pruned_{level}"
                                          and g["metric"] == "val_delta_pts")
        assert lv["test_delta_ci_low"] <= lv["test_delta_pts"] <= lv["test_delta_ci_high"]
    assert "MET" in metrics["verdict"]
    # issue 31: the smoke run prunes and recovers every level with 2 seeds; the goals read the mean val delta
    for role, model in metrics["metrics"]["models"].items():
        base_val = model["base"]["val"]["macro_f1"]
        for lv in model["levels"]:
            runs = lv["runs"]
            assert [r["seed"] for r in runs] == [42, 43] and lv["seed"] == seeds.median_run(runs)["seed"]
            assert [r["path"] for r in runs if r["seed"] == lv["seed"]] == [lv["path"]] == [f"checkpoints/pruned/{role}_{lv['name']}"]
            for r in runs:
                info = json.loads((smoke_run / r["path"] / "checkpoint_info.json").read_text())
                assert (info["seed"], info["exported_seed"]) == (r["seed"], lv["seed"])
            assert lv["val_delta_pts"] == pytest.approx(statistics.fmean(100 * (r["val_macro_f1"] - base_val) for r in runs))
            assert lv["val"]["macro_f1"] == next(r["val_macro_f1"] for r in runs if r["seed"] == lv["seed"])
    assert all(g["seeds"] == 2 for g in gs if g["metric"] == "val_delta_pts")
    html = (smoke_run / "reports" / "04_pruning.html").read_text()
    assert "Training seeds" in html and "exported seed" in html
    assert 'alt="Figure: Training seeds"' in html  # bars at the seed mean, a dot per seed, the unpruned source
    assert html.count("data:image/png") >= 3
    # issue 21: OOD-val beside val for the source and every level, paired with the unpruned source
    for model in metrics["metrics"]["models"].values():
        ref = model["base"]["ood_val_macro_f1"]
        for lv in model["levels"]:
            assert lv["ood_val_delta_pts"] == pytest.approx(100 * (lv["ood_val_macro_f1"] - ref)) and 0 <= ref <= 1
            # issue 31 item 2: every seed's OOD-val beside its val and test (the exported seed's is the level's)
            assert all(0 <= r["ood_val_macro_f1"] <= 1 for r in lv["runs"])
            assert next(r["ood_val_macro_f1"] for r in lv["runs"] if r["seed"] == lv["seed"]) == lv["ood_val_macro_f1"]
    assert "OOD-val macro-F1" in html
