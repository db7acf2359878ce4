"""This CPU's matmul peak as ONNX Runtime reaches it, and the share of it a BERT ONNX model uses at batch 32.

    python scripts/int8_peak.py [--model DIR ...] [--texts data/val.csv] [--threads 2] [--seconds 1]

Peak: one large MatMulInteger (uint8 x int8 -> int32) and one FP32 MatMul per shape, the weight constant
(pre-packed, as in a model), the fastest run within --seconds; the best shape is the peak, in GOP/s
(2 ops per multiply-accumulate). Per model (a folder with model.onnx and its tokenizer): useful MACs per
sentence at the sentences' real token counts (lib.measure.roofline.macs_per_sentence), batch-32
model-only throughput (padding to each batch's longest, in file order and length-sorted, interleaved)
and the share of the INT8 peak those sentences per second represent.
"""
import argparse
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
from lib.data import batching  # noqa: E402
from lib.measure import roofline as rt  # noqa: E402
from lib.runtime import onnxrt  # noqa: E402


def peaks(threads: int, seconds: float) -> dict:
    out = {kind: rt.peak_gops(kind, threads, seconds=seconds) for kind in ("int8", "fp32")}
    for kind, p in out.items():
        shapes = ", ".join(f"{s} {g:.0f}" for s, g in p["per_shape"].items())
        print(f"{kind} peak, {threads} threads: {p['gops']:.0f} GOP/s at M x K x N = {p['shape']}  ({shapes})")
    return out


def model_share(model_dir: Path, texts: list[str], peak: dict, threads: int, rounds: int = 5) -> dict:
    """MACs per sentence, batch-32 throughput (file order and length-sorted) and share of the INT8 peak."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sess = onnxrt.session(model_dir / ONNX_FILE, threads)
    names = [i.name for i in sess.get_inputs()]
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=128)["input_ids"]]
    macs = rt.macs_per_sentence(model_dir / ONNX_FILE, lengths)

    def feeds(batches):
        return [{n: np.asarray(b[n], dtype=np.int64) for n in names} for b in batches]
    in_order = feeds(tokenizer(texts[i:i + 32], padding=True, truncation=True, max_length=128, return_tensors="np")
                     for i in range(0, len(texts), 32))
    by_length = feeds(tokenizer(batch, padding=True, truncation=True, max_length=128, return_tensors="np")
                      for batch in batching.length_sorted(tokenizer, texts, 32))
    secs = rt.interleaved_seconds({"file order": lambda: [sess.run(None, f) for f in in_order],
                                   "length-sorted": lambda: [sess.run(None, f) for f in by_length]}, rounds)
    out = {"model": str(model_dir), "macs_per_sentence": macs}
    for name, s in secs.items():
        sps = len(texts) / float(np.median(s))
        out[name] = {"sent_per_s": sps, "share_int8_peak": rt.share_of_peak(macs["total"], sps, peak["int8"]["gops"]),
                     "share_fp32_peak": rt.share_of_peak(macs["total"], sps, peak["fp32"]["gops"])}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], help="ONNX variant folder (model.onnx + tokenizer)")
    ap.add_argument("--texts", default="data/val.csv", help="CSV with a text column: real sentences")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=1.0, help="time spent on each peak shape")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    check_range("--threads", args.threads, 1)
    check_range("--seconds", args.seconds, 0, low_open=True)
    for m in args.model:
        if not (Path(m) / ONNX_FILE).is_file():
            raise FinCompressError(f"{m} holds no {ONNX_FILE}; pass an ONNX variant folder")
    if args.model and not Path(args.texts).is_file():
        raise FinCompressError(f"{args.texts} not found; pass --texts CSV with a text column")
    peak = peaks(args.threads, args.seconds)
    texts = pd.read_csv(args.texts)["text"].astype(str).tolist() if args.model else []
    models = [model_share(Path(m), texts, peak, args.threads) for m in args.model]
    for r in models:
        m = r["macs_per_sentence"]
        print(f"\n{r['model']}: {m['total'] / 1e6:.2f} M useful MACs per sentence ({m['mean_tokens']:.1f} tokens; "
              f"linear {m['linear'] / 1e6:.2f} M, attention scores+context {m['attention'] / 1e6:.2f} M, head {m['head'] / 1e6:.2f} M)")
        for name in ("file order", "length-sorted"):
            print(f"  batch 32, {name}: {r[name]['sent_per_s']:.0f} sentences/s = {100 * r[name]['share_int8_peak']:.1f}% "
                  f"of the INT8 peak ({100 * r[name]['share_fp32_peak']:.1f}% of the FP32 peak)")
    if args.json:
        write_json(Path(args.json), {"peak": peak, "models": models})
    return 0


if __name__ == "__main__":
    run_cli(main, "int8_peak")
