"""Which ONNX Runtime options and batching choices pay off for one model on this CPU.

    python scripts/bench_runtime_options.py [MODEL_DIR] [--texts data/val.csv] [--threads 2] [--rounds 5]

MODEL_DIR holds model.onnx and its tokenizer (a stage-03/05 ONNX variant). Two tables, every option
measured against the baseline in the same process, interleaved round by round (rotating order), so the
ratios hold on a shared machine even when the absolute figures do not:
1. session options (graph optimization level, intra-op threads, memory arena, the settings predict served with
   before issue 30, I/O binding into a pre-allocated output): batch-1 latency on natural-length real
   sentences (median, best round) and batch-32 model-only throughput;
2. batching at batch 32, end to end (tokenizer included) and model-only: fixed 128-token padding, the
   same trimmed to the batch's longest real token, file-order batches padded to their longest, and
   length-sorted batches padded to their longest (what lib.predict does).
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core.files import write_json  # noqa: E402
from lib.core.params import check_range  # noqa: E402
from lib.core.variants import ONNX_FILE  # noqa: E402
from lib.data.batching import length_sorted  # noqa: E402
from lib.measure import bench  # noqa: E402
from lib.measure.roofline import interleaved_seconds  # noqa: E402
from lib.runtime import onnxrt  # noqa: E402

BASE = "baseline: lib.runtime.onnxrt.session (ALL, arena, spinning)"
AGAIN = "baseline again, a second session (A/A: the noise)"  # a gain smaller than its deviation from 1 is noise
FIXED = 128


def session(path, threads: int, level: str = "all", mem_arena: bool = True, config: dict | None = None):
    """lib.runtime.onnxrt.session's options with one of them changed."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                     "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    opts.enable_cpu_mem_arena, opts.log_severity_level = mem_arena, 3
    for key, value in (config or {}).items():
        opts.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def trim_to_longest(batch: dict) -> dict:
    """Drop the columns after the batch's last real token (right padding, as BERT tokenizers pad)."""
    keep = int(np.asarray(batch["attention_mask"]).sum(1).max())
    return {k: v[:, :keep] for k, v in batch.items()}


def numpy_feed(batch: dict, names) -> dict:
    return {n: np.ascontiguousarray(np.asarray(batch[n]), dtype=np.int64) for n in names}


def bound_runner(sess):
    """sess.run through I/O binding into a pre-allocated output array (one per batch size)."""
    import onnxruntime as ort
    io, outs = sess.io_binding(), {}

    def run(feed: dict):
        rows = next(iter(feed.values())).shape[0]
        if rows not in outs:
            outs[rows] = np.empty((rows, sess.get_outputs()[0].shape[1]), np.float32)
        for name, value in feed.items():
            io.bind_cpu_input(name, value)
        io.bind_ortvalue_output(sess.get_outputs()[0].name, ort.OrtValue.ortvalue_from_numpy(outs[rows]))
        sess.run_with_iobinding(io)
        return outs[rows]
    return run


def option_runners(path: Path, threads: int) -> dict:
    """name -> run(feed) for the baseline session and each single change to it."""
    def plain(sess):
        return lambda feed: sess.run(None, feed)[0]
    return {BASE: plain(onnxrt.session(path, threads)),
            AGAIN: plain(onnxrt.session(path, threads)),
            "predict before issue 30 (BASIC, no spinning, no mem pattern)": plain(onnxrt.session(
                path, settings=onnxrt.Settings(threads, "basic", intra_op_spinning=False, memory_pattern=False))),
            "graph level EXTENDED": plain(session(path, threads, level="extended")),
            "graph level BASIC": plain(session(path, threads, level="basic")),
            "graph level BASIC, no spinning": plain(session(path, threads, level="basic",
                                                            config={"session.intra_op.allow_spinning": "0"})),
            "no CPU memory arena": plain(session(path, threads, mem_arena=False)),
            "1 intra-op thread": plain(session(path, 1)),
            "I/O binding, pre-allocated output": bound_runner(session(path, threads))}


def options_table(runners: dict, singles: list, batches: list, threads: int, rounds: int) -> pd.DataFrame:
    lat = bench.fastest_latency(runners, singles, threads=threads, rounds=rounds, repeats=2)
    secs = interleaved_seconds({n: (lambda r=r: [r(b) for b in batches]) for n, r in runners.items()}, rounds)
    n = sum(next(iter(b.values())).shape[0] for b in batches)
    rows = [{"option": name, "batch1_median_ms": lat[name]["median_ms"], "batch32_sent_per_s": n / np.median(secs[name]),
             "batch32_best_sent_per_s": n / min(secs[name])} for name in runners]
    df = pd.DataFrame(rows).set_index("option")
    df["batch1_speedup"] = df.loc[BASE, "batch1_median_ms"] / df["batch1_median_ms"]
    df["batch32_speedup"] = df["batch32_sent_per_s"] / df.loc[BASE, "batch32_sent_per_s"]
    return df


def batching_passes(sess, tokenizer, texts: list[str], names, bs: int = 32) -> dict:
    """name -> (end-to-end pass over texts, pre-tokenized batches for the model-only pass)."""
    chunks = [texts[i:i + bs] for i in range(0, len(texts), bs)]

    def tok(chunk, **kw):
        return dict(tokenizer(chunk, truncation=True, max_length=FIXED, return_tensors="np", **kw))
    recipes = {"pad to 128 (fixed shape)": lambda: [tok(c, padding="max_length") for c in chunks],
               "pad to 128, trimmed to longest": lambda: [trim_to_longest(tok(c, padding="max_length")) for c in chunks],
               "file order, pad to longest": lambda: [tok(c, padding=True) for c in chunks],
               "length-sorted, pad to longest (predict today)": lambda: [tok(c, padding=True) for c in
                                                                         length_sorted(tokenizer, texts, bs, FIXED)]}
    out = {}
    for name, make in recipes.items():
        def end_to_end(make=make):
            return [sess.run(None, numpy_feed(b, names)) for b in make()]
        out[name] = (end_to_end, [numpy_feed(b, names) for b in make()])
    return out


def batching_table(sess, tokenizer, texts: list[str], rounds: int) -> pd.DataFrame:
    names = [i.name for i in sess.get_inputs()]
    passes = batching_passes(sess, tokenizer, texts, names)
    e2e = interleaved_seconds({n: p[0] for n, p in passes.items()}, rounds)
    model = interleaved_seconds({n: (lambda fs=p[1]: [sess.run(None, f) for f in fs]) for n, p in passes.items()}, rounds)
    df = pd.DataFrame([{"batching": n, "end_to_end_sent_per_s": len(texts) / np.median(e2e[n]),
                        "model_only_sent_per_s": len(texts) / np.median(model[n]),
                        "padded_tokens": sum(f["input_ids"].size for f in p[1])} for n, p in passes.items()])
    df = df.set_index("batching")
    df["end_to_end_speedup"] = df["end_to_end_sent_per_s"] / df.loc["length-sorted, pad to longest (predict today)",
                                                                             "end_to_end_sent_per_s"]
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", nargs="?", default="artifacts/model")
    ap.add_argument("--texts", default="data/val.csv", help="CSV with a text column: the sentences timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=100, help="sentences timed one at a time for batch-1 latency")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--json", help="also write the tables here")
    args = ap.parse_args(argv)
    for name in ("threads", "n", "rounds"):
        check_range(f"--{name}", getattr(args, name), 1)
    model = Path(args.model_dir) / ONNX_FILE
    if not model.is_file() or not Path(args.texts).is_file():
        raise FinCompressError(f"need {model} and {args.texts}; pass an ONNX variant folder and --texts CSV")
    tokenizer, texts = AutoTokenizer.from_pretrained(args.model_dir), pd.read_csv(args.texts)["text"].astype(str).tolist()
    runners = option_runners(model, args.threads)
    names = [i.name for i in session(model, 1).get_inputs()]
    singles = [numpy_feed(tokenizer(t, truncation=True, max_length=FIXED, return_tensors="np"), names) for t in texts[:args.n]]
    batches = [numpy_feed(tokenizer(texts[i:i + 32], padding=True, truncation=True, max_length=FIXED, return_tensors="np"), names)
               for i in range(0, len(texts), 32)]
    options = options_table(runners, singles, batches, args.threads, args.rounds)
    batching = batching_table(onnxrt.session(model, args.threads), tokenizer, texts, args.rounds)
    pd.set_option("display.width", 200)
    print(f"{model}: {len(texts)} sentences, {args.threads} threads, {args.rounds} interleaved rounds\n")
    print(options.round(3).to_string(), "\n")
    print(batching.round(3).to_string())
    if args.json:
        write_json(Path(args.json), {"model": str(model), "options": json.loads(options.to_json(orient="index")),
                                     "batching": json.loads(batching.to_json(orient="index"))})
    return 0


if __name__ == "__main__":
    run_cli(main, "bench_runtime_options")
