"""Stage 05: gather every variant, benchmark them identically, pick the one to ship, export it."""
import json
import multiprocessing
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lib import bench
from lib.common import FinCompressError, atomic_dir, write_json, write_text_atomic
from lib.data import LABELS, load_splits
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


def pareto_front(df: pd.DataFrame, cost: str, quality: str = "macro_f1") -> pd.Series:
    """True for variants no other variant beats on both cost (lower) and quality (higher)."""
    c, q = df[cost].to_numpy(), df[quality].to_numpy()
    dominated = [((c <= c[i]) & (q >= q[i]) & ((c < c[i]) | (q > q[i]))).any() for i in range(len(df))]
    return pd.Series(~np.array(dominated), index=df.index)


def recommend(df: pd.DataFrame, max_drop_points: float = 1.5, latency_tie: float = 0.1) -> pd.Series:
    """Fastest variant within max_drop_points of the teacher's test macro-F1; variants within
    latency_tie (10%, about the run-to-run spread of the timings) of it count as tied, and the smallest wins."""
    ok = df[df["f1_drop_points"] <= max_drop_points]
    tied = ok[ok["latency_median_ms"] <= ok["latency_median_ms"].min() * (1 + latency_tie)]
    return tied.sort_values(["disk_bytes", "latency_median_ms"]).iloc[0]


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
    from lib.quantize_study import save_onnx_variants
    from transformers import AutoTokenizer

    def int8(name, model, tokenizer, keep, parent):
        made, parity = save_onnx_variants(name, model, tokenizer, texts[:8], paths["checkpoints"] / "stacked",
                                          paths["root"], keep, tol)
        m = next(m for m in made if m["name"].endswith("onnx_int8"))
        print(f"stacked {m['name']}: ONNX parity max |logit diff| {parity['max_abs_diff']:.2e}")
        return {"name": m["name"], "format": "onnx", "path": m["path"], "parent": parent, "stage": "05"}
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
    """Which module groups stage 03's sensitivity study kept in FP32, per source model."""
    if not (paths["reports"] / "03_quantization.json").is_file():
        return {}
    m = read_stage_metrics(paths["reports"], "03_quantization")["metrics"]
    # Stage 03 names the student after its training kind (student_kd_vanilla, ...); stage 04 calls it "student".
    return {r["name"].split("_")[0]: r.get("keep_fp32_groups", []) for r in m.get("models", [])}


def plot_tradeoffs(df: pd.DataFrame, recommended: str):
    """F1 vs batch-1 latency and vs size on disk, Pareto frontier joined, the recommendation circled."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    for ax, cost, label in [(axes[0], "latency_median_ms", "batch-1 median latency (ms)"),
                            (axes[1], "disk_bytes", "size on disk (bytes)")]:
        front = df[pareto_front(df, cost)].sort_values(cost)
        for stage, g in df.groupby("stage"):
            ax.scatter(g[cost], g["macro_f1"], label=f"stage {stage}", s=40)
        ax.plot(front[cost], front["macro_f1"], "k--", lw=1, label="Pareto frontier")
        rec = df[df["name"] == recommended]
        ax.scatter(rec[cost], rec["macro_f1"], s=220, facecolors="none", edgecolors="red", lw=2, label="recommended")
        for _, r in df.iterrows():
            ax.annotate(r["name"], (r[cost], r["macro_f1"]), fontsize=6, xytext=(3, 3), textcoords="offset points")
        ax.set(xscale="log", xlabel=label, ylabel="test macro-F1", title=f"Macro-F1 vs {label.split(' (')[0]}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_retention(df: pd.DataFrame):
    """Per-class F1 of each variant as a share of the teacher's: where compression hurts first."""
    import matplotlib.pyplot as plt
    import seaborn as sns
    cols = [f"f1_{l}" for l in LABELS]
    ret = df.set_index("name")[cols] / df.iloc[0][cols].astype(float).values
    fig, ax = plt.subplots(figsize=(6, 0.32 * len(ret) + 1.2))
    sns.heatmap(ret.rename(columns=lambda c: c[3:]), annot=True, fmt=".3f", cmap="RdYlGn", vmin=0.9, vmax=1.02,
                cbar=False, ax=ax)
    ax.set(title="Per-class F1 retained vs teacher", ylabel="")
    fig.tight_layout()
    return fig


def summary_table(df: pd.DataFrame) -> pd.DataFrame:
    t = df[["name", "format", "macro_f1", "f1_ci_low", "f1_ci_high", "f1_drop_points", "teacher_agreement", "ece",
            "latency_median_ms", "latency_p95_ms", "latency_p99_ms", "speedup_vs_teacher", "throughput_b32_per_s",
            "disk_bytes", "size_ratio_vs_teacher", "peak_rss_mb", "load_s"]
           + [c for c in ["gpu_throughput_b32_per_s"] if c in df]].copy()
    t["disk_MB"] = t.pop("disk_bytes") / 1e6
    return t.set_index("name").round(3)


def lineage(df: pd.DataFrame, name: str) -> list[str]:
    """teacher -> student -> pruned -> INT8: the chain of parents of a variant."""
    parents = dict(zip(df["name"], df["parent"]))
    chain = [name]
    while parents.get(chain[-1]) and chain[-1] != "teacher":
        chain.append(parents[chain[-1]])
    return chain[::-1]


def model_card(row: pd.Series, df: pd.DataFrame, info: dict, max_drop: float) -> str:
    t = df.iloc[0]
    return f"""# FinCompress sentiment model: {row['name']}

3-class financial sentiment (0 negative, 1 neutral, 2 positive) for English news sentences, headlines
and microblog posts. Chosen by FinCompress stage 05 as the fastest variant whose test macro-F1 is within
{max_drop} points of the teacher.

- Lineage: {' -> '.join(lineage(df, row['name']))}
- Format: {row['format']} ({'ONNX Runtime, dynamic INT8' if row['format'] == 'onnx' else 'PyTorch'})
- Data: Financial PhraseBank v1.0 (AllAgree) + FiQA-2018 task 1, de-duplicated, stratified 70/15/15 split

## Test-set figures (same {info['params'].get('threads', 2)}-thread CPU harness as the teacher)
| | this model | teacher |
|---|---|---|
| macro-F1 (95% bootstrap CI) | {row['macro_f1']:.4f} ({row['f1_ci_low']:.4f}-{row['f1_ci_high']:.4f}) | {t['macro_f1']:.4f} |
| F1 negative / neutral / positive | {row['f1_negative']:.3f} / {row['f1_neutral']:.3f} / {row['f1_positive']:.3f} | {t['f1_negative']:.3f} / {t['f1_neutral']:.3f} / {t['f1_positive']:.3f} |
| agreement with teacher | {row['teacher_agreement']:.3f} | 1 |
| expected calibration error | {row['ece']:.4f} | {t['ece']:.4f} |
| batch-1 latency median / p95 (ms) | {row['latency_median_ms']:.2f} / {row['latency_p95_ms']:.2f} | {t['latency_median_ms']:.2f} / {t['latency_p95_ms']:.2f} |
| size on disk (MB) | {row['disk_bytes'] / 1e6:.1f} | {t['disk_bytes'] / 1e6:.1f} |

Measured on {info['hardware']['cpu']}, git {info['git_commit']}, seed {info['seed']}.

## Use
    python -m lib.predict --model artifacts/model "Operating profit rose to EUR 13.1 mn"

## Limitations
Trained on English financial news and stock microblogs; FiQA labels are thresholded continuous scores, so
short informal posts are the least reliable. Negative is the smallest class and the first to lose recall.
Texts longer than 128 tokens are rejected unless truncation is asked for.
"""


def export_recommended(row: pd.Series, df: pd.DataFrame, paths: dict, info: dict, max_drop: float) -> Path:
    """artifacts/model: the recommended model's files, its model card and metrics, written atomically."""
    dest = paths["root"] / "artifacts" / "model"
    with atomic_dir(dest) as tmp:
        shutil.copytree(paths["root"] / row["path"], tmp, dirs_exist_ok=True)
        write_text_atomic(tmp / "MODEL_CARD.md", model_card(row, df, info, max_drop))
        write_json(tmp / "metrics.json", {"variant": row.to_dict(), "teacher": df.iloc[0].to_dict(),
                                          "labels": LABELS, "run_info": info})
    return dest


def recommendation_text(row: pd.Series, df: pd.DataFrame, max_drop: float) -> str:
    """The plain-language verdict: what to ship, what it costs, and whether the study's goals were met."""
    goals = {"8x faster than the FP32 PyTorch teacher at batch 1": row["speedup_vs_teacher"] >= 8,
             "6x smaller on disk": row["size_ratio_vs_teacher"] >= 6,
             f"test macro-F1 at most {max_drop} points below the teacher": row["f1_drop_points"] <= max_drop}
    lines = [f"**Ship `{row['name']}`** ({' -> '.join(lineage(df, row['name']))}): test macro-F1 {row['macro_f1']:.4f} "
             f"(95% CI {row['f1_ci_low']:.4f}-{row['f1_ci_high']:.4f}, {-row['f1_drop_points']:+.2f} points vs teacher), "
             f"{row['latency_median_ms']:.2f} ms median batch-1 latency ({row['speedup_vs_teacher']:.1f}x faster), "
             f"{row['disk_bytes'] / 1e6:.1f} MB on disk ({row['size_ratio_vs_teacher']:.1f}x smaller).", ""]
    lines += [f"* {'MET' if ok else 'NOT MET'}: {goal}" for goal, ok in goals.items()]
    front = df[pareto_front(df, "latency_median_ms")]["name"].tolist()
    lines += ["", f"Pareto-optimal on F1 vs latency: {', '.join(front)}."]
    return "\n".join(lines)


def index_table(df: pd.DataFrame) -> list[dict]:
    """The headline columns that reports/index.html shows."""
    cols = ["name", "macro_f1", "f1_drop_points", "latency_median_ms", "speedup_vs_teacher", "disk_bytes",
            "size_ratio_vs_teacher"]
    return df[cols].round(4).to_dict("records")
