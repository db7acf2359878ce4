"""Batch-1 latency of one pruned model's ONNX Runtime INT8 graph: torch.onnx's export vs lib.onnx_graph's fused one.

    python scripts/bench_onnx_graph.py [PRUNED_DIR] [--threads 2]

Both graphs hold the same weights and are quantized with the same FP32-kept groups; they are timed in
turn, three rounds of 200 real test sentences each, so machine noise hits both alike.
"""
import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib import bench, onnx_runtime, prune, quantize as q  # noqa: E402
from lib.common import FinCompressError, run_cli  # noqa: E402


def median_ms(sess, feeds, threads: int) -> float:
    """One round: bench.latency_ms's warm-up and timing, straight on the session (no torch conversion)."""
    return bench.latency_ms(lambda f: sess.run(None, f), feeds, threads=threads, warmup=20, repeats=1)["median_ms"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pruned_dir", nargs="?", default="checkpoints/pruned/student_50")
    ap.add_argument("--test-csv", default="data/test.csv")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not Path(args.test_csv).is_file():
        raise FinCompressError(f"{args.test_csv} not found; run stage 01 first or pass --test-csv")
    model, tok = prune.load_pruned(args.pruned_dir), AutoTokenizer.from_pretrained(args.pruned_dir)
    texts = pd.read_csv(args.test_csv)["text"].astype(str).tolist()
    feeds = [{k: v.numpy() for k, v in tok(t, return_tensors="pt").items() if k in q.INPUT_NAMES} for t in texts[:200]]
    example = q.example_inputs(tok, texts[:8])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for graph in ("torch_onnx", "fused"):
            q.export_onnx(model, example, tmp / f"{graph}.onnx", fused=graph == "fused")
        for label, groups in [("stage 03's PyTorch FP32 groups", ["L0 ffn_out", "L0 ffn_in", "L1 ffn_in"]),
                              ("all INT8", [])]:
            sessions = {}
            for graph in ("torch_onnx", "fused"):
                q.quantize_onnx(tmp / f"{graph}.onnx", tmp / f"{graph}_int8.onnx", q.modules_in(model, groups))
                sessions[graph] = onnx_runtime.session(tmp / f"{graph}_int8.onnx", args.threads)
            rounds = {g: [] for g in sessions}
            for _ in range(3):
                for g, s in sessions.items():
                    rounds[g].append(median_ms(s, feeds, args.threads))
            a, b = np.median(rounds["torch_onnx"]), np.median(rounds["fused"])
            print(f"{label}: torch.onnx graph {a:.3f} ms, fused graph {b:.3f} ms median batch-1 ({a / b:.2f}x); "
                  f"rounds {[round(x, 3) for x in rounds['torch_onnx']]} vs {[round(x, 3) for x in rounds['fused']]}")


if __name__ == "__main__":
    run_cli(main, "bench_onnx_graph")
