"""Variants: what a compressed model is (a record) and how each format is stored, recognised and loaded.

Producers fill a Variant's fields and consumers read them; no code parses a variant's name. This module
imports nothing heavy at module level (torch, transformers and ONNX Runtime load inside the loaders), so
recognising a format and serving an ONNX model do not pull in the training stack.
"""
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from lib import manifest
from lib.errors import FinCompressError

# The files that make up each format; each format's `marker` file identifies a folder of that format.
HF_CONFIG = "config.json"
ONNX_FILE = "model.onnx"
TORCH_WEIGHTS = "quantized_state.pt"
SPEC_FILE = "pruning_spec.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# What every classifier of the study outputs, in logit order (lib.data.LABELS; here so serving needs no pandas).
LABELS = ("negative", "neutral", "positive")


@dataclass
class Variant:
    """One deployable model. `path` is relative to the run's out_dir (absolute when it lives outside it)."""
    name: str
    format: str                  # a key of FORMATS
    path: str
    source: str | None = None    # the model it was made from: a variant's name, or the pretrained model of the teacher
    techniques: tuple = ()       # what was applied since the pretrained model, in order
    stage: str = ""              # the stage that wrote it
    precision: str = "fp32"      # of its weights: fp32, int8, fp16
    metrics: dict = field(default_factory=dict)  # the writing stage's own figures (F1 on its batching, size, latency)

    def derive(self, name: str, format: str, path: str, technique: str | tuple, stage: str,
               precision: str | None = None, **metrics) -> "Variant":
        """A variant made from this one by one more technique (or a tuple of them, in order)."""
        added = technique if isinstance(technique, tuple) else (technique,)
        return Variant(name, format, str(path), self.name, (*self.techniques, *added), stage,
                       precision or self.precision, metrics)

    def location(self, root=".") -> Path:
        return Path(root) / self.path

    def with_metrics(self, **metrics) -> "Variant":
        return replace(self, metrics={**self.metrics, **metrics})

    def to_dict(self) -> dict:
        return {**asdict(self), "techniques": list(self.techniques)}

    @classmethod
    def from_dict(cls, d: dict) -> "Variant":
        return cls(**{**d, "techniques": tuple(d.get("techniques", ()))})


def torch_predictor(model):
    """inputs -> logits for a PyTorch classifier: eval mode, no autograd, only the inputs a BERT takes."""
    import torch
    model.eval()

    def predict(inputs: dict):
        with torch.inference_mode():
            return model(**{k: v for k, v in inputs.items() if k in INPUT_NAMES}).logits
    return predict


def _tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def _hf_module(path, attn_implementation=None):
    from transformers import AutoModelForSequenceClassification
    manifest.check(path)
    extra = {"attn_implementation": attn_implementation} if attn_implementation else {}
    return AutoModelForSequenceClassification.from_pretrained(path, **extra)


def _pruned_module(path, attn_implementation=None):
    from lib import prune
    return prune.load_pruned(path, attn_implementation=attn_implementation or "eager")


def _torch_load(module):
    def load(path, threads):
        return torch_predictor(module(path)), _tokenizer(path)
    return load


def _int8_load(path, threads):
    from lib import quantize
    return quantize.load_torch_int8(path)


def _onnx_load(path, threads):
    from lib import onnx_runtime
    return onnx_runtime.load(path, threads)


@dataclass(frozen=True)
class Format:
    name: str
    marker: str                  # the file whose presence identifies a folder of this format
    load: Callable               # (path, threads) -> (predict(inputs) -> logits, tokenizer)
    load_torch: Callable | None  # (path, attn_implementation) -> float nn.Module that can move to a GPU; None if none
    runtime: str                 # what serves it, for the model card


# Checked in this order by detect(): a pruned or INT8 folder also holds a config.json.
FORMATS = {f.name: f for f in [
    Format("onnx", ONNX_FILE, _onnx_load, None, "ONNX Runtime"),
    Format("pruned", SPEC_FILE, _torch_load(_pruned_module), _pruned_module, "PyTorch (heads and FFN neurons removed)"),
    # packed INT8 kernels are CPU-only: no float module to move to a GPU
    Format("torch_int8", TORCH_WEIGHTS, _int8_load, None, "PyTorch dynamic INT8"),
    Format("hf", HF_CONFIG, _torch_load(_hf_module), _hf_module, "PyTorch"),
]}


def format_of(variant: Variant) -> Format:
    if variant.format not in FORMATS:
        raise FinCompressError(f"variant {variant.name} has unknown format {variant.format!r}; expected one of "
                               f"{', '.join(FORMATS)}")
    return FORMATS[variant.format]


def detect(path) -> Variant:
    """A model folder (or .onnx file) as a Variant, its format read from the files it holds."""
    path = Path(path)
    if not path.exists():
        raise FinCompressError(f"model {path} does not exist; pass an existing model folder")
    if path.is_file() and path.suffix == ".onnx":
        return Variant(path.stem, "onnx", str(path.parent.resolve()))
    fmt = next((f for f in FORMATS.values() if path.is_dir() and (path / f.marker).is_file()), None)
    if fmt is None:
        raise FinCompressError(f"{path} is not a model: expected a save_pretrained folder, a pruned or INT8 "
                               f"checkpoint, or a folder with {ONNX_FILE}")
    return Variant(path.name, fmt.name, str(path.resolve()))


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
