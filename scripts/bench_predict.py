"""Serving figures of the shipped model through `python -m lib.predict`, as a user runs it: process start to
first prediction, sentences/s on real sentences via --csv --truncate (tokenization and JSON output included), peak RSS.

    python scripts/bench_predict.py                                  # artifacts/model, data/ of the same run
    python scripts/bench_predict.py --model /path/artifacts/model --data-dir /path/data --n 10000
    python scripts/bench_predict.py --levers     # also: what each of predict's speed levers gains, in one process

Goals (issue 16): start-up < 1.5 s, >= 1,000 sentences/s end to end at batch 32 on 2 threads, peak RSS < 250 MB.
Imports nothing heavy itself, so the children's peak RSS (which Linux counts from this process's at fork) is theirs.
"""
import argparse
import csv
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from lib.core.variants import SHIPPED_MODEL  # noqa: E402  (a record and file names: no numpy, no ONNX Runtime)

GOALS = {"startup_s": 1.5, "sentences_per_s": 1000, "peak_rss_mb": 250}


def real_sentences(data_dir: Path, n: int) -> list[str]:
    """n sentences from the run's splits (train, val, test), repeated in order as needed."""
    texts = []
    for split in ("train", "val", "test"):
        with open(data_dir / f"{split}.csv", encoding="utf-8", newline="") as f:
            texts += [r["text"] for r in csv.DictReader(f)]
    if not texts:
        sys.exit(f"bench_predict: error: {data_dir} has no sentences in train/val/test.csv")
    return (texts * (n // len(texts) + 1))[:n]


def predict_cmd(model: Path, *args) -> list[str]:
    return [sys.executable, "-m", "lib.predict", "--model", str(model), "--json", *map(str, args)]


def startup_s(model: Path, threads: int) -> float:
    """Wall time from spawning the process to reading its first prediction."""
    start = time.perf_counter()
    proc = subprocess.Popen(predict_cmd(model, "--threads", threads, "Operating profit rose to EUR 13.1 mn"),
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()
    elapsed = time.perf_counter() - start
    _, err = proc.communicate()
    if proc.returncode or not first:
        sys.exit(f"bench_predict: error: predict failed: {err.strip()}")
    return elapsed


def throughput(model: Path, csv_path: Path, n: int, batch_size: int, threads: int) -> tuple[float, float]:
    """(sentences/s of the whole process: start-up, reading, tokenizing, the model, JSON lines out; CPU seconds)."""
    cpu = cpu_s()
    start = time.perf_counter()
    # --truncate: a few real posts exceed 128 tokens; stage 05 scores them cut to 128 too
    proc = subprocess.run(predict_cmd(model, "--csv", csv_path, "--truncate", "--batch-size", batch_size, "--threads", threads),
                          cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"bench_predict: error: predict failed: {proc.stderr.strip()}")
    return n / elapsed, cpu_s() - cpu


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def levers(model: Path, texts: list[str], batch_size: int, threads: int, rounds: int = 3) -> None:
    """predict's speed levers A/B in one process on the same sentences, configurations alternated so they share
    the machine's load: padding to 128 vs to the batch's longest, input order vs sorted by length, and the
    model folder's serving settings (serving.json, chosen by stage 05) vs ONNX Runtime's defaults."""
    import numpy as np
    from lib.predict import serving
    from lib.runtime import onnxrt
    loaded = serving.load(model, threads)
    tokenizer, pad_id = loaded.tokenizer, loaded.pad_id
    serving.set_truncation(tokenizer, 128)
    enc = tokenizer.encode_batch(texts)
    by_length = sorted(range(len(enc)), key=lambda i: len(enc[i].ids))
    configs = {"pad to 128, input order, ORT defaults": (True, False, True),
               "pad to longest, input order, ORT defaults": (False, False, True),
               "pad to longest, sorted, ORT defaults": (False, True, True),
               "pad to longest, sorted, serving.json (predict)": (False, True, False)}
    times = {k: [] for k in configs}
    found = onnxrt.model_file(model)
    served = serving.settings_of(found.parent)._replace(threads=threads)
    sessions = {defaults: onnxrt.predictor(onnxrt.session(found, threads, None if defaults else served))
                for defaults in (True, False)}
    for _ in range(rounds):
        for name, (fixed, ordered, defaults) in configs.items():
            order = by_length if ordered else list(range(len(enc)))
            start, cpu = time.perf_counter(), time.process_time()
            for i in range(0, len(order), batch_size):
                batch = serving.pad([enc[j] for j in order[i:i + batch_size]], pad_id)
                if fixed:
                    batch = {k: np.pad(v, ((0, 0), (0, 128 - v.shape[1])), constant_values=pad_id if k == "input_ids" else 0)
                             for k, v in batch.items()}
                sessions[defaults](batch)
            times[name].append((time.perf_counter() - start, time.process_time() - cpu))
    print(f"levers, model only, {len(texts)} sentences, batch {batch_size}, {threads} threads, median of {rounds}:")
    for name, t in times.items():
        wall, cpu = statistics.median(w for w, _ in t), statistics.median(c for _, c in t)
        print(f"  {name:48s} {len(texts) / wall:7.0f} sentences/s  {len(texts) / cpu:7.0f} per CPU-second")


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, load average (1/5/15 min) {load}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=REPO / SHIPPED_MODEL)
    p.add_argument("--data-dir", type=Path, help="folder with train/val/test.csv (default: data/ beside artifacts/)")
    p.add_argument("--n", type=int, default=10_000, help="sentences for the throughput run")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="start-up and throughput runs; medians are reported")
    p.add_argument("--levers", action="store_true", help="then time each speed lever of predict in one process")
    a = p.parse_args()
    data_dir = a.data_dir or a.model.resolve().parent.parent / "data"
    print(f"model {a.model}\nmachine: {machine()}")
    texts = real_sentences(data_dir, a.n)
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = Path(tmp) / "sentences.csv"
        with open(csv_path, "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([["text"], *([t] for t in texts)])
        starts = [startup_s(a.model, a.threads) for _ in range(a.repeats)]
        runs = [throughput(a.model, csv_path, a.n, a.batch_size, a.threads) for _ in range(a.repeats)]
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest of every child above
    rates = [r for r, _ in runs]
    figures = {"startup_s": statistics.median(starts), "sentences_per_s": statistics.median(rates), "peak_rss_mb": rss}
    print(f"start-up to first prediction: median {figures['startup_s']:.3f} s (runs: {', '.join(f'{s:.3f}' for s in starts)})")
    print(f"sentences/s, {a.n} real sentences via --csv, batch {a.batch_size}, {a.threads} threads, end to end: median "
          f"{figures['sentences_per_s']:.0f} (runs: {', '.join(f'{r:.0f}' for r in rates)}); "
          f"{a.n / statistics.median(c for _, c in runs):.0f} sentences per CPU-second")
    print(f"peak RSS of any predict process: {rss:.0f} MB")
    print(f"machine after: {machine()}")
    for k, goal in GOALS.items():
        ok = figures[k] >= goal if k == "sentences_per_s" else figures[k] < goal
        print(f"{'MET' if ok else 'NOT MET'}: {k} {figures[k]:.3g} (goal {'>=' if k == 'sentences_per_s' else '<'} {goal})")
    if a.levers:
        levers(a.model, texts[:2048], a.batch_size, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
