"""Which ops stay INT8 once ONNX Runtime has loaded a statically quantized fused BERT graph, per format.

    python scripts/static_int8_graphs.py ONNX_DIR [--texts data/test.csv] [--calib data/train.csv] [--threads 2]

ONNX_DIR holds an FP32 model.onnx written by lib.runtime.onnx_graph (fused com.microsoft.Attention) and its
tokenizer. Each recipe below is quantized from the same MinMax calibration, loaded with
ORT_ENABLE_EXTENDED (the optimized graph ORT writes at ALL adds machine-specific layouts), and reported
as the op types ORT runs (so which fusions happened), max |logit diff| against FP32, labels that move
between batch 1 and batch 32, and batch-1 latency (interleaved rounds, natural-length test sentences).
"""
import argparse
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from transformers import AutoTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core.variants import ONNX_FILE  # noqa: E402
from lib.measure import bench  # noqa: E402
from lib.runtime import onnxrt  # noqa: E402
from lib.techniques import quantize as q, quantize_static as qs  # noqa: E402

OPS = ["QAttention", "Attention", "MatMulIntegerToFloat", "QLinearMatMul", "DynamicQuantizeMatMul", "MatMul",
       "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"]
FP32_OUT = {"OpTypesToExcludeOutputQuantization": ["MatMul"], "MatMulConstBOnly": True}


def ort_recipe(fmt: str, op_types, extra=None):
    """A plain quantize_static call (no isolation, no QAttention rewrite), from the cached MinMax ranges."""
    def make(src: Path, dst: Path, cache: Path):
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        logging.getLogger().setLevel(logging.ERROR)  # a pre-processing hint at WARNING on every call
        quantize_static(str(src), str(dst), None, quant_format=getattr(QuantFormat, fmt), op_types_to_quantize=op_types,
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.MinMax, calibration_cache_path=str(cache),
                        nodes_to_exclude=["bert.pooler/cls"], extra_options=extra or {})
    return make


def recipes(feeds) -> dict:
    return {"QDQ, ORT's default op types": ort_recipe("QDQ", None),
            "QDQ MatMul+Gather+Attention": ort_recipe("QDQ", ["MatMul", "Gather", "Attention"]),
            "QDQ MatMul+Gather, outputs quantized": ort_recipe("QDQ", ["MatMul", "Gather"]),
            "QDQ MatMul+Gather, FP32 outputs": ort_recipe("QDQ", ["MatMul", "Gather"], FP32_OUT),
            "QOperator MatMul+Gather": ort_recipe("QOperator", ["MatMul", "Gather"]),
            "ours: QDQ, FP32 outputs+residual, static QAttention":
                lambda src, dst, cache: q.quantize_onnx(src, dst, q.QuantConfig("static"), qs.ranges_for(src, feeds)),
            "dynamic INT8 (today's default)": lambda src, dst, cache: q.quantize_onnx(src, dst)}


def logits(sess, tokenizer, texts, size):
    names = [i.name for i in sess.get_inputs()]
    return np.concatenate([sess.run(None, {n: e[n] for n in names})[0] for e in
                           (tokenizer(texts[i:i + size], padding=True, return_tensors="np") for i in range(0, len(texts), size))])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx_dir")
    ap.add_argument("--texts", default="data/test.csv")
    ap.add_argument("--calib", default="data/train.csv")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    src = Path(args.onnx_dir) / ONNX_FILE
    if not src.is_file() or not Path(args.texts).is_file() or not Path(args.calib).is_file():
        raise FinCompressError(f"need {src}, {args.texts} and {args.calib}; pass an FP32 ONNX folder and CSV files")
    tok = AutoTokenizer.from_pretrained(args.onnx_dir)
    texts = pd.read_csv(args.texts)["text"].astype(str).tolist()[:128]
    feeds = qs.calibration_inputs(tok, pd.read_csv(args.calib)["text"].astype(str).tolist())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        from onnxruntime.quantization.calibrate import save_tensors_data
        save_tensors_data(qs.calibrate(src, feeds, "minmax", op_types=None), tmp / "ranges.json")  # every tensor
        fp32 = logits(onnxrt.session(src, args.threads), tok, texts, 32)
        rows, sessions = [], {"FP32": onnxrt.session(src, args.threads)}
        for name, make in recipes(feeds).items():
            make(src, tmp / f"{len(rows)}.onnx", tmp / "ranges.json")
            sess = sessions[name] = onnxrt.session(tmp / f"{len(rows)}.onnx", args.threads)
            ops = qs.loaded_ops(tmp / f"{len(rows)}.onnx")
            one, many = logits(sess, tok, texts, 1), logits(sess, tok, texts, 32)
            rows.append({"recipe": name, **{o: ops.get(o, 0) for o in OPS}, "summary": qs.int8_summary(ops),
                         "max_diff_vs_fp32": float(np.abs(many - fp32).max()), "flips_b1_vs_b32": int((one.argmax(1) != many.argmax(1)).sum())})
        singles = [{n: e[n] for n in ("input_ids", "attention_mask", "token_type_ids")}
                   for e in (tok(t, return_tensors="np") for t in texts[:64])]
        lat = bench.fastest_latency({n: (lambda f, s=s: s.run(None, f)) for n, s in sessions.items()}, singles,
                                    threads=args.threads, rounds=args.rounds, repeats=2)
    df = pd.DataFrame(rows).set_index("recipe")
    df["batch1_ms"] = [lat[n]["median_ms"] for n in df.index]
    pd.set_option("display.width", 250)
    print(f"FP32 batch-1 median {lat['FP32']['median_ms']:.3f} ms; ops as loaded (ORT_ENABLE_EXTENDED):\n")
    print(df.drop(columns="summary").round(4).to_string(), "\n")
    for name, line in df["summary"].items():
        print(f"{name}: {line}")
    return 0


if __name__ == "__main__":
    run_cli(main, "static_int8_graphs")
