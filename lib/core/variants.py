"""Variants: what a compressed model is (a record), the files each format is stored in, and how a folder's
format is recognised. How each format loads is lib.formats, above the techniques that write them.

Producers fill a Variant's fields and consumers read them; no code parses a variant's name.
"""
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lib.core.errors import FinCompressError

# The files that make up each format; each format's `marker` file identifies a folder of that format.
HF_CONFIG = "config.json"
ONNX_FILE = "model.onnx"
OPENVINO_FILE = "openvino_model.xml"  # OpenVINO IR: the graph; its weights are openvino_model.bin beside it
TORCH_WEIGHTS = "quantized_state.pt"
SPEC_FILE = "pruning_spec.json"
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
# Format name -> the file whose presence identifies a folder of it, in the order detect() checks them:
# a pruned or INT8 folder also holds a config.json.
MARKERS = {"onnx": ONNX_FILE, "openvino": OPENVINO_FILE, "pruned": SPEC_FILE, "torch_int8": TORCH_WEIGHTS, "hf": HF_CONFIG}
# What serves each format, in words (the model card's).
RUNTIMES = {"onnx": "ONNX Runtime", "openvino": "OpenVINO", "pruned": "PyTorch (heads and FFN neurons removed)",
            "torch_int8": "PyTorch dynamic INT8", "hf": "PyTorch"}
# Where stage 05 writes the shipped model, under the run's out dir, and where `lib.predict` looks by default.
SHIPPED_MODEL = Path("artifacts") / "model"
# What every classifier of the study outputs, in logit order (here, below lib.data, so that serving needs no pandas).
LABELS = ("negative", "neutral", "positive")


@dataclass
class Variant:
    """One deployable model. `path` is relative to the run's out_dir (absolute when it lives outside it)."""
    name: str
    format: str                  # a key of MARKERS (and of lib.formats.FORMATS)
    path: str
    source: str | None = None    # the model it was made from: a variant's name, or the pretrained model of the teacher
    techniques: tuple = ()       # what was applied since the pretrained model, in order
    stage: str = ""              # the stage that wrote it
    precision: str = "fp32"      # of its weights: fp32, int8, fp16; bf16: FP32 weights run in bf16
    metrics: dict = field(default_factory=dict)  # the writing stage's own figures (F1 on its batching, size, latency)
    reference: bool = False      # an off-the-shelf reference row (lib.measure.reference): measured, never a candidate

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


def detect(path) -> Variant:
    """A model folder (or .onnx file) as a Variant, its format read from the files it holds."""
    path = Path(path)
    if not path.exists():
        raise FinCompressError(f"model {path} does not exist; pass an existing model folder")
    if path.is_file() and path.suffix == ".onnx":
        return Variant(path.stem, "onnx", str(path.parent.resolve()))
    fmt = next((name for name, marker in MARKERS.items() if path.is_dir() and (path / marker).is_file()), None)
    if fmt is None:
        raise FinCompressError(f"{path} is not a model: expected a save_pretrained folder, a pruned or INT8 "
                               f"checkpoint, or a folder with {ONNX_FILE} or {OPENVINO_FILE}")
    return Variant(path.name, fmt, str(path.resolve()))
