"""OpenVINO variants of a stacked model, made from its FP32 ONNX export: the FP32 IR (OpenVINO's ONNX frontend reads
lib.runtime.onnx_graph's com.microsoft.Attention; ORT's INT8 graphs, with QAttention, it cannot), its bf16-execution
twin (same files, another setting), and NNCF post-training INT8 calibrated on training sentences."""
import logging
import os
import shutil
from pathlib import Path

import numpy as np

from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir, write_json
from lib.core.manifest import MANIFEST
from lib.core.variants import INPUT_NAMES, ONNX_FILE, OPENVINO_FILE
from lib.modeling.device import quiet
from lib.runtime import onnxrt, openvino as ovrt

PARITY_FILE = "parity.json"
OWN_FILES = (MANIFEST, onnxrt.SETTINGS_FILE, PARITY_FILE)  # each folder's own: a twin links every other file


def feed_of(tokenizer, texts: list[str]) -> dict:
    """A padded batch of real sentences as int64 numpy inputs."""
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="np")
    return {k: enc[k].astype(np.int64) for k in INPUT_NAMES if k in enc}


def compare(ir: Path, onnx_file: Path, feed: dict, precision: str) -> dict:
    """How the IR at `ir`, run at `precision`, agrees with ONNX Runtime on the FP32 ONNX graph it came from."""
    got = ovrt.predictor(ovrt.compiled(ir, ovrt.Settings(precision=precision)))(feed)
    want = onnxrt.predictor(onnxrt.session(onnx_file))(feed)
    diff = np.abs(got.astype(np.float64) - want)
    return {"agreement": float((got.argmax(1) == want.argmax(1)).mean()), "max_abs_diff": float(diff.max()),
            "mean_abs_diff": float(diff.mean()), "precision": precision, "batch_shape": list(feed["input_ids"].shape)}


def write_ir(model, folder: Path, tokenizer, precision: str) -> None:
    """An ov.Model as FP32 IR (no FP16 weight compression: the size and the numbers are FP32's) with its tokenizer
    and the precision it runs at (serving.json's openvino block, read back by lib.runtime.openvino)."""
    import openvino as ov
    ov.save_model(model, str(folder / OPENVINO_FILE), compress_to_fp16=False)
    tokenizer.save_pretrained(folder)
    write_json(folder / onnxrt.SETTINGS_FILE, {ovrt.SETTINGS_KEY: {"precision": precision}})


def save_openvino_fp32(name, fp32_dir: Path, tokenizer, qdir: Path, texts, tol: float) -> tuple[Path, dict]:
    """The FP32 ONNX graph in fp32_dir as OpenVINO IR in qdir/<name>_openvino, kept only if its logits match ONNX
    Runtime's on a padded batch of real sentences."""
    import openvino as ov
    feed = feed_of(tokenizer, texts)
    with atomic_dir(qdir / f"{name}_openvino") as tmp:
        write_ir(ov.convert_model(str(fp32_dir / ONNX_FILE)), tmp, tokenizer, "f32")
        parity = compare(tmp / OPENVINO_FILE, fp32_dir / ONNX_FILE, feed, "f32")
        if parity["max_abs_diff"] > tol:
            raise FinCompressError(f"OpenVINO IR of {name} disagrees with ONNX Runtime (max |logit diff| "
                                   f"{parity['max_abs_diff']:.2e} > {tol:g}); the conversion is wrong, not saved")
        write_json(tmp / PARITY_FILE, parity)
    return qdir / f"{name}_openvino", parity


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (the twin costs no disk), a copy where the file system has none."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def save_openvino_bf16(name, ir_dir: Path, fp32_dir: Path, tokenizer, qdir: Path, texts) -> tuple[Path, dict]:
    """The IR of ir_dir set to run in bf16, in qdir/<name>_openvino_bf16: the same files, another precision. Its
    agreement with FP32 is recorded, not held to a tolerance: stage 05 scores it like every variant."""
    with atomic_dir(qdir / f"{name}_openvino_bf16") as tmp:
        for f in ir_dir.iterdir():
            if f.is_file() and f.name not in OWN_FILES:
                link_or_copy(f, tmp / f.name)
        write_json(tmp / onnxrt.SETTINGS_FILE, {ovrt.SETTINGS_KEY: {"precision": "bf16"}})
        parity = compare(tmp / OPENVINO_FILE, fp32_dir / ONNX_FILE, feed_of(tokenizer, texts), "bf16")
        write_json(tmp / PARITY_FILE, parity)
    return qdir / f"{name}_openvino_bf16", parity


def nncf_int8(ir_file: Path, feeds: list[dict]):
    """NNCF post-training INT8 of an FP32 IR (transformer preset: SmoothQuant, min-max scales fixed once on `feeds`,
    fast bias correction), as an ov.Model. About 10 s for a 6-layer MiniLM on 2 cores, whatever the number of
    calibration sentences: NNCF's own graph passes, not the calibration, take the time."""
    import nncf
    if not feeds:
        raise FinCompressError("NNCF INT8 needs calibration batches; build them with "
                               "quantize_static.calibration_inputs(tokenizer, train_texts)")
    nncf.set_log_level(logging.ERROR)  # it logs each algorithm it applies
    with quiet():  # and draws progress bars on stdout
        # every layer's weights in 7 bits (NNCF's default fixes the first layer only): OpenVINO's INT8 kernels on a
        # CPU without VNNI overflow as ONNX Runtime's do (lib.techniques.quantize.quantize_onnx)
        return nncf.quantize(ovrt.core().read_model(str(ir_file)), nncf.Dataset(feeds), subset_size=len(feeds),
                             model_type=nncf.ModelType.TRANSFORMER,
                             advanced_parameters=nncf.AdvancedQuantizationParameters(overflow_fix=nncf.OverflowFix.ENABLE))


def save_openvino_int8(name, ir_dir: Path, fp32_dir: Path, tokenizer, qdir: Path, feeds: list[dict],
                       texts) -> tuple[Path, dict]:
    """NNCF INT8 (nncf_int8) of the FP32 IR in ir_dir, in qdir/<name>_openvino_int8, run at f32 (its non-INT8 ops
    too); its agreement with the FP32 ONNX graph in fp32_dir is recorded for the report."""
    with atomic_dir(qdir / f"{name}_openvino_int8") as tmp:
        write_ir(nncf_int8(ir_dir / OPENVINO_FILE, feeds), tmp, tokenizer, "f32")
        parity = compare(tmp / OPENVINO_FILE, fp32_dir / ONNX_FILE, feed_of(tokenizer, texts), "f32")
        write_json(tmp / PARITY_FILE, {**parity, "calibration_sentences": sum(len(f["input_ids"]) for f in feeds)})
    return qdir / f"{name}_openvino_int8", parity
