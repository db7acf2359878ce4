"""Validation decides, test reports: with the test labels shuffled, stages 02-06 make every choice exactly as before.

The smoke run's stage 01 outputs (splits and teacher) are copied, data/test.csv gets its labels permuted (texts
untouched), and run_all re-runs 02-06. Every decision must come out the same: the best student and every best
epoch (02, and each recovery round in 04), the FP32-kept groups for PyTorch and ONNX Runtime, the static INT8
calibration method and each model's INT8 pick (03), each model's pruning level (04), the recommended variant (05),
and every goal check with its number; so must every validation figure of stage 05. The test figures must move, or
the permutation proved nothing.
"""
import json
import shutil

import numpy as np
import pandas as pd

from tests.conftest import run_all


def copy_stage01(src, dst):
    for sub in ("data", "checkpoints/teacher"):
        shutil.copytree(src / sub, dst / sub)
    (dst / "reports").mkdir()
    shutil.copy(src / "reports" / "01_data_teacher.json", dst / "reports")


def permute_test_labels(data_dir, seed=0) -> float:
    """Shuffle (label, label_name) across the test rows; returns the share of rows whose label changed."""
    path = data_dir / "test.csv"
    df = pd.read_csv(path)
    order = np.random.default_rng(seed).permutation(len(df))
    moved = df[["label", "label_name"]].iloc[order].reset_index(drop=True)
    changed = float((moved["label"] != df["label"]).mean())
    df[["label", "label_name"]] = moved
    df.to_csv(path, index=False)
    return changed


def load(out) -> dict:
    r = {s: json.loads((out / "reports" / f"{s}.json").read_text())
         for s in ("02_distillation", "03_quantization", "04_pruning", "05_benchmark")}
    r["bench"] = pd.read_csv(out / "results" / "benchmark.csv")
    return r


def label_free(r: dict) -> dict:
    """What may not move at all: choices and figures that read validation only (no timing involved)."""
    d02, d03, d04 = (r[s]["metrics"] for s in ("02_distillation", "03_quantization", "04_pruning"))
    return {
        "best_student": d02["best_student"]["name"],
        "student_epochs": {k: (s["best_epoch"], s["val"]["macro_f1"]) for k, s in d02["students"].items()},
        "fp32_groups": [(m["name"], m["keep_fp32_groups"], m["onnx_keep_fp32_groups"]) for m in d03["models"]],
        "static_calibration": [(m["name"], m["onnx_static_calibration"]) for m in d03["models"]],
        "recovery": {k: [[(rd["val_macro_f1"], [h["val_f1"] for h in rd["history"]]) for rd in lv["rounds"]]
                         for lv in m["levels"]] for k, m in d04["models"].items()},
        "int8_val": {v["name"]: v["metrics"]["val_delta_pts"] for v in r["03_quantization"]["variants"]},
        "level_val": {k: [lv["val_delta_pts"] for lv in m["levels"]] for k, m in d04["models"].items()},
        # None for the teacher's own adjusted p (NaN would never equal itself)
        "bench_val": (lambda d: d.astype(object).where(d.notna(), None))(r["bench"].filter(regex="^val_").round(9)).to_dict("list"),
        "names": r["bench"]["name"].tolist(),
    }


def choices(quality: dict, timing: dict) -> dict:
    """The timing-dependent choices, recomputed from one run's quality figures and another run's timings (latency
    moves between runs whatever the labels): each model's INT8 pick (03), its level (04), the shipped variant (05)."""
    from lib.core import goals
    from lib.core.variants import Variant
    from lib.ship import decide, seed_mean
    from lib.report import int8
    from lib.stages import pruning
    out = {}
    gs03 = goals.from_params(quality["03_quantization"]["run_info"]["params"], ref="its FP32 source")
    speed = {v["name"]: v["metrics"]["speedup"] for v in timing["03_quantization"]["variants"]}
    for m in quality["03_quantization"]["metrics"]["models"]:
        vs = [Variant.from_dict(v) for v in quality["03_quantization"]["variants"] if v["name"] in m["variants"].values()]
        vs = [v.with_metrics(speedup=speed[v.name]) for v in vs]
        vs = [v.with_metrics(goals_met=goals.all_met(gs03, v.metrics)) for v in vs]
        out[m["name"]] = int8.best_int8({"variants": vs}, gs03).name
    p04 = quality["04_pruning"]["run_info"]["params"]
    gs04 = goals.from_params(p04, ref="its unpruned source")
    for k, m in quality["04_pruning"]["metrics"]["models"].items():
        timed = timing["04_pruning"]["metrics"]["models"][k]["levels"]
        levels = [{**lv, "speedup": t["speedup"]} for lv, t in zip(m["levels"], timed)]
        levels = [{**lv, "goals_met": goals.all_met(gs04, lv)} for lv in levels]
        out[f"{k} level"] = pruning.best_level({"levels": levels}, gs04)["name"]
    # every column a goal or the ship rule reads that timing moves: the reference goals' end-to-end ratios too
    costs = [c for c in ("latency_median_ms", "disk_bytes", "speedup_vs_teacher", "size_ratio_vs_teacher",
                         "speedup_vs_reference", "throughput_vs_reference") if c in timing["bench"]]
    mixed = quality["bench"].drop(columns=costs).join(timing["bench"][costs])
    gs05 = goals.from_params(quality["05_benchmark"]["run_info"]["params"], columns=decide.COLUMNS | seed_mean.SEED_COLUMNS)
    out["shipped"] = decide.recommend(mixed, gs05)["name"]
    return out


def test_permuting_the_test_labels_changes_no_decision(smoke_run, tmp_path):
    out = tmp_path / "permuted"
    copy_stage01(smoke_run, out)
    assert permute_test_labels(out / "data") > 0.3
    proc = run_all(out, "--only", "02", "--only", "03", "--only", "04", "--only", "06", "--only", "05", "--force")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    before, after = load(smoke_run), load(out)
    fixed_before, fixed_after = label_free(before), label_free(after)
    for key in fixed_before:
        assert fixed_after[key] == fixed_before[key], key
    # each run's recorded choices are what its own figures give, and the permuted run's quality figures with
    # the first run's timings give the first run's choices
    assert choices(before, before) == recorded(before)
    assert choices(after, after) == recorded(after)
    assert choices(after, before) == recorded(before)
    test_before, test_after = before["bench"]["test_macro_f1"], after["bench"]["test_macro_f1"]
    assert (test_before != test_after).any()  # the test figures did move: the permutation took effect


def recorded(r: dict) -> dict:
    """The choices the stages wrote: stage 03's and 04's goal subjects, 04's levels, 05's recommendation."""
    out = {}
    for m in r["03_quantization"]["metrics"]["models"]:
        out[m["name"]] = next(g["subject"] for g in r["03_quantization"]["goals"] if g["subject"] in m["variants"].values())
    out |= {f"{k} level": lv for k, lv in r["04_pruning"]["metrics"]["chosen"].items()}
    out["shipped"] = r["05_benchmark"]["headline"]["recommended"]
    return out
