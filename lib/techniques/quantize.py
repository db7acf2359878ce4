"""INT8 quantization: PyTorch dynamic PTQ and QAT, ONNX export, ONNX Runtime INT8 by a QuantConfig, loaders."""
import copy
import logging
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir, read_json, write_json
from lib.core.variants import INPUT_NAMES, TORCH_WEIGHTS
from lib.modeling.device import quiet
from lib.runtime import onnx_graph, onnxrt
from lib.runtime.pytorch import torch_predictor
from lib.techniques import quantize_static

META = "quantization.json"


def group_of(name: str) -> str:
    """Sensitivity group of a Linear/Embedding module name: embeddings, L<i> attention/ffn_in/ffn_out, head."""
    m = re.search(r"layer\.(\d+)\.(attention|intermediate|output|ffn\.lin1|ffn\.lin2)", name)
    if "embeddings" in name and not m:
        return "embeddings"
    if not m:
        return "head"  # pooler and classifier
    part = {"attention": "attention", "intermediate": "ffn_in", "ffn.lin1": "ffn_in"}.get(m.group(2), "ffn_out")
    return f"L{m.group(1)} {part}"


def quantizable(model) -> dict[str, str]:
    """Every Linear and Embedding module name -> its sensitivity group, in model order."""
    return {n: group_of(n) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))}


def modules_in(model, groups) -> list[str]:
    return [n for n, g in quantizable(model).items() if g in set(groups)]


def quantize_torch(model, keep_fp32=(), per_channel: bool = True):
    """The one call into torch.ao dynamic quantization (swap this function to change backend).

    Linear: INT8 weights (per output channel) and activations quantized per batch at run time.
    Embedding: INT8 rows with a float scale per row. Modules named in keep_fp32 stay FP32.
    """
    from torch.ao.quantization import (default_dynamic_qconfig, float_qparams_weight_only_qconfig,
                                       per_channel_dynamic_qconfig, quantize_dynamic)
    linear_q = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    spec = {n: (float_qparams_weight_only_qconfig if isinstance(m, nn.Embedding) else linear_q)
            for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding)) and n not in set(keep_fp32)}
    with quiet():
        return quantize_dynamic(copy.deepcopy(model).cpu().eval(), spec, dtype=torch.qint8)


def save_torch_int8(qmodel, config, tokenizer, out_dir: Path, meta: dict) -> None:
    """state_dict (packed INT8 weights) + config + tokenizer + how to rebuild; all or nothing."""
    with atomic_dir(Path(out_dir)) as tmp:
        with quiet():
            torch.save(qmodel.state_dict(), tmp / TORCH_WEIGHTS)
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / META, meta)


def load_torch_int8_model(path):
    """Rebuild the FP32 architecture from config, quantize it the same way, then load the INT8 weights."""
    path = Path(path)
    if not (path / TORCH_WEIGHTS).is_file():
        raise FinCompressError(f"{path} is not a torch_int8 model (no {TORCH_WEIGHTS}); pass a folder written by stage 03")
    manifest.check(path)
    meta = read_json(path / META, "quantization metadata")
    with quiet():
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(path))
    qmodel = quantize_torch(model, meta["keep_fp32"], meta["per_channel"])
    state = read_int8_state(path / TORCH_WEIGHTS)
    try:
        with quiet():
            qmodel.load_state_dict(state)
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as e:  # quantized modules raise all of these
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:150]}"
        raise FinCompressError(f"{path / TORCH_WEIGHTS} does not fit its config.json ({why}); re-run stage 03 "
                               "(python run_all.py --only 03)") from None
    return qmodel.eval(), AutoTokenizer.from_pretrained(path)


def read_int8_state(file: Path) -> dict:
    """The INT8 state dict, unpickled weights-only: a model folder is data, and a full unpickle would run any
    code a crafted file names. The packed weights save as quantized tensors, which torch allowlists."""
    try:
        with warnings.catch_warnings():  # torch's own unpickler still builds TypedStorage, and says so each load
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated", category=UserWarning)
            return torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as e:
        named = str(e).partition("Unsupported global: GLOBAL ")[2].split(" ")[0].rstrip(",.")
        what = (f"names {named}, which a weights-only load refuses" if named
                else f"is not a weights file ({type(e).__name__})")
        raise FinCompressError(f"{file} {what}; nothing from it was run. Pass a folder written by stage 03 or "
                               "re-run it (python run_all.py --only 03)") from None


def load_torch_int8(path):
    """(predict(inputs) -> logits, tokenizer) for a saved torch_int8 variant."""
    model, tokenizer = load_torch_int8_model(path)
    return torch_predictor(model), tokenizer


# --- QAT: fake-quant fine-tuning, then the same conversion as PTQ ---------------------------------------


def fake_quant_weight(w, per_channel: bool):
    """Symmetric INT8 rounding of weights, as quantize_torch stores them; gradient passes straight through."""
    amax = (w.detach().abs().amax(dim=1) if per_channel else w.detach().abs().max().reshape(1)).clamp(min=1e-8)
    scale = (amax / 127.0).float()
    zero = torch.zeros_like(scale, dtype=torch.int32)
    if per_channel:
        return torch.fake_quantize_per_channel_affine(w, scale, zero, 0, -128, 127)
    return torch.fake_quantize_per_tensor_affine(w, scale, zero, -128, 127)


def fake_quant_act(x, qmax: int = 127):
    """Per-tensor affine rounding from the tensor's own range, like dynamic quantization at run time.
    qmax 127: the x86/fbgemm dynamic kernels use reduce_range (7-bit activations). Rounded in fp32 also under
    bf16 autocast (the matmul after it then runs in bf16), as the INT8 model rounds FP32 activations."""
    x = x.float()
    lo, hi = x.detach().min().clamp(max=0), x.detach().max().clamp(min=0)
    scale = ((hi - lo) / qmax).clamp(min=1e-8).float()
    zero = torch.round(-lo / scale).clamp(0, qmax).int()
    return torch.fake_quantize_per_tensor_affine(x, scale, zero, 0, qmax)


class FakeQuantLinear(nn.Linear):
    """A Linear that trains on what its INT8 version will compute (straight-through estimator)."""

    per_channel = True

    def forward(self, x):
        return F.linear(fake_quant_act(x), fake_quant_weight(self.weight, self.per_channel), self.bias)


def _swap_linear(model, names, make) -> None:
    """Replace each named Linear by make(old), in place."""
    for name in names:
        parent, _, child = name.rpartition(".")
        if isinstance(model.get_submodule(name), nn.Linear):
            setattr(model.get_submodule(parent) if parent else model, child, make(model.get_submodule(name)))


def _relink(old, cls, **attrs):
    new = cls(old.in_features, old.out_features, bias=old.bias is not None, device=old.weight.device)
    new.weight, new.bias = old.weight, old.bias  # the same Parameters: training updates them in place
    for k, v in attrs.items():
        setattr(new, k, v)
    return new


def prepare_qat(model, keep_fp32=(), per_channel: bool = True):
    """A copy whose to-be-quantized Linear layers are fake-quantized for training."""
    qat = copy.deepcopy(model)
    names = [n for n in quantizable(qat) if n not in set(keep_fp32)]
    _swap_linear(qat, names, lambda old: _relink(old, FakeQuantLinear, per_channel=per_channel))
    return qat


def convert_qat(qat, keep_fp32=(), per_channel: bool = True):
    """Back to plain Linear layers holding the fine-tuned weights, then real INT8 via quantize_torch."""
    plain = copy.deepcopy(qat).cpu()
    names = [n for n, m in plain.named_modules() if isinstance(m, FakeQuantLinear)]
    _swap_linear(plain, names, lambda old: _relink(old, nn.Linear))
    return quantize_torch(plain, keep_fp32, per_channel)


def qat(model, keep_fp32, per_channel: bool, finetune) -> tuple:
    """Quantization-aware training: fake-quant Linears, the caller's `finetune(model) -> record` (the training loop
    stays with the caller, as pruning's recovery does), then the real INT8 model; (INT8 model, record)."""
    fake = prepare_qat(model, keep_fp32, per_channel)
    record = finetune(fake)
    return convert_qat(fake, keep_fp32, per_channel), record


# --- ONNX ------------------------------------------------------------------------------------------------


def example_inputs(tokenizer, texts: list[str]) -> dict:
    """A padded batch of real sentences of different lengths: exercises the attention mask."""
    if len(texts) < 2:
        raise FinCompressError("ONNX export needs at least 2 example sentences to build a padded batch")
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    return {k: enc[k] for k in INPUT_NAMES if k in enc}


def export_onnx(model, inputs: dict, path: Path, fused: bool = True) -> None:
    """BERT classifiers: the fused graph of lib.runtime.onnx_graph (1.2-1.3x faster at batch 1 once INT8, see
    scripts/bench_onnx_graph.py). Anything else, or fused=False: the torch.export-based exporter.
    Batch and sequence axes dynamic, weights inside the one .onnx file so its size on disk is honest."""
    if fused and onnx_graph.supports(model):
        import onnx
        onnx.save(onnx_graph.bert_graph(copy.deepcopy(model)), str(path))
        return
    from torch.export import Dim
    batch, seq = Dim("batch", min=1, max=1024), Dim("sequence", min=2, max=512)
    shapes = {k: {0: batch, 1: seq} for k in inputs}
    model = copy.deepcopy(model).cpu().eval()
    with quiet():
        try:
            torch.onnx.export(model, (), str(path), kwargs=inputs, input_names=list(inputs), output_names=["logits"],
                              dynamic_shapes=shapes, dynamo=True, external_data=False)
        except Exception as e:  # the exporter's own errors are pages long
            raise FinCompressError(f"ONNX export failed ({type(e).__name__}: {str(e).splitlines()[0][:150]})") from None


def onnx_nodes_for(onnx_path, module_names) -> list[str]:
    """ONNX node names that implement the given torch modules, from the name-scope metadata that
    torch.onnx and lib.runtime.onnx_graph both write (a fused Attention node lists its query, key and value)."""
    import onnx
    wanted = set(module_names)
    nodes = []
    for node in onnx.load(str(onnx_path), load_external_data=False).graph.node:
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), "")
        if any(f"'{m}'" in scopes for m in wanted):
            nodes.append(node.name)
    return nodes


@dataclass(frozen=True)
class QuantConfig:
    """One ONNX Runtime INT8 recipe, after Optimum's QuantizationConfig: activation scales "dynamic" (from each batch,
    at run time) or "static" (fixed, from ranges calibrated once by `calibration`); weight scales per channel or per
    tensor; the torch modules kept FP32."""
    mode: str = "dynamic"
    calibration: str = "minmax"
    per_channel: bool = True
    keep_fp32: tuple = ()

    def __post_init__(self):
        if self.mode not in ("dynamic", "static"):
            raise FinCompressError(f"INT8 mode {self.mode!r} is neither 'dynamic' nor 'static'; pass one of them")
        quantize_static.check_calibration(self.calibration)


def quantize_onnx(src: Path, dst: Path, config: QuantConfig = QuantConfig(), ranges=None) -> None:
    """ONNX Runtime INT8 of MatMul and fused Attention weights and embedding Gathers; config.keep_fp32 excluded.

    Static mode reads `ranges`, calibrated once per graph and method (quantize_static.ranges_for) and reusable
    for any number of quantizations of that graph; labels then do not depend on batching (see
    lib/techniques/quantize_static.py). Weights are 7-bit (reduce_range) in both modes: on x86 CPUs without VNNI
    ONNX Runtime multiplies uint8 x int8 with VPMADDUBSW, whose int16 pair sums overflow with full-range weights
    (a tiny test model's labels all collapsed to one class on an AVX2-only EPYC); 7 bits cannot overflow, so the
    model computes the same on every CPU it ships to. The pooler and classifier export as Gemm: dynamic mode (ORT 1.32)
    rewrites both to MatMulInteger, static mode the pooler to QGemm (classifier FP32). Per-channel scales by
    default: on the MiniLM teacher per-tensor INT8 lost 0.74 test F1, per-channel none.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic
    exclude = onnx_nodes_for(src, config.keep_fp32)
    if config.mode == "static":
        if ranges is None:
            raise FinCompressError("static INT8 needs activation ranges; calibrate once with "
                                   "quantize_static.ranges_for(src, feeds, calibration) and pass them")
        return quantize_static.quantize(src, dst, ranges, exclude, config.per_channel)
    logging.getLogger().setLevel(logging.ERROR)  # it logs a pre-processing hint at WARNING on every call
    quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=config.per_channel,
                     reduce_range=True, op_types_to_quantize=["MatMul", "Attention", "Gather"], nodes_to_exclude=exclude)


def load_onnx(path, threads: int = 2):
    """(predict(inputs) -> torch logits, tokenizer) for an ONNX variant folder: lib.runtime.onnxrt's, torch out."""
    predict, tokenizer = onnxrt.load(path, threads)
    return (lambda inputs: torch.from_numpy(predict(inputs))), tokenizer


def logit_diff(a: torch.Tensor, b: torch.Tensor) -> dict:
    """How closely two models' logits agree: prediction agreement and max/mean absolute difference."""
    d = (a.float() - b.float()).abs()
    return {"agreement": float((a.argmax(-1) == b.argmax(-1)).float().mean()), "max_abs_diff": float(d.max()),
            "mean_abs_diff": float(d.mean())}
