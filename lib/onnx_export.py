"""ONNX variants on disk: an FP32 export kept only if it matches PyTorch, and ORT INT8 of a saved FP32 graph."""
from pathlib import Path

import torch

from lib import quantize as q
from lib.common import FinCompressError, atomic_dir, write_json
from lib.variants import ONNX_FILE


def save_onnx_fp32(name, model, tokenizer, texts, qdir, tol) -> tuple[Path, dict]:
    """FP32 ONNX export to qdir/<name>_onnx_fp32, kept only if it matches PyTorch on a padded batch of real sentences."""
    fp32_dir, example = qdir / f"{name}_onnx_fp32", q.example_inputs(tokenizer, texts)
    with atomic_dir(fp32_dir) as tmp:
        q.export_onnx(model, example, tmp / ONNX_FILE)
        tokenizer.save_pretrained(tmp)
        predict, _ = q.load_onnx(tmp)
        with torch.inference_mode():
            parity = q.logit_diff(predict(example), model(**example).logits)
        if parity["max_abs_diff"] > tol:
            raise FinCompressError(f"ONNX export of {name} disagrees with PyTorch (max |logit diff| "
                                   f"{parity['max_abs_diff']:.2e} > {tol:g}); the export is wrong, not saved")
        write_json(tmp / "parity.json", parity)
    return fp32_dir, parity | {"batch_shape": list(example["input_ids"].shape)}


def save_onnx_int8(name, fp32_dir: Path, tokenizer, qdir, keep_mods) -> Path:
    """ORT dynamic INT8 of a saved FP32 ONNX graph to qdir/<name>_onnx_int8, keep_mods left FP32."""
    with atomic_dir(qdir / f"{name}_onnx_int8") as tmp:
        q.quantize_onnx(fp32_dir / ONNX_FILE, tmp / ONNX_FILE, keep_mods)
        tokenizer.save_pretrained(tmp)
    return qdir / f"{name}_onnx_int8"
