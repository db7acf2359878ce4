"""Stage 03's study: every INT8 variant of one FP32 model, measured against it with one harness."""
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from lib import bench, quantize as q
from lib.common import FinCompressError, atomic_dir, read_json, relative_path, write_json
from lib.data import load_splits, make_loader
from lib.train import scores

GOALS = {"max_f1_drop_pts": 0.5, "min_size_ratio": 3.0, "min_speedup": 2.0}


def student_source(out_dir: Path, student_dir: str) -> tuple[str, Path]:
    """The student to quantize: an explicit folder, else stage 02's best student."""
    if student_dir:
        path = Path(student_dir).expanduser()
        path = path if path.is_absolute() or path.exists() else Path(out_dir) / path
        if not (path / "config.json").is_file():
            raise FinCompressError(f"student_dir {student_dir} is not a save_pretrained folder (no config.json); "
                                   "pass a model folder or leave it empty to use stage 02's best student")
        return path.name, path
    report = Path(out_dir) / "reports" / "02_distillation.json"
    if not report.is_file():
        raise FinCompressError(f"{report} is missing, so there is no best student to quantize; run stage 02 first "
                               "(python run_all.py --only 02) or pass --set 03.student_dir=PATH")
    best = read_json(report)["metrics"]["best_student"]
    return best["name"], Path(out_dir) / best["path"]


def sources(out_dir: Path, student_dir: str) -> list[tuple[str, Path]]:
    """(name, folder) of the teacher and the student to quantize."""
    name, student = student_source(out_dir, student_dir)
    return [("teacher", Path(out_dir) / "checkpoints" / "teacher"), ("student" if name == "teacher" else name, student)]


def load_fp32(path: Path):
    """The FP32 source exactly as the benchmark loads it (default attention), in eval mode."""
    if not (Path(path) / "config.json").is_file():
        raise FinCompressError(f"{path} is not a model folder (no config.json); run the stage that writes it first")
    with q.quiet():
        model = AutoModelForSequenceClassification.from_pretrained(path)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def run_logits(predict, loader) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = [], []
    for batch in loader:
        logits.append(predict({k: v for k, v in batch.items() if k in q.INPUT_NAMES}).float())
        labels.append(batch["labels"])
    return torch.cat(logits), torch.cat(labels)


def evaluate(predict, loader, ref: torch.Tensor | None = None) -> dict:
    """Scores, predictions (for confusion matrices) and agreement with the FP32 reference logits."""
    logits, labels = run_logits(predict, loader)
    out = {**scores(labels, logits.argmax(-1)), "labels": labels.tolist(), "preds": logits.argmax(-1).tolist(),
           "logits": logits}
    if ref is not None:
        out["vs_fp32"] = q.logit_diff(logits, ref)
    return out


def sensitivity(model, loader, ref_f1: float, ref_logits, per_channel: bool) -> list[dict]:
    """Val F1 drop when only one group is INT8 (the rest FP32), plus everything INT8 at once."""
    names = q.quantizable(model)
    rows = []
    for group in ["all"] + list(dict.fromkeys(names.values())):
        mods = [n for n, g in names.items() if group in ("all", g)]
        keep = [n for n, g in names.items() if group not in ("all", g)]
        m = evaluate(q.torch_predict(q.quantize_torch(model, keep, per_channel)), loader, ref_logits)
        params = sum(model.get_submodule(n).weight.numel() for n in mods)
        rows.append({"group": group, "val_macro_f1": m["macro_f1"], "f1_drop_pts": 100 * (ref_f1 - m["macro_f1"]),
                     "params": params, **m["vs_fp32"]})
    return rows


def fp32_order(sens: list[dict]) -> list[str]:
    """Groups in the order they are kept FP32: most logit change per weight first, not most F1 drop.

    One flipped val sentence moves F1 by ~0.2 points; ranking by it once put the embedding table
    (half the bytes, a tiny logit change) first and gave an "INT8" model 1.4x smaller instead of 3x.
    """
    return [r["group"] for r in sorted(sens[1:], key=lambda r: r["mean_abs_diff"] / max(1, r["params"]), reverse=True)]


def greedy_keep(order: list[str], drop_with, drop: float, max_drop_pts: float) -> tuple[list, float]:
    """Keep groups FP32 in `order`, one at a time, until full INT8 loses < max_drop_pts on val.
    drop_with(keep) is the val F1 drop with the groups in `keep` FP32; `drop` is the drop with none kept."""
    keep = []
    while drop >= max_drop_pts and len(keep) < len(order):
        keep.append(order[len(keep)])
        drop = drop_with(keep)
    return keep, drop


def choose_fp32_groups(model, loader, ref_f1, sens, per_channel, max_drop_pts) -> tuple[list, float]:
    """greedy_keep for PyTorch dynamic INT8, starting from the sensitivity study's all-INT8 drop."""
    def drop_with(keep):
        m = evaluate(q.torch_predict(q.quantize_torch(model, q.modules_in(model, keep), per_channel)), loader)
        return 100 * (ref_f1 - m["macro_f1"])
    return greedy_keep(fp32_order(sens), drop_with, sens[0]["f1_drop_pts"], max_drop_pts)


def choose_onnx_fp32_groups(model, tokenizer, fp32_dir: Path, loader, ref_f1, sens, max_drop_pts) -> tuple[list, float]:
    """greedy_keep, same order, for ONNX Runtime INT8 of the saved FP32 graph, measured on its own val F1: its
    activations are full 8-bit (PyTorch's x86 kernels use 7), so it often needs fewer FP32 groups, and an FP32
    MatMul left among INT8 ones costs more batch-1 time than the INT8 one it replaces."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        tokenizer.save_pretrained(tmp)

        def drop_with(keep):
            q.quantize_onnx(fp32_dir / q.ONNX_FILE, tmp / q.ONNX_FILE, q.modules_in(model, keep))
            return 100 * (ref_f1 - evaluate(q.load_onnx(tmp)[0], loader)["macro_f1"])
        return greedy_keep(fp32_order(sens), drop_with, drop_with([]), max_drop_pts)


def measure(record: dict, predict, lat_inputs, ref: dict, fp32: dict, threads: int) -> dict:
    """Fill in test F1, agreement, size and latency of one saved variant, relative to its FP32 source."""
    lat = bench.latency_ms(predict, lat_inputs, threads=threads)
    path = Path(record.pop("abs_path"))
    record.update(test_macro_f1=ref["macro_f1"], fp32_test_macro_f1=fp32["test"]["macro_f1"],
                  f1_drop_pts=100 * (fp32["test"]["macro_f1"] - ref["macro_f1"]), params=fp32["params"],
                  disk_bytes=bench.disk_bytes(path), weight_bytes=bench.weight_bytes(path), latency_ms=lat["median_ms"],
                  latency=lat, speedup=fp32["latency"]["median_ms"] / lat["median_ms"],
                  size_ratio=fp32["disk_bytes"] / bench.disk_bytes(path), **ref["vs_fp32"])
    record["goals_met"] = (record["f1_drop_pts"] <= GOALS["max_f1_drop_pts"] and record["speedup"] >= GOALS["min_speedup"]
                           and record["size_ratio"] >= GOALS["min_size_ratio"])
    return record


def _variant(name, fmt, parent, path, out_dir):
    return {"name": name, "format": fmt, "parent": parent, "path": str(Path(path).relative_to(out_dir)), "abs_path": path}


def fp32_reference(model, src: Path, out_dir: Path, val, test, lat_inputs, threads: int) -> dict:
    """The FP32 PyTorch model every variant is compared with: F1, logits, size and latency."""
    predict = q.torch_predict(model)
    return {"path": relative_path(src, out_dir), "params": bench.count_params(model), "disk_bytes": bench.disk_bytes(src),
            "weight_bytes": bench.weight_bytes(src), "val": evaluate(predict, val), "test": evaluate(predict, test),
            "latency": bench.latency_ms(predict, lat_inputs, threads=threads)}


def save_onnx_fp32(name, model, tokenizer, texts, qdir, tol) -> tuple[Path, dict]:
    """FP32 ONNX export, kept only if it matches PyTorch on a padded batch of real sentences."""
    fp32_dir, example = qdir / f"{name}_onnx_fp32", q.example_inputs(tokenizer, texts)
    with atomic_dir(fp32_dir) as tmp:
        q.export_onnx(model, example, tmp / q.ONNX_FILE)
        tokenizer.save_pretrained(tmp)
        predict, _ = q.load_onnx(tmp)
        with torch.inference_mode():
            parity = q.logit_diff(predict(example), model(**example).logits)
        if parity["max_abs_diff"] > tol:
            raise FinCompressError(f"ONNX export of {name} disagrees with PyTorch (max |logit diff| "
                                   f"{parity['max_abs_diff']:.2e} > {tol:g}); the export is wrong, not saved")
        write_json(tmp / "parity.json", parity)
    return fp32_dir, parity | {"batch_shape": list(example["input_ids"].shape)}


def save_onnx_int8(name, fp32_dir: Path, tokenizer, qdir, keep_mods) -> Path:
    """ORT dynamic INT8 of a saved FP32 ONNX graph, keep_mods left FP32."""
    with atomic_dir(qdir / f"{name}_onnx_int8") as tmp:
        q.quantize_onnx(fp32_dir / q.ONNX_FILE, tmp / q.ONNX_FILE, keep_mods)
        tokenizer.save_pretrained(tmp)
    return qdir / f"{name}_onnx_int8"


def quantize_model(name: str, src: Path, out_dir: Path, data_dir: Path, device, p: dict) -> dict:
    """PTQ (torch), ONNX FP32/INT8 and QAT INT8 of one model, each saved, reloaded from disk and measured."""
    model, tokenizer = load_fp32(src)
    splits = load_splits(data_dir)
    val, test = (make_loader(splits[s], tokenizer, 64, p["max_length"]) for s in ("val", "test"))
    texts = splits["test"]["text"].astype(str).tolist()
    lat_inputs = bench.batch1_inputs(tokenizer, texts, seq_len=32, n=p["latency_n"])
    fp32 = fp32_reference(model, src, out_dir, val, test, lat_inputs, p["threads"])
    ref_f1, ref_logits = fp32["val"]["macro_f1"], fp32["val"]["logits"]
    sens = sensitivity(model, val, ref_f1, ref_logits, p["per_channel"])
    keep, val_drop = choose_fp32_groups(model, val, ref_f1, sens, p["per_channel"], p["max_f1_drop_pts"])
    keep_mods, qdir = q.modules_in(model, keep), out_dir / "checkpoints" / "quantized"
    meta = {"source": fp32["path"], "keep_fp32_groups": keep, "keep_fp32": keep_mods, "per_channel": p["per_channel"]}
    q.save_torch_int8(q.quantize_torch(model, keep_mods, p["per_channel"]), model.config, tokenizer,
                      qdir / f"{name}_torch_int8", meta | {"method": "ptq_dynamic"})
    # One FP32 export serves the ONNX FP32-group choice and the saved INT8 variant.
    fp32_dir, parity = save_onnx_fp32(name, model, tokenizer, texts[:8], qdir, p["parity_tol"])
    onnx_keep, onnx_val_drop = choose_onnx_fp32_groups(model, tokenizer, fp32_dir, val, ref_f1, sens, p["max_f1_drop_pts"])
    int8_dir = save_onnx_int8(name, fp32_dir, tokenizer, qdir, q.modules_in(model, onnx_keep))
    onnx_variants = [_variant(f"{name}_onnx_fp32", "onnx", name, fp32_dir, out_dir),
                     _variant(f"{name}_onnx_int8", "onnx", name, int8_dir, out_dir)]
    qat_model, qat_history = q.train_qat(name, model, tokenizer, splits, keep_mods, device, p)
    q.save_torch_int8(qat_model, model.config, tokenizer, qdir / f"{name}_qat_int8", meta | {"method": "qat"})
    variants = [_variant(f"{name}_torch_int8", "torch_int8", name, qdir / f"{name}_torch_int8", out_dir), *onnx_variants,
                _variant(f"{name}_qat_int8", "torch_int8", name, qdir / f"{name}_qat_int8", out_dir)]
    evals = {}
    for v in variants:  # measured on the artifact reloaded from disk: what ships is what is scored
        path = v["abs_path"]
        predict, _ = q.load_onnx(path, p["threads"]) if v["format"] == "onnx" else q.load_torch_int8(path)
        evals[v["name"]] = evaluate(predict, test, fp32["test"]["logits"])
        measure(v, predict, lat_inputs, evals[v["name"]], fp32, p["threads"])
    return {"name": name, "fp32": fp32, "sensitivity": sens, "keep_fp32_groups": keep, "val_drop_pts_with_keep": val_drop,
            "onnx_keep_fp32_groups": onnx_keep, "onnx_val_drop_pts_with_keep": onnx_val_drop, "onnx_parity": parity,
            "qat_history": qat_history, "variants": variants, "evals": evals}


def public(result: dict) -> dict:
    """The JSON-worthy part of quantize_model's result (no logits or per-sentence arrays)."""
    fp32 = {k: v for k, v in result["fp32"].items() if k not in ("val", "test")}
    fp32.update(val_macro_f1=result["fp32"]["val"]["macro_f1"], test_macro_f1=result["fp32"]["test"]["macro_f1"])
    return {**{k: v for k, v in result.items() if k not in ("fp32", "evals")}, "fp32": fp32}


def best_int8(result: dict) -> dict:
    """The INT8 variant to ship: goals met first, then fastest."""
    int8 = [v for v in result["variants"] if "fp32" not in v["name"]]
    return max(int8, key=lambda v: (v["goals_met"], v["f1_drop_pts"] <= GOALS["max_f1_drop_pts"], v["speedup"]))


def headline(results: list[dict]) -> dict:
    out = {}
    for r in results:
        b = best_int8(r)
        out.update({f"{r['name']} best INT8": b["name"], f"{r['name']} INT8 test macro-F1": b["test_macro_f1"],
                    f"{r['name']} F1 drop (pts)": round(b["f1_drop_pts"], 2), f"{r['name']} size ratio": round(b["size_ratio"], 2),
                    f"{r['name']} speedup": round(b["speedup"], 2)})
    out["goals met"] = all(best_int8(r)["goals_met"] for r in results)
    return out


def variants_table(result: dict) -> pd.DataFrame:
    """One model's FP32 source and every variant: quality, agreement, size, speed, goals."""
    f = result["fp32"]
    rows = [{"variant": f"{result['name']} (FP32 torch)", "test_macro_f1": f["test"]["macro_f1"], "f1_drop_pts": 0.0,
             "disk_MB": f["disk_bytes"] / 1e6, "weight_MB": f["weight_bytes"] / 1e6, "params": f["params"],
             "latency_ms": f["latency"]["median_ms"], "speedup": 1.0, "size_ratio": 1.0}]
    cols = ["test_macro_f1", "f1_drop_pts", "params", "latency_ms", "speedup", "size_ratio", "agreement",
            "max_abs_diff", "mean_abs_diff", "goals_met"]
    rows += [{"variant": v["name"], **{c: v[c] for c in cols}, "disk_MB": v["disk_bytes"] / 1e6,
              "weight_MB": v["weight_bytes"] / 1e6} for v in result["variants"]]
    return pd.DataFrame(rows).set_index("variant").round(4)


def sensitivity_table(result: dict) -> pd.DataFrame:
    df = pd.DataFrame(result["sensitivity"]).set_index("group").round(4)
    return df.assign(kept_fp32=[g in result["keep_fp32_groups"] for g in df.index])


def plot_sensitivity(results: list[dict], max_drop: float):
    """Val macro-F1 drop when one group alone is INT8; red bars are the groups the default keeps FP32."""
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 0.28 * len(results[0]["sensitivity"]) + 1.5),
                             squeeze=False)
    for ax, r in zip(axes[0], results):
        df = sensitivity_table(r)
        ax.barh(df.index, df["f1_drop_pts"], color=["tab:red" if k else "tab:blue" for k in df["kept_fp32"]])
        ax.axvline(max_drop, color="grey", ls=":", label=f"{max_drop} pt budget")
        ax.invert_yaxis()
        ax.set(title=f"{r['name']}: val F1 drop, one group INT8", xlabel="F1 drop (points)")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_tradeoffs(results: list[dict]):
    """Test macro-F1, size on disk and batch-1 latency of every variant next to its FP32 source."""
    df = pd.concat([variants_table(r) for r in results])
    fig, axes = plt.subplots(1, 3, figsize=(15, 0.35 * len(df) + 1.8))
    for ax, col, title in zip(axes, ["test_macro_f1", "disk_MB", "latency_ms"],
                              ["test macro-F1", "size on disk (MB)", "latency, batch 1, 32 tokens (ms)"]):
        ax.barh(df.index, df[col], color=["grey" if "FP32 torch" in i else "tab:blue" for i in df.index])
        ax.bar_label(ax.containers[0], fmt="%.3g", fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title)
    for ax in axes[1:]:
        ax.set_yticklabels([])
    axes[0].set_xlim(max(0, df["test_macro_f1"].min() - 0.1), 1)
    fig.tight_layout()
    return fig


def verdict(results: list[dict]) -> str:
    """The study's reading of the numbers, per model, against the issue's goals."""
    lines = []
    for r in results:
        b, qat = best_int8(r), next(v for v in r["variants"] if v["name"].endswith("_qat_int8"))
        ptq = next(v for v in r["variants"] if v["name"].endswith("_torch_int8"))
        kept = ", ".join(r["keep_fp32_groups"]) or "nothing"
        kept_onnx = ", ".join(r["onnx_keep_fp32_groups"]) or "nothing"
        lines.append(f"* **{r['name']}**: ship `{b['name']}` ({'goals MET' if b['goals_met'] else 'goals NOT met'}): "
                     f"test macro-F1 {b['test_macro_f1']:.4f} vs FP32 {b['fp32_test_macro_f1']:.4f} "
                     f"({-b['f1_drop_pts']:+.2f} pts), {b['size_ratio']:.2f}x smaller on disk, {b['speedup']:.2f}x faster "
                     f"at batch 1. Kept FP32 to stay within budget on val: {kept} (PyTorch), {kept_onnx} "
                     f"(ONNX Runtime). QAT INT8 {qat['test_macro_f1']:.4f} "
                     f"vs PTQ INT8 {ptq['test_macro_f1']:.4f}.")
    lines.append("* Latency is one machine's reading (2 threads, batch 1, 32 tokens); rerun "
                 "`python scripts/bench_quantize.py OUT_DIR` on a quiet machine before quoting it.")
    return "\n".join(lines)
