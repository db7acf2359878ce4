"""How each format of variant loads, for inference and as a float module: the one registry every consumer goes
through. It sits above the techniques whose loaders it names (lib.techniques.prune, lib.techniques.quantize,
lib.runtime.onnxrt, lib.runtime.openvino)."""
from dataclasses import dataclass
from functools import partial
from typing import Callable

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.runtime import onnxrt, openvino
from lib.runtime.pytorch import torch_predictor
from lib.techniques import prune, quantize


def _tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def _hf_module(path, attn_implementation=None):
    from transformers import AutoModelForSequenceClassification
    manifest.check(path)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForSequenceClassification.from_pretrained(path, **extra)


def _pruned_module(path, attn_implementation=None):
    return prune.load_pruned(path, attn_implementation=attn_implementation or "eager")


def _torch_load(module):
    def load(path, threads):
        return torch_predictor(module(path)), _tokenizer(path)
    return load


def _int8_load(path, threads):
    return quantize.load_torch_int8(path)


def _onnx_load(path, threads):
    return onnxrt.load(path, threads)


def _openvino_load(path, threads):
    return openvino.load(path, threads)  # with the precision its folder's serving.json names


@dataclass(frozen=True)
class Format:
    name: str
    load: Callable               # (path, threads) -> (predict(inputs) -> logits, tokenizer)
    load_torch: Callable | None  # (path, attn_implementation) -> float nn.Module that can move to a GPU; None if none


FORMATS = {f.name: f for f in [
    Format("onnx", _onnx_load, None),
    Format("openvino", _openvino_load, None),
    # served with SDPA like the hf teacher it is compared with (eager, pruning's default for attention maps, timed 17%
    # slower and made stage 05's pruned FP32 models look slower than their unpruned source)
    Format("pruned", _torch_load(partial(_pruned_module, attn_implementation="sdpa")), _pruned_module),
    # packed INT8 kernels are CPU-only: no float module to move to a GPU
    Format("torch_int8", _int8_load, None),
    Format("hf", _torch_load(_hf_module), _hf_module),
]}


def format_of(variant: Variant) -> Format:
    if variant.format not in FORMATS:
        raise FinCompressError(f"variant {variant.name} has unknown format {variant.format!r}; expected one of "
                               f"{', '.join(FORMATS)}")
    return FORMATS[variant.format]


def load(variant: Variant, root=".", threads: int = 2):
    """(predict(inputs) -> logits, tokenizer) for any variant; logits are a torch tensor or a numpy array."""
    path = variant.location(root)
    if not path.exists():  # else transformers takes the path for a Hub repo id and says so
        raise FinCompressError(f"{path} does not exist; re-run the stage that writes variant {variant.name}")
    return format_of(variant).load(path, threads)


def load_torch(variant: Variant, root=".", attn_implementation: str | None = None):
    """The float nn.Module of a variant, or None for formats that have none (INT8 kernels, ONNX).

    attn_implementation None keeps each format's own default (transformers' for hf, eager for pruned)."""
    loader = format_of(variant).load_torch
    return loader(variant.location(root), attn_implementation) if loader else None
