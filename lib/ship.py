"""Stage 05: gather every variant (building the stacked ones) and benchmark them identically, each in its own process."""
import json
import multiprocessing
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lib import bench
from lib.common import FinCompressError, atomic_dir, write_json
from lib.data import load_splits
from lib.report import read_stage_metrics
from lib.train import scores

COMPRESSION_STAGES = ["02_distillation", "03_quantization", "04_pruning"]


def collect_variants(paths: dict) -> list[dict]:
    """The teacher plus every variant that stages 02-04 listed in their metrics JSON."""
    read_stage_metrics(paths["reports"], "01_data_teacher")  # a clear error if stage 01 never ran
    variants = [{"name": "teacher", "format": "hf", "path": "checkpoints/teacher", "parent": None, "stage": "01"}]
    best_student = "student"
    for stage in COMPRESSION_STAGES:
        if (paths["reports"] / f"{stage}.json").is_file():
            metrics = read_stage_metrics(paths["reports"], stage)["metrics"]
            best_student = metrics.get("best_student", {}).get("name", best_student)
            for v in metrics.get("variants", []):
                # stage 04 calls its source "student"; name the real one so lineages read end to end
                parent = best_student if v.get("parent") == "student" else v.get("parent")
                variants.append({k: v.get(k) for k in ("name", "format", "path")} | {"parent": parent, "stage": stage[:2]})
    return variants


# Modules every variant needs, imported once in the fork server instead of ~2 s per variant process.
PRELOAD = ["lib.bench", "lib.prune", "lib.quantize", "onnxruntime", "transformers.models.bert.modeling_bert",
           "transformers.models.bert.tokenization_bert"]


def fork_server():
    """A clean process that forks one child per variant: no state from this kernel, imports already done."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: a fresh interpreter per variant
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def measure_in_subprocess(variant: dict, out_dir: Path, texts_file: Path, threads: int, latency_n: int) -> dict:
    """One fresh process per variant: load time and peak memory are the variant's own, threads are pinned."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        proc = fork_server().Process(target=bench.measure_to_file,
                                     args=(variant, str(out_dir), str(texts_file), str(result), threads, latency_n))
        proc.start()
        proc.join()
        raw = json.loads(result.read_text()) if result.exists() else {"error": f"the process exited with code {proc.exitcode}"}
    if "error" in raw:
        raise FinCompressError(f"benchmarking variant {variant['name']} ({variant['path']}) failed: {raw['error']}")
    return raw


def score_variant(raw: dict, labels: np.ndarray, teacher_preds: np.ndarray | None) -> dict:
    """Quality figures from a variant's test logits: F1 with bootstrap CI, per-class, agreement, ECE."""
    logits = np.asarray(raw["logits"])
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    preds = probs.argmax(1)
    s = scores(labels, preds)
    lo, hi = bench.bootstrap_f1(labels, preds)
    agree = float((preds == teacher_preds).mean()) if teacher_preds is not None else 1.0
    return {"macro_f1": s["macro_f1"], "f1_ci_low": lo, "f1_ci_high": hi, "accuracy": s["accuracy"],
            **{f"f1_{k}": v for k, v in s["per_class_f1"].items()}, "teacher_agreement": agree,
            "ece": bench.expected_calibration_error(probs, labels), "preds": preds}


def run_benchmark(paths: dict, variants: list[dict], threads: int = 2, max_test: int = 0,
                  latency_n: int = 100, gpu=None) -> pd.DataFrame:
    """Benchmark every variant on the same test sentences; teacher first so agreement can be computed.

    Latency is always CPU (the deployment target); with `gpu` (a CUDA device) PyTorch variants also get GPU throughput.
    """
    test = load_splits(paths["data"])["test"]
    if max_test:
        test = test.iloc[:max_test]
    labels = test["label"].to_numpy()
    rows, teacher_preds = [], None
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(test["text"].tolist()))
        for v in variants:
            print(f"benchmarking {v['name']} ({v['format']})", flush=True)
            raw = measure_in_subprocess(v, paths["root"], texts_file, threads, latency_n)
            q = score_variant(raw, labels, teacher_preds)
            teacher_preds = q["preds"] if teacher_preds is None else teacher_preds
            rows.append({"name": v["name"], "stage": v["stage"], "format": v["format"], "parent": v["parent"],
                         **{k: x for k, x in q.items() if k != "preds"},
                         "latency_median_ms": raw["latency"]["median_ms"], "latency_p95_ms": raw["latency"]["p95_ms"],
                         "latency_p99_ms": raw["latency"]["p99_ms"], "throughput_b32_per_s": raw["throughput_per_s"],
                         "peak_rss_mb": raw["peak_rss_mb"], "load_s": raw["load_s"], "disk_bytes": raw["disk_bytes"],
                         "weight_bytes": raw["weight_bytes"], "path": v["path"]})
            if gpu is not None:
                rows[-1]["gpu_throughput_b32_per_s"] = bench.gpu_throughput(v, paths["root"], test["text"].tolist(), gpu)
    df = pd.DataFrame(rows)
    teacher = df.iloc[0]
    df["speedup_vs_teacher"] = teacher["latency_median_ms"] / df["latency_median_ms"]
    df["size_ratio_vs_teacher"] = teacher["disk_bytes"] / df["disk_bytes"]
    df["f1_drop_points"] = (teacher["macro_f1"] - df["macro_f1"]) * 100
    return df


def write_results(df: pd.DataFrame, results_dir: Path, info: dict) -> None:
    """results/benchmark.csv and .json, written atomically together."""
    with atomic_dir(Path(results_dir)) as tmp:
        df.to_csv(tmp / "benchmark.csv", index=False)
        write_json(tmp / "benchmark.json", {"run_info": info, "variants": df.to_dict("records")})


def all_variants(paths: dict, stacked: bool = True, trim_vocab: bool = True, vocab_frequent: int = 5000) -> list[dict]:
    """Every variant stages 01-04 listed, plus the stacked ones (and their vocabulary-trimmed twins) built now."""
    variants = collect_variants(paths)
    if stacked:
        splits = load_splits(paths["data"])
        vocab_texts = splits["train"]["text"].tolist() + splits["val"]["text"].tolist() if trim_vocab else None
        variants += build_stacked(paths, variants, splits["test"]["text"].tolist(), stage03_keep_groups(paths),
                                  vocab_texts=vocab_texts, vocab_frequent=vocab_frequent)
    return variants


def build_stacked(paths: dict, variants: list[dict], texts: list[str], keep_groups: dict, tol: float = 1e-3,
                  vocab_texts: list[str] | None = None, vocab_frequent: int = 0) -> list[dict]:
    """Pruned model -> ONNX -> ORT INT8 for every pruned variant: compression stacked as it would ship.

    With `vocab_texts`, each also gets a `_vocab` twin whose vocabulary keeps only the tokens those texts use.
    """
    from lib import prune, quantize as q, vocab
    from lib.quantize_study import save_onnx_fp32, save_onnx_int8
    from transformers import AutoTokenizer

    def int8(name, model, tokenizer, keep, parent):
        qdir = paths["checkpoints"] / "stacked"
        fp32_dir, parity = save_onnx_fp32(name, model, tokenizer, texts[:8], qdir, tol)
        path = save_onnx_int8(name, fp32_dir, tokenizer, qdir, keep)
        print(f"stacked {name}_onnx_int8: ONNX parity max |logit diff| {parity['max_abs_diff']:.2e}")
        return {"name": f"{name}_onnx_int8", "format": "onnx", "path": str(path.relative_to(paths["root"])),
                "parent": parent, "stage": "05"}
    stacked = []
    for v in [v for v in variants if v["format"] == "pruned"]:
        src = paths["root"] / v["path"]
        model, tokenizer = prune.load_pruned(src), AutoTokenizer.from_pretrained(src)
        root = v["name"].split("_")[0]  # "student_h50_f50" -> "student": reuse its stage-03 FP32 choices
        keep = q.modules_in(model, keep_groups.get(root, []))
        stacked.append(int8(v["name"], model, tokenizer, keep, v["name"]))
        if vocab_texts:  # trimming swaps only the word-embedding table, so the FP32 choices above still hold
            model, tokenizer, kept = vocab.trim_vocab(model, tokenizer, vocab_texts, vocab_frequent)
            print(f"{v['name']}_vocab: {len(kept)} of the vocabulary's tokens kept")
            stacked.append(int8(f"{v['name']}_vocab", model, tokenizer, keep, v["name"]))
    return stacked


def stage03_keep_groups(paths: dict) -> dict:
    """Which module groups stage 03's sensitivity study kept in FP32 for ONNX Runtime INT8, per source model."""
    if not (paths["reports"] / "03_quantization.json").is_file():
        return {}
    m = read_stage_metrics(paths["reports"], "03_quantization")["metrics"]
    # Stage 03 names the student after its training kind (student_kd_vanilla, ...); stage 04 calls it "student".
    return {r["name"].split("_")[0]: r.get("onnx_keep_fp32_groups", r.get("keep_fp32_groups", [])) for r in m.get("models", [])}
