"""Measuring models the same way everywhere: batch-1 latency, size on disk, parameter count."""
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch


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


def batch1_inputs(tokenizer, texts: list[str], seq_len: int | None = 32, n: int = 64) -> list[dict]:
    """One tokenized real sentence per input; fixed length when seq_len is set, else its natural length."""
    if seq_len:
        enc = [tokenizer(t, padding="max_length", truncation=True, max_length=seq_len, return_tensors="pt")
               for t in texts[:n]]
    else:
        enc = [tokenizer(t, truncation=True, max_length=512, return_tensors="pt") for t in texts[:n]]
    return [dict(e) for e in enc]


def torch_predict_fn(model):
    """Wrap a PyTorch classifier as inputs -> logits for the timing harness."""
    model.eval()

    @torch.inference_mode()
    def predict(inputs: dict):
        return model(**inputs).logits
    return predict


def latency_ms(predict, inputs: list[dict], threads: int = 2, warmup: int = 10, repeats: int = 3) -> dict:
    """Batch-1 latency over real inputs after warm-up, threads pinned: median, p95, p99 in ms."""
    torch.set_num_threads(threads)
    for inp in inputs[:warmup]:
        predict(inp)
    times = []
    for _ in range(repeats):
        for inp in inputs:
            start = time.perf_counter()
            predict(inp)
            times.append((time.perf_counter() - start) * 1000)
    arr = np.array(times)
    return {"median_ms": float(np.median(arr)), "p95_ms": float(np.percentile(arr, 95)),
            "p99_ms": float(np.percentile(arr, 99)), "mean_ms": float(arr.mean()), "n": len(times),
            "threads": threads}
