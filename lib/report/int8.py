"""Stage 03's INT8 variants for readers: each model's variants against its FP32 source, the calibration methods,
the sensitivity scan, the trade-offs and the test predictions behind the confusion matrices. They read
lib.stages.quantization's result dicts."""
import statistics

import pandas as pd

from lib.core import stats
from lib.measure import ood_eval
from lib.report import plots


def variants_table(result: dict) -> pd.DataFrame:
    """One model's FP32 source and every variant: val and test F1, the deltas to FP32, size, speed, goals."""
    f = result["fp32"]
    holm, word = f"test p, Holm over {result['holm_family']} vs FP32 source", f"on test (Holm p < {stats.ALPHA})"
    rows = [{"variant": f"{result['name']} (FP32 torch)", "val macro-F1": f["val"]["macro_f1"], "val Δ (pts)": "",
             **ood_eval.level_cells({"ood_val_macro_f1": f["ood_val"]["macro_f1"]} if "ood_val" in f else {}, True),
             "test macro-F1": f["test"]["macro_f1"], "test Δ (pts) [95% CI]": "",
             holm: "", word: "reference", "disk (MB)": f["disk_bytes"] / 1e6, "latency (ms)": f["latency"]["median_ms"],
             "faster than FP32 (x)": 1.0, "smaller than FP32 (x)": 1.0, "agreement": 1.0, "goals (val)": ""}]
    for v in result["variants"]:
        m = v.metrics
        val = statistics.fmean(r["val_macro_f1"] for r in m["seed_runs"]) if "seed_runs" in m else m["val_macro_f1"]
        rows.append({"variant": v.name, "val macro-F1": val, "val Δ (pts)": f"{m['val_delta_pts']:+.2f}",
                     **ood_eval.level_cells(m, False), "test macro-F1": m["test_macro_f1"],
                     "test Δ (pts) [95% CI]": stats.delta_cell(m["test_delta_pts"], m["test_delta_ci_low"],
                                                               m["test_delta_ci_high"]),
                     holm: m["test_p_holm"],
                     word: m["test_reading"], "disk (MB)": m["disk_bytes"] / 1e6, "latency (ms)": m["latency_ms"],
                     "faster than FP32 (x)": m["speedup"], "smaller than FP32 (x)": m["size_ratio"], "agreement": m["agreement"],
                     "goals (val)": "MET" if m["goals_met"] else "NOT MET"})
    return pd.DataFrame(rows).set_index("variant")


def calibration_table(result: dict) -> pd.DataFrame:
    """Static INT8 under each calibration method beside dynamic INT8: val (which picks the method) and test F1."""
    dyn = result["by_method"]["onnx_int8"].metrics
    rows = [{"ONNX Runtime INT8": f"static, {m}", "val macro-F1": s["val_macro_f1"], "test macro-F1": s["test_macro_f1"],
             "chosen (val)": "yes" if m == result["onnx_static_calibration"] else ""}
            for m, s in result["onnx_static_scores"].items()]
    rows.append({"ONNX Runtime INT8": "dynamic", "val macro-F1": dyn["val_macro_f1"], "test macro-F1": dyn["test_macro_f1"],
                 "chosen (val)": ""})
    return pd.DataFrame(rows).set_index("ONNX Runtime INT8")


def sensitivity_table(result: dict) -> pd.DataFrame:
    """The scan with human names: val delta when one group alone is INT8, logit change, kept FP32 or not."""
    df = pd.DataFrame(result["sensitivity"]).set_index("group")
    df = df.assign(kept_fp32=[g in result["keep_fp32_groups"] for g in df.index])
    return df.rename(columns={"val_macro_f1": "val macro-F1", "val_delta_pts": "val Δ (pts)", "params": "weights",
                              "agreement": "agreement", "max_abs_diff": "max |logit diff|",
                              "mean_abs_diff": "mean |logit diff|", "kept_fp32": "kept FP32"})


def plot_sensitivity(results: list[dict], max_drop: float):
    """Val macro-F1 delta when one group alone is INT8; red bars are the groups the default keeps FP32."""
    return plots.plot_sensitivity({r["name"]: sensitivity_table(r) for r in results}, max_drop)


def plot_tradeoffs(results: list[dict]):
    """Test macro-F1, size on disk and batch-1 latency of every variant next to its FP32 source."""
    return plots.plot_tradeoffs(pd.concat([variants_table(r) for r in results]), {f"{r['name']} (FP32 torch)" for r in results})


def int8_confusions(result: dict) -> dict:
    """Test predictions of the FP32 source and each of its INT8 variants, for confusion matrices."""
    return {f"{result['name']} FP32": result["fp32"]["test"],
            **{v.name: result["evals"][v.name] for v in result["variants"] if v.precision == "int8"}}
