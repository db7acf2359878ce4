"""ONNX Runtime inference without torch: a session with pinned threads, and a predict over tokenizer output."""
import json
from pathlib import Path

import numpy as np

from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.core.variants import ONNX_FILE

TOKENIZER_FILE = "tokenizer.json"
STATIC_INT8 = ("fincompress.activations", "static")  # metadata of a static INT8 (QDQ) graph: scales fixed, not per batch


def session(path, threads: int = 2, serving: bool = False, level: str | None = None):
    """`path`: a file or a serialized model (bytes). serving=True, for predict on a busy machine and any mix of
    sentence lengths: idle worker threads sleep instead of spinning (spinning takes the cores the others need:
    about 2x the wall time on 2 shared cores), and no memory pattern is kept per input shape (with a new shape
    every batch they only add memory: -55 MB peak RSS on 10,000 real sentences, no slower). Both measured by
    scripts/bench_predict.py. Serving also stops at BASIC graph optimizations: on the fused graph lib.runtime.onnx_graph
    writes, the EXTENDED/ALL rewrites made the shipped INT8 model slower (scripts/bench_runtime_options.py, 3 runs:
    batch 1 1.10-1.23x and batch 32 1.10-1.31x faster at BASIC vs 1.01 for a second ALL session; end to end
    through predict 1.09x at batch 1, 1.31x at batch 32, the same labels on the 505 val sentences). Not for a
    static INT8 (QDQ) graph: only the EXTENDED/ALL rewrites turn its QuantizeLinear/DequantizeLinear pairs into
    integer kernels, so at BASIC it runs FP32 matmuls between (de)quantizations: the static teacher took 14.8 ms
    at BASIC vs 2.0 ms at ALL for one 30-token sentence on 1 thread; serving runs such graphs at ALL. They are
    known by the STATIC_INT8 metadata lib.techniques.quantize_static writes, which the session itself reads: no onnx
    package (and no second parse of the file) on predict's path."""
    sess = _session(path, threads, serving, level or ("basic" if serving else "all"))
    if serving and level is None and sess.get_modelmeta().custom_metadata_map.get(STATIC_INT8[0]) == STATIC_INT8[1]:
        sess = _session(path, threads, serving, "all")
    return sess


def _session(path, threads: int, serving: bool, level: str):
    """One InferenceSession with session()'s options at graph optimization `level` ("all" or "basic")."""
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                     "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}[level]
    opts.log_severity_level = 3  # errors only: optimizer notices are not the user's business
    if serving:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.enable_mem_pattern = False
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


def load_serving(path, threads: int = 2):
    """(predict, tokenizers.Tokenizer, pad id) with numpy, onnxruntime and tokenizers only: no torch, no transformers."""
    found = model_file(path)
    if not (found.parent / TOKENIZER_FILE).is_file():
        raise FinCompressError(f"{found.parent} has no {TOKENIZER_FILE}; re-export the model (a fast tokenizer "
                               "is saved with every variant)")
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(found.parent / TOKENIZER_FILE))
    return predictor(session(found, threads, serving=True)), tokenizer, pad_id(tokenizer, found.parent)


def pad_id(tokenizer, folder: Path) -> int:
    """The pad token's id: from the tokenizer's own padding, else tokenizer_config.json's pad_token, else [PAD]."""
    if tokenizer.padding:
        return tokenizer.padding["pad_id"]
    config = folder / "tokenizer_config.json"
    token = json.loads(config.read_text(encoding="utf-8")).get("pad_token") if config.is_file() else None
    token = token.get("content") if isinstance(token, dict) else token
    return tokenizer.token_to_id(token or "[PAD]") or 0
