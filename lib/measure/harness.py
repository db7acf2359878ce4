"""The benchmark harness: every variant measured the same way, each in a fresh process, scored on the same named
sets of texts (val decides, test reports; an out-of-domain set is one more entry). Row columns: docs SCHEMA."""
import json
import multiprocessing
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib.core import stats
from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir, write_json
from lib.core.variants import Variant
from lib.measure import bench
from lib.measure.invariance import FlipGate
from lib.modeling.train import scores
from lib.predict.serving import softmax
from lib.ship import decide

# Points beyond the F1 budget within which batch flips are still counted: no rounding can then leave a variant the
# ship rule reads uncounted (one val sentence moves macro-F1 by about 0.2 points).
FLIP_MARGIN_PTS = 0.5
# Modules every variant needs, imported once in the fork server instead of ~2 s per variant process.
PRELOAD = ["lib.measure.bench", "lib.core.variants", "lib.runtime.onnxrt", "lib.techniques.prune", "lib.techniques.quantize",
           "onnxruntime", "transformers.models.bert.modeling_bert", "transformers.models.bert.tokenization_bert"]


def fork_server():
    """A clean process that forks one child per variant: no state from this kernel, imports already done."""
    if "forkserver" not in multiprocessing.get_all_start_methods():  # Windows: a fresh interpreter per variant
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def in_workers(fn, items: list, workers: int) -> list:
    """[fn(x) for x in items], in `workers` processes of the fork server at once (each with its share of the CPU
    threads), the results in the order of `items`; in this process when workers is 1. fn must be picklable."""
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    n = min(workers, len(items))
    with fork_server().Pool(n, initializer=torch.set_num_threads, initargs=(max(1, torch.get_num_threads() // n),)) as pool:
        return pool.map(fn, items, chunksize=1)


@contextmanager
def texts_file(texts: dict[str, list[str]]):
    """The named sets of texts ({set: [text, ...]}) in a temporary JSON file, for the variant processes to read."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.json"
        path.write_text(json.dumps(texts))
        yield path


def in_subprocess(target, variant: Variant, root: Path, texts_file: Path, *args) -> dict:
    """target(variant, root, texts_file, result_file, *args) in a fresh process: load time and peak memory are the
    variant's own, threads are pinned. Its result, or one line naming the variant that failed."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        proc = fork_server().Process(target=target, args=(variant, str(root), str(texts_file), str(result), *args))
        proc.start()
        proc.join()
        raw = json.loads(result.read_text()) if result.exists() else {"error": f"the process exited with code {proc.exitcode}"}
    if "error" in raw:
        raise FinCompressError(f"benchmarking variant {variant.name} ({variant.path}) failed: {raw['error']}")
    return raw


def measure_in_subprocess(variant: Variant, root: Path, texts_file: Path, threads: int, latency_n: int,
                          flip_sets: tuple = (), seed: int = 0, flip_gate: FlipGate | None = None) -> dict:
    """One fresh process per variant (bench.measure_variant)."""
    return in_subprocess(bench.measure_to_file, variant, root, texts_file, threads, latency_n, tuple(flip_sets), seed,
                         flip_gate)


def score_twins(root: Path, sets: dict[str, pd.DataFrame], twins: list[Variant], threads: int = 2,
                seed: int = 0) -> dict[str, dict[str, float]]:
    """Macro-F1 per named set of each training seed's twin (lib.core.seeds.twins), batched as run_benchmark batches
    every variant, each in a fresh process; nothing else is measured: {twin name: {set: macro-F1}}."""
    out = {}
    with texts_file({name: df["text"].tolist() for name, df in sets.items()}) as texts:
        for t in twins:
            print(f"scoring {t.name} (training seed {t.metrics['seed']} of {t.metrics['twin_of']})", flush=True)
            raw = in_subprocess(bench.logits_to_file, t, root, texts, threads, seed)
            out[t.name] = {s: scores(df["label"].to_numpy(), np.asarray(raw["logits"][s]).argmax(1))["macro_f1"]
                           for s, df in sets.items()}
    return out


def score_logits(logits, labels: np.ndarray, teacher_preds: np.ndarray | None, seed: int = 0,
                 draws: int = 1000) -> dict:
    """Quality figures from a variant's logits on one set: F1 with its bootstrap CI, per-class F1, the paired
    delta to the teacher (negative = worse) with its CI and McNemar p, agreement with the teacher, ECE."""
    probs = softmax(logits, np.float64)
    preds = probs.argmax(1)
    teacher_preds = preds if teacher_preds is None else np.asarray(teacher_preds)
    s = scores(labels, preds)
    lo, hi = stats.bootstrap_f1(labels, preds, draws, seed)
    return {"macro_f1": s["macro_f1"], "f1_ci_low": lo, "f1_ci_high": hi, "accuracy": s["accuracy"],
            **{f"f1_{k}": v for k, v in s["per_class_f1"].items()},
            **stats.compare(labels, preds, teacher_preds, draws, seed),
            "teacher_agreement": float((preds == teacher_preds).mean()),
            "ece": stats.expected_calibration_error(probs, labels), "preds": preds}


def row(v: Variant, quality: dict, raw: dict) -> dict:
    """One benchmark row: the variant's fields, its quality on each set (S_* columns), its costs."""
    return {"name": v.name, "stage": v.stage, "format": v.format, "precision": v.precision, "source": v.source,
            "techniques": list(v.techniques), "reference": v.reference, **quality,
            "latency_median_ms": raw["latency"]["median_ms"], "latency_p95_ms": raw["latency"]["p95_ms"],
            "latency_p99_ms": raw["latency"]["p99_ms"], "throughput_b32_per_s": raw["throughput_per_s"],
            "peak_rss_mb": raw["peak_rss_mb"], "load_s": raw["load_s"], "disk_bytes": raw["disk_bytes"],
            "weight_bytes": raw["weight_bytes"], **end_to_end_columns(raw), **flip_columns(raw), "path": v.path}


def flip_columns(raw: dict) -> dict:
    """Per set S measured one sentence at a time: S_batch_flips (labels that differ between batch 1 and the shuffled
    batches of 32) and S_batch_n (the sentences compared)."""
    return {f"{s}_batch_{k}": f[k] for s, f in raw.get("batch_flips", {}).items() for k in ("flips", "n")}


def end_to_end_columns(raw: dict) -> dict:
    """Text in, label out (lib.predict's way, tokenizer included): batch-1 median ms, batch-32 sentences/s, the
    share of labels equal to the model-only run's on the first set, and useful MACs per sentence (ONNX only)."""
    e2e, first = raw["e2e"], next(iter(raw["logits"]))
    same = np.asarray(e2e["labels"]) == np.asarray(raw["logits"][first]).argmax(1)
    return {"e2e_latency_median_ms": e2e["latency_median_ms"], "e2e_throughput_b32_per_s": e2e["throughput_per_s"],
            "e2e_label_agreement": float(same.mean()), "useful_macs_per_sentence": raw.get("useful_macs")}


def run_benchmark(root: Path, sets: dict[str, pd.DataFrame], variants: list[Variant], threads: int = 2,
                  latency_n: int = 100, gpu=None, seed: int = 0, flip_sets: tuple = (),
                  flip_budget_pts: float | None = None) -> pd.DataFrame:
    """Benchmark every variant on the same named sets of sentences ({"val": df, "test": df}, more sets by adding
    them); the teacher (first) is the reference of every delta and ratio. Latency is timed on the first set; the
    sets in flip_sets are also run one sentence at a time (their batch flips): for every variant, or with
    flip_budget_pts for the teacher, the reference rows and the variants within that budget (+ FLIP_MARGIN_PTS) of
    the teacher's macro-F1 on the first set, the only ones a ship rule can read. `seed` shuffles each set's batches.

    Latency is always CPU (the deployment target); with `gpu` (a CUDA device) PyTorch variants also get GPU throughput.
    """
    labels = {name: df["label"].to_numpy() for name, df in sets.items()}
    all_texts = [t for df in sets.values() for t in df["text"]]
    rows, teacher_preds = [], {}
    with texts_file({name: df["text"].tolist() for name, df in sets.items()}) as texts:
        first, gate = next(iter(sets)), None
        for v in variants:
            print(f"benchmarking {v.name} ({v.format})", flush=True)
            raw = measure_in_subprocess(v, root, texts, threads, latency_n, flip_sets, seed,
                                        None if v.reference else gate)
            quality = {}
            for name in sets:
                q = score_logits(raw["logits"][name], labels[name], teacher_preds.get(name), seed)
                teacher_preds.setdefault(name, q.pop("preds"))  # the first variant's predictions: the teacher's
                quality |= {f"{name}_{k}": x for k, x in q.items()}
            rows.append(row(v, quality, raw))
            if gate is None and flip_budget_pts is not None:  # the teacher, measured first, sets the floor
                gate = FlipGate(first, tuple(labels[first].tolist()),
                                quality[f"{first}_macro_f1"] - (flip_budget_pts + FLIP_MARGIN_PTS) / 100)
            if gpu is not None:
                rows[-1]["gpu_throughput_b32_per_s"] = bench.gpu_throughput(v, root, all_texts, gpu)
    return with_readings(with_ratios(pd.DataFrame(rows), list(sets)), list(sets))


def run_yardstick(root: Path, texts: list[str], yardsticks: list[Variant], teacher: pd.Series, threads: int = 2,
                  latency_n: int = 100, seed: int = 0) -> pd.DataFrame:
    """Cost rows of the shape-only yardsticks (lib.measure.yardstick), measured like every variant on the same sentences;
    no quality columns (their F1 means nothing) and cost ratios against the teacher's row."""
    rows = []
    with texts_file({"val": list(texts)}) as path:
        for v in yardsticks:
            print(f"benchmarking the yardstick {v.name} ({v.format})", flush=True)
            rows.append({**row(v, {}, measure_in_subprocess(v, root, path, threads, latency_n, (), seed)),
                         "shape_only": True})
    df = pd.DataFrame(rows)
    df["speedup_vs_teacher"] = teacher["latency_median_ms"] / df["latency_median_ms"]
    df["size_ratio_vs_teacher"] = teacher["disk_bytes"] / df["disk_bytes"]
    return df


def with_ratios(df: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    """Retention per set and the cost ratios, all against the teacher (row 0)."""
    teacher = df.iloc[0]
    for name in sets:
        df[f"{name}_retention"] = df[f"{name}_macro_f1"] / teacher[f"{name}_macro_f1"]
    df["speedup_vs_teacher"] = teacher["latency_median_ms"] / df["latency_median_ms"]
    df["size_ratio_vs_teacher"] = teacher["disk_bytes"] / df["disk_bytes"]
    return df


def with_readings(df: pd.DataFrame, sets: list[str]) -> pd.DataFrame:
    """Per set S: S_p_holm and S_reading, Holm over the family of every candidate compared with the teacher (row 0,
    whose p_holm is absent and whose reading is "reference"); the off-the-shelf reference rows are a family of their
    own, so that adding them moves no candidate's word."""
    refs = decide.reference_rows(df)
    families = [f for f in (df.index[1:][~refs.iloc[1:].to_numpy()], df.index[refs.to_numpy()]) if len(f)]
    for name in sets:
        p_holm, words = pd.Series(np.nan, index=df.index), pd.Series("reference", index=df.index, dtype=object)
        for family in families:
            p_holm[family], words[family] = stats.family_readings(df.loc[family, f"{name}_delta_pts"],
                                                                  df.loc[family, f"{name}_p"])
        df[f"{name}_p_holm"], df[f"{name}_reading"] = p_holm, words
    return df


def write_results(df: pd.DataFrame, results_dir: Path, info: dict, **extra) -> None:
    """results/benchmark.csv and .json, written atomically together; `extra` entries (the yardstick rows, the
    measured peak) go into the JSON beside the variants."""
    with atomic_dir(Path(results_dir)) as tmp:
        df.to_csv(tmp / "benchmark.csv", index=False)
        write_json(tmp / "benchmark.json", {"run_info": info, "variants": df.to_dict("records"), **extra})
