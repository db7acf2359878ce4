"""ONNX Runtime inference without torch: a session with pinned threads, and a predict over tokenizer output."""
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.variants import ONNX_FILE

TOKENIZER_FILE = "tokenizer.json"
# Metadata of a static INT8 (QDQ) graph, written by lib.techniques.quantize_static: its activation scales are fixed,
# not taken per batch, so a sentence's logits do not depend on its batch-mates; readable without the onnx package.
STATIC_INT8 = ("fincompress.activations", "static")
SETTINGS_FILE = "serving.json"  # a model folder's serving settings, chosen by stage 05 on the machine of its run
SETTINGS_KEY = "onnxruntime"  # the block of SETTINGS_FILE sessions read; the rest (what was measured) is for people
LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
# Threads: a fixed cap, not the CPU count, so what runs on one machine runs on any (and a container's os.cpu_count()
# is the host's); more threads than cores only contend, and 100,000 grew past 10 GB.
MAX_THREADS = 256


class Settings(NamedTuple):
    """The ONNX Runtime session settings serving varies, named as in SETTINGS_FILE; the defaults are ORT's own
    (threads aside: ORT would take every core). None is fixed here: stage 05 measures them on its machine."""
    threads: int = 2                       # intra-op threads
    graph_optimization_level: str = "all"  # a key of LEVELS
    intra_op_spinning: bool = True         # idle intra-op workers spin, waiting for work, instead of sleeping
    memory_pattern: bool = True            # plan memory once per input shape and reuse the plan


# What each setting may be: a test and its words (`type(v) is`, as JSON's true is no thread count, nor 1 a switch).
CHECKS = {"threads": (lambda v: type(v) is int and 1 <= v <= MAX_THREADS, f"a whole number in [1, {MAX_THREADS}]"),
          "graph_optimization_level": (lambda v: isinstance(v, str) and v in LEVELS, f"one of {', '.join(LEVELS)}"),
          "intra_op_spinning": (lambda v: type(v) is bool, "true or false"),
          "memory_pattern": (lambda v: type(v) is bool, "true or false")}


def settings_block(data: dict, path, key: str, checks: dict, make):
    """`make(**block)` for a SETTINGS_FILE's `key` block (the runtime's defaults for what it does not name), each value
    tested by `checks`. Values only: a model folder never gets to run code; a bad one is one line naming it and the fix."""
    block = data.get(key, {})
    if not isinstance(block, dict):
        raise FinCompressError(f"{path}: {key} is {json.dumps(block)[:40]}, expected an object; fix it "
                               "or re-export the model")
    for name, value in block.items():
        if name not in checks:
            raise FinCompressError(f"{path}: {key} names {json.dumps(name)[:40]}, not a serving setting "
                                   f"(known: {', '.join(checks)}); remove it or re-export the model")
        if not checks[name][0](value):
            raise FinCompressError(f"{path}: {key}.{name} is {json.dumps(value)[:40]}, expected "
                                   f"{checks[name][1]}; fix it or re-export the model")
    return make(**block)


def settings_from_json(data: dict, path) -> Settings:
    """The ONNX Runtime Settings a SETTINGS_FILE's data names (ORT's defaults for those it does not name)."""
    return settings_block(data, path, SETTINGS_KEY, CHECKS, Settings)


def session(path, threads: int = 2, settings: Settings | None = None, profile_prefix: str | None = None):
    """An InferenceSession on the CPU. `path`: a file or a serialized model (bytes). `settings` (threads included)
    when given, else ORT's defaults on `threads` intra-op threads; `profile_prefix`: trace every run to a JSON file
    named from it (lib.measure.profile). Which settings serve fastest depends on the
    machine (on the AMD box of issue 15, no spinning, no memory pattern and BASIC optimizations; on an Intel Xeon
    those cost 1.36x at batch 1 against ORT's defaults, issue 30): lib.measure.serving_search chooses them."""
    import onnxruntime as ort
    settings = settings or Settings(threads)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = settings.threads, 1
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[settings.graph_optimization_level])
    opts.log_severity_level = 3  # errors only: optimizer notices are not the user's business
    opts.add_session_config_entry("session.intra_op.allow_spinning", str(int(settings.intra_op_spinning)))
    opts.enable_mem_pattern = settings.memory_pattern
    if profile_prefix:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    return ort.InferenceSession(path if isinstance(path, bytes) else str(path), opts, providers=["CPUExecutionProvider"])


def predictor(sess):
    """inputs (numpy arrays or CPU tensors, as a tokenizer returns them) -> logits as a numpy array."""
    names = [i.name for i in sess.get_inputs()]

    def predict(inputs: dict):
        return sess.run(None, {n: np.ascontiguousarray(np.asarray(inputs[n]), dtype=np.int64) for n in names})[0]
    return predict


def model_file(path) -> Path:
    """The .onnx file of a variant folder, or the file itself."""
    path = Path(path)
    found = path / ONNX_FILE if path.is_dir() else path
    manifest.check(found.parent)  # a damaged file is one line naming the stage to re-run
    if not found.is_file():
        raise FinCompressError(f"{path} holds no {ONNX_FILE}; pass an onnx variant folder written by stage 03")
    return found


def load(path, threads: int = 2):
    """(predict, tokenizer) for an ONNX variant folder (model.onnx + tokenizer) or a .onnx file beside one."""
    found = model_file(path)
    from transformers import AutoTokenizer
    return predictor(session(found, threads)), AutoTokenizer.from_pretrained(found.parent)


def load_serving(path, settings: Settings):
    """(predict, tokenizers.Tokenizer, pad id) with numpy, onnxruntime and tokenizers only: no torch, no transformers."""
    found = model_file(path)
    tokenizer = serving_tokenizer(found.parent)
    return predictor(session(found, settings=settings)), tokenizer, pad_id(tokenizer, found.parent)


def serving_tokenizer(folder: Path):
    """The folder's tokenizers.Tokenizer (tokenizer.json): what every runtime serves with."""
    if not (folder / TOKENIZER_FILE).is_file():
        raise FinCompressError(f"{folder} has no {TOKENIZER_FILE}; re-export the model (a fast tokenizer "
                               "is saved with every variant)")
    from tokenizers import Tokenizer
    return Tokenizer.from_file(str(folder / TOKENIZER_FILE))


def pad_id(tokenizer, folder: Path) -> int:
    """The pad token's id: from the tokenizer's own padding, else tokenizer_config.json's pad_token, else [PAD]."""
    if tokenizer.padding:
        return tokenizer.padding["pad_id"]
    config = folder / "tokenizer_config.json"
    token = json.loads(config.read_text(encoding="utf-8")).get("pad_token") if config.is_file() else None
    token = token.get("content") if isinstance(token, dict) else token
    return tokenizer.token_to_id(token or "[PAD]") or 0
