"""Stage 02 (lib/stages/distillation.py): the smoke run's three students, their variants and the stage's goals."""
import json
import re
import statistics

import pytest

from lib.core import seeds
from lib.core.errors import FinCompressError
from lib.stages import distillation


def test_missing_teacher_says_run_stage_01(tmp_path):
    with pytest.raises(FinCompressError, match="run stage 01 first"):
        distillation.Stage({"out_dir": str(tmp_path)}).setup()


def test_notebook_02_smoke(smoke_run):
    report = json.loads((smoke_run / "reports" / "02_distillation.json").read_text())
    assert report["stage"] == "02_distillation"
    m, variants = report["metrics"], report["variants"]
    names = [v["name"] for v in variants]
    assert names == ["student_baseline", "student_kd_vanilla", "student_kd_intermediate"]
    for v in variants:
        assert v["format"] == "hf" and v["source"] == "teacher" and not v["path"].startswith("/")
        assert v["techniques"] == ["finetune", v["name"]] and v["stage"] == "02_distillation"
        assert (smoke_run / v["path"] / "config.json").is_file() and v["metrics"]["params"] < m["teacher"]["params"]
        info = json.loads((smoke_run / v["path"] / "checkpoint_info.json").read_text())
        assert info["layer_map"] == m["layer_map"] == [1, 3, 5]
        assert 0 <= v["metrics"]["test_macro_f1"] <= 1 and v["metrics"]["disk_bytes"] > 0 and v["metrics"]["latency_ms"] > 0
    # issue 31: the smoke run trains every student with 2 seeds; the choice reads their mean val macro-F1
    assert m["seeds"] == [42, 43]
    for v in variants:
        runs = v["metrics"]["seed_runs"]
        assert [r["seed"] for r in runs] == [42, 43] and v["metrics"]["seed"] == seeds.median_run(runs)["seed"]
        assert [r["path"] for r in runs if r["seed"] == v["metrics"]["seed"]] == [v["path"]]
        for r in runs:
            info = json.loads((smoke_run / r["path"] / "checkpoint_info.json").read_text())
            assert (info["seed"], info["val_macro_f1"], info["exported_seed"]) == (r["seed"], r["val_macro_f1"],
                                                                                   v["metrics"]["seed"])
        spread = m["students"][v["name"].removeprefix("student_")]["seed_spread"]["val_macro_f1"]
        assert spread["n"] == 2 and spread["mean"] == pytest.approx(statistics.fmean(r["val_macro_f1"] for r in runs))
        assert v["metrics"]["val_macro_f1"] == m["comparison"][v["name"]]["val_macro_f1"]  # the exported seed's
    best = variants[[v["name"] for v in variants].index(seeds.best_on_mean(
        {v["name"]: v["metrics"]["seed_runs"] for v in variants}))]
    assert m["best_student"] == {"name": best["name"], "path": best["path"], "seed": best["metrics"]["seed"]}
    # later stages read the choice from the record (lib/stages/base.py:sources), not from this JSON's metrics
    assert [v["name"] for v in variants if v["metrics"]["best_student"]] == [best["name"]]
    for name in ["teacher", *names]:
        row = m["comparison"][name]
        assert 0 <= row["agreement_test"] <= 1 and set(m["sizes"][name]) >= {"params", "disk_bytes", "latency_ms"}
    assert report["headline"]["best student"] == best["name"]
    assert [g["goal"] for g in report["goals"]] == ["max_f1_drop_pts", "min_speedup"]
    assert report["goals"][0]["metric"] == "val_delta_pts"  # judged on val: the teacher's val F1 is the reference
    row, teacher_val = m["comparison"][best["name"]], m["comparison"]["teacher"]["val_macro_f1"]
    mean_val = statistics.fmean(r["val_macro_f1"] for r in best["metrics"]["seed_runs"])
    assert report["goals"][0]["value"] == pytest.approx(100 * (mean_val - teacher_val))  # the seed mean's
    assert report["goals"][0]["seeds"] == 2 and 0 <= report["goals"][0]["seeds_met"] <= 2
    assert row["val_delta_pts"] == pytest.approx(100 * (row["val_macro_f1"] - teacher_val))
    assert row["test_delta_ci_low"] <= row["test_delta_pts"] <= row["test_delta_ci_high"] and 0 < row["test_mcnemar_p"] <= 1
    assert all(g["subject"] == best["name"] for g in report["goals"]) and m["target_f1"] == 0.87  # stage 01's goal
    html = (smoke_run / "reports" / "02_distillation.html").read_text()
    # curves, F1 bars, confusions, per-class F1 (the template's CSS holds one more data URL, not counted)
    assert len(re.findall(r'<img[^>]+src="data:image/png', html)) >= 4
    assert "Traceback" not in html and "Training seeds" in html and "exported seed" in html
    # issue 21: OOD-val beside val for every compared model (the smoke data has the tweets), paired with the teacher
    ref = m["comparison"]["teacher"]["ood_val_macro_f1"]
    for name, row in m["comparison"].items():
        assert row["ood_val_delta_pts"] == pytest.approx(100 * (row["ood_val_macro_f1"] - ref)) and 0 <= ref <= 1
    assert "OOD-val macro-F1" in html and m["teacher"]["ood_val"]["macro_f1"] == ref
