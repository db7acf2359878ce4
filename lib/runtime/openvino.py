"""OpenVINO inference without torch: an IR folder (openvino_model.xml/.bin + tokenizer) compiled for the CPU with the
settings it ships with (serving.json's "openvino" block: threads, and f32 or bf16 execution)."""
import functools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.variants import OPENVINO_FILE
from lib.runtime import onnxrt

SETTINGS_KEY = "openvino"  # its block of onnxrt.SETTINGS_FILE, beside ONNX Runtime's
PRECISIONS = ("f32", "bf16")  # INFERENCE_PRECISION_HINT values: bf16 runs FP32 weights in bf16 where the CPU has it
BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs whose bf16 OpenVINO runs natively


class Settings(NamedTuple):
    """How an OpenVINO model is compiled for serving: latency hints, one stream, these threads and this precision.
    The precision is part of the variant (stage 06 writes it; its accuracy is scored that way), not a speed knob."""
    threads: int = 2
    precision: str = "f32"


CHECKS = {"threads": onnxrt.CHECKS["threads"],
          "precision": (lambda v: isinstance(v, str) and v in PRECISIONS, f"one of {', '.join(PRECISIONS)}")}


def settings_from_json(data: dict, path) -> Settings:
    """The OpenVINO Settings a SETTINGS_FILE's data names (f32 on 2 threads for those it does not name)."""
    return onnxrt.settings_block(data, path, SETTINGS_KEY, CHECKS, Settings)


def settings_of(folder: Path) -> Settings:
    """The Settings in a folder's SETTINGS_FILE (what stage 06 built it to run with), else the defaults."""
    path = Path(folder) / onnxrt.SETTINGS_FILE
    return settings_from_json(json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}, path)


def bf16_supported(flags) -> bool:
    """Whether a CPU with these /proc/cpuinfo flags runs bf16 natively (else OpenVINO would emulate it, slowly)."""
    return bool(set(flags) & set(BF16_FLAGS))


def compile_config(settings: Settings) -> dict:
    """OpenVINO's CPU properties for serving one request at a time."""
    return {"INFERENCE_PRECISION_HINT": settings.precision, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(settings.threads)}


@functools.cache
def core():
    """The process's one OpenVINO Core. Each Core's CPU plugin installs its own signal stack on the main thread and
    puts back the one it found when destroyed: Cores destroyed out of order leave it on unmapped memory, and the next
    signal (a Ctrl-C) kills the process with SIGSEGV. One Core for the process's life never swaps it back."""
    import openvino as ov
    return ov.Core()


def compiled(path, settings: Settings, perf_count: bool = False):
    """The IR at `path` (an .xml file, or an ov.Model) compiled for the CPU with `settings`; `perf_count` turns on the
    per-node performance counters lib.measure.profile reads."""
    import openvino as ov
    config = {**compile_config(settings), **({"PERF_COUNT": True} if perf_count else {})}
    return core().compile_model(path if isinstance(path, ov.Model) else str(path), "CPU", config)


def predictor(model):
    """inputs (numpy arrays or CPU tensors, as a tokenizer returns them) -> logits as a numpy array."""
    names = [i.get_any_name() for i in model.inputs]
    request = model.create_infer_request()

    def predict(inputs: dict):
        request.infer({n: np.ascontiguousarray(np.asarray(inputs[n]), dtype=np.int64) for n in names})
        return np.array(request.get_output_tensor(0).data)  # a copy: the request reuses its output buffer
    return predict


def model_file(path) -> Path:
    """The .xml file of an OpenVINO variant folder, or the file itself."""
    path = Path(path)
    found = path / OPENVINO_FILE if path.is_dir() else path
    manifest.check(found.parent)  # a damaged file is one line naming the stage to re-run
    if not found.is_file():
        raise FinCompressError(f"{path} holds no {OPENVINO_FILE}; pass an OpenVINO variant folder written by stage 06")
    return found


def load(path, threads: int = 2):
    """(predict, tokenizer) for an OpenVINO variant folder, compiled with its own settings on `threads` threads."""
    found = model_file(path)
    from transformers import AutoTokenizer
    settings = settings_of(found.parent)._replace(threads=threads)
    return predictor(compiled(found, settings)), AutoTokenizer.from_pretrained(found.parent)


def load_serving(path, settings: Settings):
    """(predict, tokenizers.Tokenizer, pad id) with numpy, openvino and tokenizers only: no torch, no transformers."""
    found = model_file(path)
    tokenizer = onnxrt.serving_tokenizer(found.parent)
    return predictor(compiled(found, settings)), tokenizer, onnxrt.pad_id(tokenizer, found.parent)
