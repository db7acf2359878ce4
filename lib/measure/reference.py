"""Off-the-shelf reference rows: the fine-tuned teacher through the tools a user would reach for instead of this study,
built in stage 05 and measured by its harness like every variant (F1, paired deltas, batch flips, OOD, costs).

Each is a Variant with `reference=True`: shown beside the candidates as "reference, not a candidate", never
recommended, never the reference of a delta (the teacher is). A recipe is a callable that writes the model's graph
and tokenizer from the teacher's folder (build adds the teacher's config); RECIPES lists them, and stage 05's
`references` parameter picks among them.
"""
import importlib.util
import logging
import shutil
import tempfile
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd

from lib import formats
from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir
from lib.core.variants import HF_CONFIG, MARKERS, ONNX_FILE, Variant
from lib.modeling.device import quiet
from lib.runtime import onnxrt, openvino as ovrt
from lib.ship import decide
from lib.techniques import openvino_export as ovx, quantize as q, quantize_static as qs

MARK = "reference, not a candidate"  # the tables' word for a reference row
PARITY_TOL = 1e-3  # max |logit diff| between the plain ONNX export and PyTorch (the project's FP32 exports: 1e-4 to 1e-5)
# ONNX Runtime's transformers optimizer as Optimum's AutoOptimizationConfig.O3 sets it (optimum/onnxruntime/
# configuration.py, AutoOptimizationConfig._LEVELS["O3"]): optimization_level 2 (basic and extended, the level O2 and
# O3 both use), transformers-specific fusions on, Gelu -> FastGelu approximation on, EmbedLayerNormalization fusion
# off (OptimizationConfig.disable_embed_layer_norm_fusion = True: "incompatible with ONNX Runtime quantization").
OPT_LEVEL = 2
# ONNX Runtime dynamic INT8 as Optimum's AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False) sets it
# (the call of Optimum's quantization guide; optimum 1.27, the last line for transformers 4.x), passed by
# ORTQuantizer.quantize to ORT's quantizer: QOperator format, IntegerOps mode, activations QUInt8 asymmetric, weights
# QInt8 symmetric, per_channel False, reduce_range False (avx512_vnni fixes it: VNNI has no VPMADDUBSW saturation),
# operators left None, so every op ORT can quantize dynamically (ORT_DEFAULT_OPS_DYNAMIC_QUANTIZATION, ORT's
# IntegerOpsRegistry: MatMul, the fused Attention, Gather (the embeddings, stored uint8), ...; passed where the recipe
# runs), extra options WeightSymmetric True, ActivationSymmetric False, EnableSubgraph False, ForceSymmetric False.
VNNI_DYNAMIC = {"per_channel": False, "reduce_range": False,
                "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": False, "EnableSubgraph": False,
                                  "ForceSymmetric": False}}


@dataclass(frozen=True)
class Recipe:
    name: str            # the word stage 05's `references` parameter uses
    label: str           # what it is, in the tables' words
    format: str          # the variant format its folder is (a key of lib.formats.FORMATS once that runtime is there)
    precision: str
    techniques: tuple    # what it applies to the teacher, in order
    needs: tuple         # modules it imports beyond requirements.txt
    build: Callable      # (teacher folder, output folder, val texts, train texts) -> None: writes the model folder


@contextmanager
def quiet_logging():
    """ONNX Runtime's quantizer logs advice ("consider to run pre-processing") to the root logger, i.e. stderr."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def plain_export(teacher_dir: Path, out: Path, texts: list[str]) -> dict:
    """The teacher as Optimum's exporter writes it (torch.onnx's TorchScript exporter, eager attention: the pattern
    ONNX Runtime's optimizer fuses), kept only if it matches PyTorch; returns the config. The project's own writer
    is already fused and its torch.export graph keeps attention unfused (0 Attention nodes after the optimizer)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(teacher_dir, attn_implementation="eager").eval()
    example = q.example_inputs(AutoTokenizer.from_pretrained(teacher_dir), texts[:8])
    dynamic = {k: {0: "batch", 1: "sequence"} for k in example} | {"logits": {0: "batch"}}
    with quiet(), torch.inference_mode(), warnings.catch_warnings():
        # the tracer says a shape test in transformers' masking becomes a constant: it compares the mask with itself
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        torch.onnx.export(model, tuple(example[k] for k in example), str(out), input_names=list(example),
                          output_names=["logits"], dynamic_axes=dynamic, opset_version=17, dynamo=False)
        onnx_logits = torch.as_tensor(onnxrt.predictor(onnxrt.session(out))(example))
        diff = q.logit_diff(onnx_logits, model(**example).logits)["max_abs_diff"]
    if diff > PARITY_TOL:
        raise FinCompressError(f"the teacher's ONNX export for the reference rows disagrees with PyTorch (max |logit "
                               f"diff| {diff:.2e} > {PARITY_TOL:g}); not used")
    return model.config


def ort_optimized_int8(teacher_dir: Path, folder: Path, texts: list[str], calibration: list[str] = ()) -> None:
    """Optimum's one-command recipe without Optimum (it needs transformers < 4.58): the optimizer at O3, then dynamic
    INT8 with the avx512_vnni config."""
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model
    from transformers import AutoTokenizer
    with tempfile.TemporaryDirectory() as scratch:
        raw, fused = Path(scratch) / "plain.onnx", Path(scratch) / "optimized.onnx"
        config = plain_export(teacher_dir, raw, texts)
        options = FusionOptions("bert")
        options.enable_gelu_approximation, options.enable_embed_layer_norm = True, False
        with quiet(), quiet_logging():
            optimize_model(str(raw), model_type="bert", num_heads=config.num_attention_heads,
                           hidden_size=config.hidden_size, optimization_options=options, opt_level=OPT_LEVEL,
                           use_gpu=False).save_model_to_file(str(fused))
            # DefaultTensorType FLOAT: ORT 1.32's quantizer cannot type the outputs of the optimizer's com.microsoft
            # nodes (Attention, SkipLayerNormalization) by shape inference and asks for it; they are all FP32
            extra = VNNI_DYNAMIC["extra_options"] | {"DefaultTensorType": TensorProto.FLOAT}
            quantize_dynamic(str(fused), str(folder / ONNX_FILE), weight_type=QuantType.QInt8,
                             op_types_to_quantize=list(IntegerOpsRegistry), **(VNNI_DYNAMIC | {"extra_options": extra}))
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(folder)


def default_precision() -> str:
    """The precision OpenVINO's CPU plugin runs FP32 models at when not told (bf16 where the CPU has it)."""
    hint = ovrt.core().get_property("CPU", "INFERENCE_PRECISION_HINT").get_type_name()
    return hint if hint in ovrt.PRECISIONS else "f32"


def openvino_ir(teacher_dir: Path, folder: Path, texts: list[str], calibration: list[str], int8: bool = False) -> None:
    """The teacher's plain ONNX export read by OpenVINO and saved as FP32 IR, or quantized by NNCF post-training INT8
    (transformer preset) on training sentences as stage 06 calibrates; either served at OpenVINO's default precision."""
    import openvino
    from transformers import AutoTokenizer
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    with tempfile.TemporaryDirectory() as scratch:
        plain_export(teacher_dir, Path(scratch) / "plain.onnx", texts)
        model = openvino.convert_model(str(Path(scratch) / "plain.onnx"))
        if int8:
            openvino.save_model(model, str(Path(scratch) / MARKERS["openvino"]), compress_to_fp16=False)
            model = ovx.nncf_int8(Path(scratch) / MARKERS["openvino"], qs.calibration_inputs(tokenizer, calibration))
        ovx.write_ir(model, folder, tokenizer, default_precision())


RECIPES = {r.name: r for r in [
    Recipe("ort_optimized_int8", "ORT transformers optimizer O3 + dynamic INT8 (Optimum's avx512_vnni config)", "onnx",
           "int8", ("onnx_export", "ort_transformers_optimizer_o3", "ort_dynamic_int8_avx512_vnni"), (),
           ort_optimized_int8),
    Recipe("openvino", "OpenVINO, default hints", "openvino", "fp32", ("onnx_export", "openvino_ir"), ("openvino",),
           openvino_ir),
    Recipe("openvino_nncf_int8", "OpenVINO + NNCF INT8", "openvino", "int8", ("onnx_export", "openvino_ir", "nncf_int8"),
           ("openvino", "nncf"), partial(openvino_ir, int8=True)),
]}


def unavailable(recipe: Recipe) -> str:
    """Why a recipe cannot run here, in words; empty when it can."""
    missing = [m for m in recipe.needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"{', '.join(missing)} not installed"
    if recipe.format not in formats.FORMATS or recipe.format not in MARKERS:
        return f"no `{recipe.format}` format in lib.formats to load it with"
    return ""


def build(root: Path, out_dir: Path, teacher: Variant, texts: list[str], names: list[str],
          stage: str = "05_benchmark", calibration: list[str] = ()) -> tuple[list[Variant], dict[str, str]]:
    """The reference variants `names` picks (in RECIPES' order), each in out_dir/<name> under root, built from the
    teacher; and {name: why} for those that cannot run here (skipped, the report says why)."""
    built, skipped = [], {}
    for recipe in [r for r in RECIPES.values() if r.name in names]:
        if why := unavailable(recipe):
            skipped[recipe.name] = why
            continue
        with atomic_dir(Path(out_dir) / recipe.name) as tmp:
            recipe.build(teacher.location(root), tmp, texts, list(calibration))
            shutil.copyfile(teacher.location(root) / HF_CONFIG, tmp / HF_CONFIG)  # labels and normalization, for predict
        path = (Path(out_dir) / recipe.name).relative_to(root)
        built.append(replace(teacher.derive(f"{teacher.name}_{recipe.name}", recipe.format, path, recipe.techniques,
                                            stage, recipe.precision), reference=True))
    return built, skipped


def label(techniques) -> str:
    """The recipe's words for a reference variant's (or benchmark row's) techniques: the recipe whose steps end them."""
    done = tuple(techniques)
    return next((r.label for r in RECIPES.values() if done[-len(r.techniques):] == r.techniques), "")


def marked(row) -> str:
    """A reference row's name in a table, with the word that it is not a candidate."""
    return f"{row['name']} ({MARK})"


def beside(make, df: pd.DataFrame, refs: pd.DataFrame, *args) -> pd.DataFrame:
    """A table of the candidates (`make(df, *args)`, lib.ship.decide's), then the same table of the reference rows,
    marked and unnumbered (not plotted; their Holm p is over their own family, lib.measure.harness.with_readings)."""
    out = make(df, *args)
    if not len(refs):
        return out
    extra = make(refs, *args)  # the same columns; a header that counts a Holm family names the candidates'
    extra = (extra.set_axis(out.columns, axis=1) if len(extra.columns) == len(out.columns)
             else extra.reindex(columns=out.columns))
    extra["#"], extra["variant"] = "", [marked(r) for _, r in refs.iterrows()]
    return pd.concat([out, extra], ignore_index=True)


def table(rec, refs: pd.DataFrame) -> pd.DataFrame:
    """The shipped model's row beside every reference row: val and test macro-F1 with the paired delta to the
    teacher, batch-1 model and end-to-end ms, end-to-end batch-32 sentences/s, MB on disk."""
    rows = [(f"{rec['name']} (shipped)", "this study's pick", rec)] + [(marked(r), label(r["techniques"]), r)
                                                                       for _, r in refs.iterrows()]
    return pd.DataFrame([{"model": name, "what it is": what, **{f"{s} macro-F1 (Δ vs teacher, pts)": f"{r[f'{s}_macro_f1']:.3f} "
                                            f"({r[f'{s}_delta_pts']:+.2f})" for s in ("val", "test")},
                          "batch-1 model ms": r["latency_median_ms"], "batch-1 e2e ms": r["e2e_latency_median_ms"],
                          "batch-32 e2e sentences/s": r["e2e_throughput_b32_per_s"], "MB": r["disk_bytes"] / 1e6}
                         for name, what, r in rows])


def summary(rec, refs: pd.DataFrame, skipped: dict[str, str]) -> str:
    """The verdict's paragraph on the reference rows: what the goals compared with, and what was skipped and why."""
    gone = "; ".join(f"`{n}` skipped: {why}" for n, why in skipped.items())
    if not len(refs):
        return (f"No reference rows ({gone or '`references` is empty'}): the goals against them read n/a (no "
                "reference rows) and do not block.")
    best = decide.best_references(refs)
    b1, b32 = best["batch1"], best["batch32"]
    return (f"Against the off-the-shelf reference rows (the teacher through other tools, measured by the same harness "
            f"in this run; {MARK}), end to end: `{rec['name']}` takes {rec['e2e_latency_median_ms']:.2f} ms at batch 1, "
            f"{rec['speedup_vs_reference']:.2f}x faster than the fastest, `{b1['name']}` ({label(b1['techniques'])}, "
            f"{b1['e2e_latency_median_ms']:.2f} ms), and serves {rec['e2e_throughput_b32_per_s']:.0f} sentences/s at "
            f"batch 32, {rec['throughput_vs_reference']:.2f}x the best, `{b32['name']}` "
            f"({b32['e2e_throughput_b32_per_s']:.0f} sentences/s)." + (f" {gone}." if gone else ""))
