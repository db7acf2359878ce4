"""The benchmark harness: every variant measured the same way, each in a fresh process, scored on the same texts."""
import json
import multiprocessing
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lib import bench, stats
from lib.common import FinCompressError, atomic_dir, write_json
from lib.train import scores
from lib.variants import Variant

# Modules every variant needs, imported once in the fork server instead of ~2 s per variant process.
PRELOAD = ["lib.bench", "lib.variants", "lib.onnx_runtime", "lib.prune", "lib.quantize", "onnxruntime",
           "transformers.models.bert.modeling_bert", "transformers.models.bert.tokenization_bert"]


def fork_server():
    """A clean process that forks one child per variant: no state from this kernel, imports already done."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: a fresh interpreter per variant
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def measure_in_subprocess(variant: Variant, root: Path, texts_file: Path, threads: int, latency_n: int) -> dict:
    """One fresh process per variant: load time and peak memory are the variant's own, threads are pinned."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        proc = fork_server().Process(target=bench.measure_to_file,
                                     args=(variant, str(root), str(texts_file), str(result), threads, latency_n))
        proc.start()
        proc.join()
        raw = json.loads(result.read_text()) if result.exists() else {"error": f"the process exited with code {proc.exitcode}"}
    if "error" in raw:
        raise FinCompressError(f"benchmarking variant {variant.name} ({variant.path}) failed: {raw['error']}")
    return raw


def score_logits(logits, labels: np.ndarray, teacher_preds: np.ndarray | None) -> dict:
    """Quality figures from a variant's logits: F1 with bootstrap CI, per-class, agreement with the teacher, ECE."""
    logits = np.asarray(logits)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    preds = probs.argmax(1)
    s = scores(labels, preds)
    lo, hi = stats.bootstrap_f1(labels, preds)
    agree = float((preds == teacher_preds).mean()) if teacher_preds is not None else 1.0
    return {"macro_f1": s["macro_f1"], "f1_ci_low": lo, "f1_ci_high": hi, "accuracy": s["accuracy"],
            **{f"f1_{k}": v for k, v in s["per_class_f1"].items()}, "teacher_agreement": agree,
            "ece": stats.expected_calibration_error(probs, labels), "preds": preds}


def row(v: Variant, quality: dict, raw: dict) -> dict:
    """One benchmark row: the variant's fields, its quality on the texts, its costs."""
    return {"name": v.name, "stage": v.stage, "format": v.format, "precision": v.precision, "source": v.source,
            "techniques": " -> ".join(v.techniques), **{k: x for k, x in quality.items() if k != "preds"},
            "latency_median_ms": raw["latency"]["median_ms"], "latency_p95_ms": raw["latency"]["p95_ms"],
            "latency_p99_ms": raw["latency"]["p99_ms"], "throughput_b32_per_s": raw["throughput_per_s"],
            "peak_rss_mb": raw["peak_rss_mb"], "load_s": raw["load_s"], "disk_bytes": raw["disk_bytes"],
            "weight_bytes": raw["weight_bytes"], "path": v.path}


def run_benchmark(root: Path, test: pd.DataFrame, variants: list[Variant], threads: int = 2, latency_n: int = 100,
                  gpu=None) -> pd.DataFrame:
    """Benchmark every variant on the same test sentences; the teacher (first) is the reference of every ratio.

    Latency is always CPU (the deployment target); with `gpu` (a CUDA device) PyTorch variants also get GPU throughput.
    """
    labels = test["label"].to_numpy()
    rows, teacher_preds = [], None
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = Path(tmp) / "texts.json"
        texts_file.write_text(json.dumps(test["text"].tolist()))
        for v in variants:
            print(f"benchmarking {v.name} ({v.format})", flush=True)
            raw = measure_in_subprocess(v, root, texts_file, threads, latency_n)
            quality = score_logits(raw["logits"], labels, teacher_preds)
            teacher_preds = quality["preds"] if teacher_preds is None else teacher_preds
            rows.append(row(v, quality, raw))
            if gpu is not None:
                rows[-1]["gpu_throughput_b32_per_s"] = bench.gpu_throughput(v, root, test["text"].tolist(), gpu)
    df = pd.DataFrame(rows)
    teacher = df.iloc[0]
    df["speedup"] = teacher["latency_median_ms"] / df["latency_median_ms"]
    df["size_ratio"] = teacher["disk_bytes"] / df["disk_bytes"]
    df["f1_drop_pts"] = (teacher["macro_f1"] - df["macro_f1"]) * 100
    return df


def write_results(df: pd.DataFrame, results_dir: Path, info: dict) -> None:
    """results/benchmark.csv and .json, written atomically together."""
    with atomic_dir(Path(results_dir)) as tmp:
        df.to_csv(tmp / "benchmark.csv", index=False)
        write_json(tmp / "benchmark.json", {"run_info": info, "variants": df.to_dict("records")})
