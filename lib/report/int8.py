"""Stage 03's INT8 variants for readers: each model's variants against its FP32 source, the calibration methods,
the sensitivity scan, the trade-offs, the test predictions behind the confusion matrices, the INT8 variant each
model would ship and the verdict. They read lib.stages.quantization's result dicts."""
import statistics

import pandas as pd

from lib.core import goals, stats
from lib.core.variants import Variant
from lib.measure import ood_eval
from lib.report import plots
from lib.techniques import quantize_static as qs

LABELS = {"torch_int8": "PyTorch\nINT8", "onnx_fp32": "ONNX\nFP32", "onnx_int8": "ORT INT8\ndynamic",
          "onnx_static_int8": "ORT INT8\nstatic", "qat_int8": "QAT\nINT8"}  # stage 03's methods, as plot labels


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
    """Static INT8 under each calibration method beside dynamic INT8: val (which picks the method) and test F1, the
    mean over the source's training seeds where it has several."""
    dyn = result["by_method"]["onnx_int8"].metrics
    n = len(dyn.get("seed_runs", [])) or 1
    val, test = (f"{k} macro-F1" + (f" (mean of {n} seeds)" if n > 1 else "") for k in ("val", "test"))
    rows = [{"ONNX Runtime INT8": f"static, {m}", val: s["val_macro_f1"], test: s["test_macro_f1"],
             "chosen (val)": "yes" if m == result["onnx_static_calibration"] else ""}
            for m, s in result["onnx_static_scores"].items()]
    runs = dyn.get("seed_runs", [dyn])
    rows.append({"ONNX Runtime INT8": "dynamic", val: statistics.fmean(r["val_macro_f1"] for r in runs),
                 test: statistics.fmean(r["test_macro_f1"] for r in runs), "chosen (val)": ""})
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


def json_view(result: dict) -> dict:
    """The JSON-worthy part of quantize_model's result (no logits or per-sentence arrays; variants by name)."""
    fp32 = {k: v for k, v in result["fp32"].items() if k not in ("val", "test", "ood_val")}
    fp32.update({"ood_val_macro_f1": result["fp32"]["ood_val"]["macro_f1"]} if "ood_val" in result["fp32"] else {})
    fp32.update(val_macro_f1=result["fp32"]["val"]["macro_f1"], test_macro_f1=result["fp32"]["test"]["macro_f1"])
    skip = ("fp32", "evals", "variants", "by_method", "qat")
    return {**{k: v for k, v in result.items() if k not in skip}, "fp32": fp32,
            "variants": {method: v.name for method, v in result["by_method"].items()}}


def best_int8(result: dict, gs: list) -> Variant:
    """The INT8 variant to ship, on validation: goals met first, then within the F1 budget, then fastest."""
    budget = next(g for g in gs if g.name == "max_f1_drop_pts")
    int8 = [v for v in result["variants"] if v.precision == "int8"]
    return max(int8, key=lambda v: (v.metrics["goals_met"], budget.met(v.metrics["val_delta_pts"]), v.metrics["speedup"]))


def headline(results: list[dict], gs: list) -> dict:
    out = {}
    for r in results:
        b = best_int8(r, gs)
        out.update({f"{r['name']} best INT8": b.name, f"{r['name']} INT8 test macro-F1": b.metrics["test_macro_f1"],
                    f"{r['name']} val Δ vs FP32 (points)": round(b.metrics["val_delta_pts"], 2),
                    f"{r['name']} test Δ vs FP32 (points)": round(b.metrics["test_delta_pts"], 2),
                    f"{r['name']} size ratio": round(b.metrics["size_ratio"], 2),
                    f"{r['name']} speedup": round(b.metrics["speedup"], 2)})
    return out


def verdict(results: list[dict], gs: list, checks: list[dict]) -> str:
    """The study's reading of the numbers, per model, against the stage's goals (judged on val, test reported)."""
    lines = goals.lines(checks)
    for r in results:
        b, m = best_int8(r, gs), r["by_method"]
        kept = ", ".join(r["keep_fp32_groups"]) or "nothing"
        kept_onnx = ", ".join(r["onnx_keep_fp32_groups"]) or "nothing"
        bm = b.metrics
        lines.append(f"* **{r['name']}**: ship `{b.name}` (chosen on val; {'goals MET' if bm['goals_met'] else 'goals NOT met'}"
                     f"): val {bm['val_delta_pts']:+.2f} points vs FP32{seed_words(bm)}; on test macro-F1 {bm['test_macro_f1']:.4f} vs "
                     f"FP32 {bm['fp32_test_macro_f1']:.4f}, {stats.delta_text(bm, 'its FP32 source', 'test_')}; "
                     f"{bm['size_ratio']:.2f}x smaller on disk, {bm['speedup']:.2f}x faster at batch 1. Kept FP32 to stay "
                     f"within budget on val: {kept} (PyTorch), {kept_onnx} (ONNX Runtime). QAT INT8 test "
                     f"{m['qat_int8'].metrics['test_macro_f1']:.4f} vs PTQ INT8 {m['torch_int8'].metrics['test_macro_f1']:.4f}. "
                     f"Static ONNX INT8 ({r['onnx_static_calibration']}, chosen on val) test "
                     f"{m['onnx_static_int8'].metrics['test_macro_f1']:.4f} vs dynamic {m['onnx_int8'].metrics['test_macro_f1']:.4f}; "
                     f"Projections ORT runs, static: {qs.int8_summary(r['onnx_ops']['static'])}; dynamic: "
                     f"{qs.int8_summary(r['onnx_ops']['dynamic'])}.")
    lines.append("* Latency is one machine's reading (2 threads, batch 1, 32 tokens); rerun "
                 "`python scripts/bench_quantize.py OUT_DIR` on a quiet machine before quoting it.")
    return "\n".join(lines)


def seed_words(m: dict) -> str:
    """', the mean over 3 training seeds (-0.40 / -0.91 / +0.12)' or '' for one model."""
    per = m.get("val_delta_pts_per_seed") or []
    if len(per) < 2:
        return ""
    return f", the mean over {len(per)} training seeds ({' / '.join(f'{d:+.2f}' for d in per)})"
