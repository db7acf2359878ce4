"""ONNX Runtime inference without torch: a session with pinned threads, and a predict over tokenizer output."""
from pathlib import Path

import numpy as np

from lib import manifest
from lib.errors import FinCompressError
from lib.variants import ONNX_FILE


def session(path, threads: int = 2):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def predictor(sess):
    """inputs (numpy arrays or CPU tensors, as a tokenizer returns them) -> logits as a numpy array."""
    names = [i.name for i in sess.get_inputs()]

    def predict(inputs: dict):
        return sess.run(None, {n: np.ascontiguousarray(np.asarray(inputs[n]), dtype=np.int64) for n in names})[0]
    return predict


def load(path, threads: int = 2):
    """(predict, tokenizer) for an ONNX variant folder (model.onnx + tokenizer) or a .onnx file beside one."""
    path = Path(path)
    model_file = path / ONNX_FILE if path.is_dir() else path
    manifest.check(model_file.parent)
    if not model_file.is_file():
        raise FinCompressError(f"{path} holds no {ONNX_FILE}; pass an onnx variant folder written by stage 03")
    from transformers import AutoTokenizer
    return predictor(session(model_file, threads)), AutoTokenizer.from_pretrained(model_file.parent)
