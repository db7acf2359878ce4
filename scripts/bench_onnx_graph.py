"""Batch-1 latency of one pruned model's ONNX Runtime INT8 graph: torch.onnx's export vs lib.runtime.onnx_graph's fused one.

    python scripts/bench_onnx_graph.py [PRUNED_DIR] [--out-dir .] [--threads 2]

Both graphs hold the same weights and are quantized with the same FP32-kept groups: the ones stage 03 kept for
PyTorch INT8 of the model PRUNED_DIR was pruned from (read from OUT_DIR/reports), then none. They are timed in
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
from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core.files import read_json  # noqa: E402
from lib.core.variants import Variant  # noqa: E402
from lib.measure import bench  # noqa: E402
from lib.runtime import onnxrt  # noqa: E402
from lib.techniques import prune, quantize as q  # noqa: E402


def median_ms(sess, feeds, threads: int) -> float:
    """One round: bench.latency_ms's warm-up and timing, straight on the session (no torch conversion)."""
    return bench.latency_ms(lambda f: sess.run(None, f), feeds, threads=threads, warmup=20, repeats=1)["median_ms"]


def stage03_groups(out_dir: Path, pruned_dir: Path) -> tuple[str, list[str]]:
    """The model a pruned folder was pruned from (stage 04's report) and the groups stage 03 kept FP32 for it."""
    reports = out_dir / "reports"
    listed = [Variant.from_dict(v) for v in read_json(reports / "04_pruning.json", "stage 04 report").get("variants", [])]
    sources = {v.location(out_dir).resolve(): v.source for v in listed}
    source = sources.get(pruned_dir.resolve())
    if source is None:
        raise FinCompressError(f"{pruned_dir} is not a model listed in {reports / '04_pruning.json'}; pass a folder "
                               "stage 04 wrote, e.g. checkpoints/pruned/student_50")
    models = {m["name"]: m for m in read_json(reports / "03_quantization.json", "stage 03 report")["metrics"]["models"]}
    if source not in models:
        raise FinCompressError(f"stage 03 did not quantize {source} (it quantized {', '.join(models)}); re-run it with "
                               "that model (python run_all.py --only 03)")
    return source, models[source]["keep_fp32_groups"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pruned_dir", nargs="?", default="checkpoints/pruned/student_50")
    ap.add_argument("--out-dir", default=".", help="run_all's out dir, whose reports/ name the FP32 groups")
    ap.add_argument("--test-csv", default="data/test.csv")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not Path(args.test_csv).is_file():
        raise FinCompressError(f"{args.test_csv} not found; run stage 01 first or pass --test-csv")
    source, kept = stage03_groups(Path(args.out_dir), Path(args.pruned_dir))
    model, tok = prune.load_pruned(args.pruned_dir), AutoTokenizer.from_pretrained(args.pruned_dir)
    texts = pd.read_csv(args.test_csv)["text"].astype(str).tolist()
    feeds = [{k: v.numpy() for k, v in tok(t, return_tensors="pt").items() if k in q.INPUT_NAMES} for t in texts[:200]]
    example = q.example_inputs(tok, texts[:8])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for graph in ("torch_onnx", "fused"):
            q.export_onnx(model, example, tmp / f"{graph}.onnx", fused=graph == "fused")
        for label, groups in [(f"stage 03's PyTorch FP32 groups of {source} ({', '.join(kept) or 'none'})", kept),
                              ("all INT8", [])]:
            sessions = {}
            for graph in ("torch_onnx", "fused"):
                q.quantize_onnx(tmp / f"{graph}.onnx", tmp / f"{graph}_int8.onnx",
                                q.QuantConfig(keep_fp32=tuple(q.modules_in(model, groups))))
                sessions[graph] = onnxrt.session(tmp / f"{graph}_int8.onnx", args.threads)
            rounds = {g: [] for g in sessions}
            for _ in range(3):
                for g, s in sessions.items():
                    rounds[g].append(median_ms(s, feeds, args.threads))
            a, b = np.median(rounds["torch_onnx"]), np.median(rounds["fused"])
            print(f"{label}: torch.onnx graph {a:.3f} ms, fused graph {b:.3f} ms median batch-1 ({a / b:.2f}x); "
                  f"rounds {[round(x, 3) for x in rounds['torch_onnx']]} vs {[round(x, 3) for x in rounds['fused']]}")


if __name__ == "__main__":
    run_cli(main, "bench_onnx_graph")
