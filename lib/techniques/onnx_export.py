"""ONNX variants on disk: an FP32 export kept only if it matches PyTorch, and ORT INT8 (dynamic, or static with
its calibration chosen on val) of a saved FP32 graph."""
import shutil
import statistics
import tempfile
from pathlib import Path

import torch

from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir, write_json
from lib.core.variants import ONNX_FILE
from lib.techniques import quantize as q, quantize_static as qs
from lib.techniques.sensitivity import evaluate_predictor

STATIC_META = "static_int8.json"  # which calibration made a static INT8 folder, on how many sentences


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
        q.quantize_onnx(fp32_dir / ONNX_FILE, tmp / ONNX_FILE, q.QuantConfig(keep_fp32=tuple(keep_mods)))
        tokenizer.save_pretrained(tmp)
    return qdir / f"{name}_onnx_int8"


def write_static_int8(folder: Path, fp32_dir: Path, tokenizer, keep_mods, feeds: list[dict], calibration: str) -> None:
    """The files of a static INT8 variant (activations calibrated once on `feeds` by `calibration`), written into
    `folder`."""
    config = q.QuantConfig("static", calibration, keep_fp32=tuple(keep_mods))
    ranges = qs.ranges_for(fp32_dir / ONNX_FILE, feeds, calibration)
    q.quantize_onnx(fp32_dir / ONNX_FILE, folder / ONNX_FILE, config, ranges)
    tokenizer.save_pretrained(folder)
    write_json(folder / STATIC_META, {"calibration": calibration,
                                      "calibration_sentences": sum(len(f["input_ids"]) for f in feeds)})


def save_onnx_static_int8(name, fp32_dir: Path, tokenizer, qdir, keep_mods, feeds: list[dict], calibration: str) -> Path:
    """ORT static INT8 (activations calibrated once on `feeds` by `calibration`) to qdir/<name>_onnx_static_int8."""
    with atomic_dir(qdir / f"{name}_onnx_static_int8") as tmp:
        write_static_int8(tmp, fp32_dir, tokenizer, keep_mods, feeds, calibration)
    return qdir / f"{name}_onnx_static_int8"


def calibration_study(fp32_dirs: dict[str, Path], tokenizer, qdir, keep_mods, feeds: list[dict], loaders: dict) -> dict:
    """Static INT8 of each named FP32 graph (one per training seed; the first is the exported one) under each
    calibration method, scored on every loader (val, test). The method with the best mean val over the graphs
    (quantize_static.choose_calibration, test never read) is saved for each as qdir/<name>_onnx_static_int8."""
    per_model = {name: {} for name in fp32_dirs}
    with tempfile.TemporaryDirectory() as scratch:
        for name, fp32_dir in fp32_dirs.items():
            for method in qs.CALIBRATIONS:
                # A trial is scratch, not a save: written in place, not through atomic_dir, which would log it as one
                # of the stage's outputs (lib.core.manifest.record_write) and run_all would look for it after it is gone.
                trial = Path(scratch) / name / method
                trial.mkdir(parents=True)
                write_static_int8(trial, fp32_dir, tokenizer, keep_mods, feeds, method)
                predict, _ = q.load_onnx(trial)
                per_model[name][method] = {f"{s}_macro_f1": evaluate_predictor(predict, loader)["macro_f1"]
                                           for s, loader in loaders.items()}
        first = next(iter(fp32_dirs))
        scores = {m: {k: statistics.fmean(pm[m][k] for pm in per_model.values()) for k in per_model[first][m]}
                  for m in qs.CALIBRATIONS}
        chosen = qs.choose_calibration(scores)
        for name in fp32_dirs:
            with atomic_dir(qdir / f"{name}_onnx_static_int8") as out:
                shutil.copytree(Path(scratch) / name / chosen, out, dirs_exist_ok=True)
    return {"calibration": chosen, "scores": scores, "per_model": per_model,
            "paths": {name: qdir / f"{name}_onnx_static_int8" for name in fp32_dirs},
            "ops": {"static": qs.loaded_ops(qdir / f"{first}_onnx_static_int8" / ONNX_FILE),
                    "dynamic": qs.loaded_ops(qdir / f"{first}_onnx_int8" / ONNX_FILE)}}
