"""Re-time every stage-03 variant against its FP32 source (CPU, batch 1, real sentences at stage 03's length).

    python scripts/bench_quantize.py OUT_DIR [--threads 2] [--n 64]

F1, sizes and the goals come from OUT_DIR/reports/03_quantization.json (the goals are that run's parameters);
latency is measured again here, from the artifacts on disk, so the figures can be re-checked on a quiet machine.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lib import formats  # noqa: E402
from lib.core import goals, variants  # noqa: E402
from lib.core.cli import run_cli  # noqa: E402
from lib.core.files import read_json  # noqa: E402
from lib.core.params import check_range  # noqa: E402
from lib.data.corpus import load_splits  # noqa: E402
from lib.measure import bench  # noqa: E402

HEADER = f"{'variant':30} {'F1':>7} {'FP32 F1':>7} {'test Δ':>7} {'disk bytes':>11} {'params':>10} {'ms':>7} {'speedup':>7} {'size x':>6}  goals"


def bench_model(model: dict, listed: list[variants.Variant], out: Path, texts: list[str], gs: list, args) -> None:
    """The FP32 source, then each of its variants, timed in turn on the same inputs."""
    src = Path(model["fp32"]["path"])
    fp32 = variants.Variant(model["name"], "hf", str(src if src.is_absolute() else out / src))
    predict, tok = formats.load(fp32, threads=args.threads)
    inputs = bench.batch1_inputs(tok, texts, args.seq_len, args.n)
    base = bench.latency_ms(predict, inputs, threads=args.threads)["median_ms"]
    print(f"{model['name'] + ' FP32 torch':30} {model['fp32']['test_macro_f1']:7.4f} {'':7} {'':7} "
          f"{model['fp32']['disk_bytes']:11d} {model['fp32']['params']:10d} {base:7.2f}")
    for v in (v for v in listed if v.name in model["variants"].values()):
        predict, _ = formats.load(v, out, args.threads)
        ms = bench.latency_ms(predict, inputs, threads=args.threads)["median_ms"]
        m = {**v.metrics, "speedup": base / ms}  # goals read val_delta_pts, as stage 03 judged them
        met = goals.all_met(gs, m)
        print(f"{v.name:30} {m['test_macro_f1']:7.4f} {m['fp32_test_macro_f1']:7.4f} {m['test_delta_pts']:+7.2f} "
              f"{m['disk_bytes']:11d} {m['params']:10d} {ms:7.2f} {base / ms:7.2f} {m['size_ratio']:6.2f}  "
              f"{'MET' if met else 'not met'}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir", help="the --out-dir stage 03 wrote to")
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads for torch and ONNX Runtime")
    ap.add_argument("--n", type=int, default=64, help="test sentences timed (each 3 times after warm-up)")
    args = ap.parse_args(argv)
    check_range("--threads", args.threads, 1)
    check_range("--n", args.n, 1)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()  # a table on stdout, not load bars
    out = Path(args.out_dir).resolve()
    report = read_json(out / "reports" / "03_quantization.json", "stage 03 metrics")
    params = report["run_info"]["params"]
    args.seq_len = params["latency_seq_len"]
    gs = goals.from_params(params, ref="its FP32 source")
    listed = [variants.Variant.from_dict(v) for v in report["variants"]]
    texts = load_splits(out / "data")["test"]["text"].astype(str).tolist()
    print(f"goals: {'; '.join(g.text for g in gs)}; {args.threads} threads, batch 1, {args.seq_len} tokens")
    print(HEADER)
    for model in report["metrics"]["models"]:
        bench_model(model, listed, out, texts, gs, args)
    return 0


if __name__ == "__main__":
    run_cli(main, "bench_quantize")
