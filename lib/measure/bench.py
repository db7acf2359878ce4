"""Measuring models the same way everywhere: batch-1 latency, size on disk, parameter count, the stage-05 child."""
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lib import formats
from lib.core.files import write_json
from lib.core.variants import Variant
from lib.measure import invariance, roofline
from lib.predict import serving
from lib.runtime import onnxrt
from lib.runtime.pytorch import torch_predictor


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def disk_bytes(path) -> int:
    """Bytes on disk of a file or a whole folder (weights, config, tokenizer: what you would ship)."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def weight_bytes(path) -> int:
    """Bytes of the weight files alone (safetensors/bin/onnx/pt), the part compression acts on."""
    path = Path(path)
    files = [path] if path.is_file() else list(path.rglob("*"))
    return sum(f.stat().st_size for f in files if f.suffix in (".safetensors", ".bin", ".onnx", ".pt", ".data"))


def batch1_inputs(tokenizer, texts: list[str], seq_len: int | None = 32, n: int = 64, max_length: int = 128) -> list[dict]:
    """One tokenized real sentence per input; fixed length when seq_len is set, else its natural length."""
    if seq_len:
        enc = [tokenizer(t, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
               for t in texts[:n]]
    else:
        enc = [tokenizer(t, truncation=True, max_length=max_length, return_tensors="pt") for t in texts[:n]]
    return [dict(e) for e in enc]


def latency_ms(predict, inputs: list[dict], threads: int = 2, warmup: int = 10, repeats: int = 3) -> dict:
    """Batch-1 latency over real inputs after warm-up, threads pinned: median, p95, p99 in ms.

    The caller's thread count is restored afterwards: a stage that times on 2 threads must not run
    the rest of its work (a sensitivity scan, training) on 2 threads of a 16-core host."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for inp in inputs[:warmup]:
            predict(inp)
        times = []
        for _ in range(repeats):
            for inp in inputs:
                start = time.perf_counter()
                predict(inp)
                times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(saved)
    arr = np.array(times)
    return {"median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)),
            "p99_ms": float(np.percentile(arr, 99)), "mean_ms": float(arr.mean()), "n": len(times),
            "threads": threads}


def fastest_latency(predicts: dict, inputs: list[dict], threads: int = 2, rounds: int = 2, repeats: int = 3) -> dict:
    """Time several models back to back for `rounds` rounds; each keeps its fastest round.

    Load from other processes only ever adds time, so the fastest round is the figure closest
    to a quiet machine, and interleaving exposes every model to the same background.
    """
    best = {}
    for _ in range(rounds):
        for name, predict in predicts.items():
            lat = latency_ms(predict, inputs, threads=threads, repeats=repeats)
            if name not in best or lat["median_ms"] < best[name]["median_ms"]:
                best[name] = lat
    return best


def torch_sizes_and_latency(models: dict, inputs: list[dict], threads: int) -> pd.DataFrame:
    """models: name -> (model, folder). Layers, params, bytes and fastest-round batch-1 CPU latency, vs the teacher."""
    predicts = {name: torch_predictor(model.cpu()) for name, (model, _) in models.items()}
    runs = fastest_latency(predicts, inputs, threads=threads, rounds=3, repeats=1)
    rows = {name: {"layers": model.config.num_hidden_layers, "params": count_params(model),
                   "disk_bytes": disk_bytes(path), "weight_bytes": weight_bytes(path),
                   "latency_ms": runs[name]["median_ms"]} for name, (model, path) in models.items()}
    df = pd.DataFrame(rows).T
    df["speedup"] = df.loc["teacher", "latency_ms"] / df["latency_ms"]
    df["size_ratio"] = df.loc["teacher", "weight_bytes"] / df["weight_bytes"]
    return df.astype({"layers": int, "params": int, "disk_bytes": int, "weight_bytes": int})


# --- The stage-05 harness: every variant measured the same way, each in a fresh process. ---

def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork+exec, so every
    benchmark subprocess would report the (large) notebook kernel's peak instead of its own.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def batched_logits(predict, tokenizer, sets: dict[str, list[str]], batch_size: int = 32, max_length: int = 128,
                   seed: int = 0) -> tuple[dict, float]:
    """Logits of each named set (batches over a seeded shuffle of the set, put back in input order) and the
    sentences/s of the whole pass, after one warm-up batch."""
    orders = {name: invariance.shuffled(len(texts), seed) for name, texts in sets.items()}
    batches = {name: [dict(tokenizer([texts[j] for j in orders[name][i:i + batch_size]], padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt")) for i in range(0, len(texts), batch_size)]
               for name, texts in sets.items()}
    predict(batches[next(iter(sets))][0])  # warm-up: first call pays one-off allocation and graph set-up
    start = time.perf_counter()
    shuffled = {name: torch.cat([torch.as_tensor(predict(b)).float() for b in bs]).numpy() for name, bs in batches.items()}
    throughput = sum(map(len, sets.values())) / (time.perf_counter() - start)
    return {name: invariance.in_input_order(x, orders[name]) for name, x in shuffled.items()}, throughput


def measure_variant(variant: Variant, out_dir, sets: dict[str, list[str]], threads: int = 2, batch_size: int = 32,
                    latency_n: int = 100, max_length: int = 128, flip_sets: tuple = (), seed: int = 0,
                    flip_gate: invariance.FlipGate | None = None) -> dict:
    """Load time, logits of each named set of texts (batches of 32 over a seeded shuffle of the set, timed together as
    throughput, put back in input order), batch-1 latency on the first set's texts, the batch flips of each set in
    flip_sets (lib.measure.invariance; none where `flip_gate` does not admit the logits), peak memory. Each set is
    batched on its own, so every variant sees the same batches: dynamic INT8 scales activations per batch, and a
    batch straddling two sets would tie their logits."""
    torch.set_num_threads(threads)
    rss_before = peak_rss_mb()
    start = time.perf_counter()
    predict, tokenizer = formats.load(variant, out_dir, threads)
    load_s = time.perf_counter() - start
    logits, throughput = batched_logits(predict, tokenizer, sets, batch_size, max_length, seed)
    first = next(iter(sets))
    # Natural-length real sentences at batch 1: what a production request looks like.
    lat = latency_ms(predict, batch1_inputs(tokenizer, sets[first], seq_len=None, n=latency_n), threads, repeats=2)
    counted = flip_gate is None or flip_gate.admits(logits)
    flips = {name: invariance.batch_flips(predict, batch1_inputs(tokenizer, sets[name], None, len(sets[name]),
                                                                 max_length), logits[name])
             for name in flip_sets if name in sets and counted}
    path, peak_rss = variant.location(out_dir), peak_rss_mb()  # before end_to_end loads a second copy
    del predict
    return {"load_s": load_s, "throughput_per_s": throughput, "latency": lat,
            "logits": {name: x.tolist() for name, x in logits.items()}, "batch_flips": flips,
            "peak_rss_mb": peak_rss, "rss_before_load_mb": rss_before,
            "disk_bytes": disk_bytes(path), "weight_bytes": weight_bytes(path),
            "e2e": end_to_end(path, sets[first], threads, latency_n, batch_size, max_length),
            "useful_macs": useful_macs(variant, path, tokenizer, sets[first], max_length)}


def end_to_end(path, texts: list[str], threads: int = 2, latency_n: int = 100, batch_size: int = 32,
               max_length: int = 128) -> dict:
    """Text in, label out, as `python -m lib.predict` does it (its loader, normalization, tokenizer and length-sorted
    batching): median ms per sentence sent alone over the first latency_n texts (each twice), and sentences/s over
    all of them at batch_size."""
    import os
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # as predict pins the tokenizer's pool, before its first batch
    model = serving.load(Path(path), threads)
    serving.set_truncation(model.tokenizer, max_length)
    warm_up(model, texts)
    ms, per_s, out = served(model, texts[:latency_n] * 2, texts, batch_size)
    return {"latency_median_ms": ms, "throughput_per_s": per_s, "labels": out.tolist()}


def labels(model: serving.Model, texts: list[str], batch_size: int) -> np.ndarray:
    """What predict does with a chunk: normalize, tokenize, classify in length-sorted batches, take the label."""
    return serving.classify(model, serving.encode(model, texts), batch_size).argmax(1)


def warm_up(model: serving.Model, texts: list[str], n: int = 10) -> None:
    """The first n texts, one at a time, untimed: first calls allocate and pick kernels."""
    for text in texts[:n]:
        labels(model, [text], 1)


def served(model: serving.Model, one: list[str], batched: list[str], batch_size: int) -> tuple[float, float, np.ndarray]:
    """End to end through lib.predict.serving: the median ms of each of `one` sent alone, then sentences/s over
    `batched` at batch_size, with its labels."""
    times = []
    for text in one:
        start = time.perf_counter()
        labels(model, [text], 1)
        times.append((time.perf_counter() - start) * 1000)
    start = time.perf_counter()
    out = labels(model, batched, batch_size)
    return float(np.median(times)), len(batched) / (time.perf_counter() - start), out


def useful_macs(variant: Variant, path, tokenizer, texts: list[str], max_length: int = 128) -> float | None:
    """Useful multiply-accumulates per sentence at these texts' real token counts, read from an ONNX graph's
    shapes (lib.measure.roofline); None for the formats that have no graph to read."""
    if variant.format != "onnx":
        return None
    lengths = [len(ids) for ids in tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]]
    return roofline.macs_per_sentence(onnxrt.model_file(path), lengths)["total"]


@torch.inference_mode()
def gpu_throughput(variant: Variant, out_dir, texts: list[str], device, batch_size: int = 32, max_length: int = 128):
    """Sentences/s at batch 32 under bf16 autocast on `device`: the bulk-scoring figure; None for CPU-only formats."""
    model = formats.load_torch(variant, out_dir, attn_implementation="sdpa")
    if model is None:
        return None
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(variant.location(out_dir))
    model.to(device).eval()
    batches = [{k: v.to(device) for k, v in tokenizer(texts[i:i + batch_size], padding=True, truncation=True,
                                                         max_length=max_length, return_tensors="pt").items()}
               for i in range(0, len(texts), batch_size)]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        model(**batches[0])  # warm-up: kernel selection and allocator growth
        sync()
        start = time.perf_counter()
        for b in batches:
            model(**b)
        sync()
    return len(texts) / (time.perf_counter() - start)


def measure_to_file(variant: Variant, out_dir, texts_json, result_json, threads: int, latency_n: int,
                    flip_sets: tuple = (), seed: int = 0, flip_gate: invariance.FlipGate | None = None) -> None:
    """Child-process entry of the stage-05 harness: measure one variant on the named sets of texts in texts_json
    ({set: [text, ...]}), write its result or its error as JSON."""
    write_result(result_json, lambda: measure_variant(
        variant, out_dir, json.loads(Path(texts_json).read_text()), threads=threads, latency_n=latency_n,
        flip_sets=tuple(flip_sets), seed=seed, flip_gate=flip_gate))


def write_result(result_json, compute) -> None:
    """compute()'s result as JSON, or its error in one line for the parent to report with the variant's name."""
    try:
        result = compute()
    except Exception as e:  # reported by the parent as one line naming the variant
        result = {"error": f"{type(e).__name__}: {e}"}
    write_json(Path(result_json), result)


def logits_to_file(variant: Variant, out_dir, texts_json, result_json, threads: int, seed: int = 0) -> None:
    """Child-process entry for a model scored only (a training seed's twin, lib.core.seeds.twins): the logits of
    each named set, batched exactly as measure_variant batches them; its result or its error as JSON."""
    def logits() -> dict:
        torch.set_num_threads(threads)
        predict, tokenizer = formats.load(variant, out_dir, threads)
        out, _ = batched_logits(predict, tokenizer, json.loads(Path(texts_json).read_text()), seed=seed)
        return {"logits": {name: x.tolist() for name, x in out.items()}}
    write_result(result_json, logits)
