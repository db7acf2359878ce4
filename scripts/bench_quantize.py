"""Re-time every stage-03 variant against its FP32 source (CPU, batch 1, 32-token real sentences).

    python scripts/bench_quantize.py OUT_DIR [--threads 2] [--n 64]

F1 and sizes come from OUT_DIR/reports/03_quantization.json; latency is measured again here, from the
artifacts on disk, so the figures can be re-checked on a quiet machine.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import bench, quantize as q  # noqa: E402
from lib.common import check_range, read_json, run_cli  # noqa: E402
from lib.data import load_splits  # noqa: E402
from lib.quantize_study import GOALS, load_fp32  # noqa: E402

HEADER = f"{'variant':30} {'F1':>7} {'FP32 F1':>7} {'drop pt':>7} {'disk bytes':>11} {'params':>10} {'ms':>7} {'speedup':>7} {'size x':>6}  goals"


def bench_model(model: dict, out: Path, texts: list[str], threads: int, n: int) -> None:
    src = Path(model["fp32"]["path"])
    fp32, tok = load_fp32(src if src.is_absolute() else out / src)
    inputs = bench.batch1_inputs(tok, texts, 32, n)
    base = bench.latency_ms(q.torch_predict(fp32), inputs, threads=threads)["median_ms"]
    print(f"{model['name'] + ' FP32 torch':30} {model['fp32']['test_macro_f1']:7.4f} {'':7} {'':7} "
          f"{model['fp32']['disk_bytes']:11d} {model['fp32']['params']:10d} {base:7.2f}")
    for v in model["variants"]:
        path = out / v["path"]
        predict, _ = q.load_onnx(path, threads) if v["format"] == "onnx" else q.load_torch_int8(path)
        ms = bench.latency_ms(predict, inputs, threads=threads)["median_ms"]
        met = (v["f1_drop_pts"] <= GOALS["max_f1_drop_pts"] and base / ms >= GOALS["min_speedup"]
               and v["size_ratio"] >= GOALS["min_size_ratio"])
        print(f"{v['name']:30} {v['test_macro_f1']:7.4f} {v['fp32_test_macro_f1']:7.4f} {v['f1_drop_pts']:7.2f} "
              f"{v['disk_bytes']:11d} {v['params']:10d} {ms:7.2f} {base / ms:7.2f} {v['size_ratio']:6.2f}  "
              f"{'MET' if met else 'not met'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="the --out-dir stage 03 wrote to")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime")
    ap.add_argument("--n", type=int, default=64, help="test sentences timed (each 3 times after warm-up)")
    args = ap.parse_args(argv)
    check_range("--threads", args.threads, 1)
    check_range("--n", args.n, 1)
    out = Path(args.out_dir).resolve()
    report = read_json(out / "reports" / "03_quantization.json", "stage 03 metrics")
    texts = load_splits(out / "data")["test"]["text"].astype(str).tolist()
    print(f"goals: F1 drop <= {GOALS['max_f1_drop_pts']} pt, size >= {GOALS['min_size_ratio']}x smaller, "
          f"latency >= {GOALS['min_speedup']}x faster than FP32 PyTorch; {args.threads} threads, batch 1, 32 tokens")
    print(HEADER)
    for model in report["metrics"]["models"]:
        bench_model(model, out, texts, args.threads, args.n)
    return 0


if __name__ == "__main__":
    run_cli(main, "bench_quantize")
