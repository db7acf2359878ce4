"""How close a BERT ONNX model runs to the CPU: useful MACs per sentence, the runtime's own matmul peak, the share.

Useful MACs count what a sentence needs at its real length (no padding): per layer the QKV projection,
attention scores and context (quadratic in length), the output projection and the FFN, then pooler and
classifier once. Shapes come from the graph's weights, so pruned layers (fewer heads or FFN neurons per
layer) and FP32, dynamic or static INT8 graphs of one model all count the same.
The peak is what ONNX Runtime itself reaches on one large matmul (the best of several shapes), so
"share of peak" says how much of the kernel speed the model's small, many-node graph leaves unused.
"""
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from lib.runtime.onnxrt import session

# Where each op keeps its constant weight (K x N, or N x K for Gemm with transB).
WEIGHT_INPUT = {"MatMul": 1, "MatMulInteger": 1, "MatMulIntegerToFloat": 1, "DynamicQuantizeMatMul": 1,
                "QLinearMatMul": 3, "Gemm": 1, "Attention": 1, "QAttention": 1}
PEAK_SHAPES = ((256, 1024, 1024), (1024, 1024, 1024), (512, 768, 3072), (2048, 384, 1536), (4096, 1024, 256))


def _weight_shapes(graph) -> list[tuple[onnx.NodeProto, tuple]]:
    """(node, weight shape) of every node with a constant weight, looking through DequantizeLinear (QDQ)."""
    inits = {i.name: tuple(i.dims) for i in graph.initializer}
    dq = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    out = []
    for node in graph.node:
        idx = WEIGHT_INPUT.get(node.op_type)
        if idx is None or len(node.input) <= idx:
            continue
        name = node.input[idx]
        shape = inits.get(name) or inits.get(dq.get(name, ""))
        if shape and len(shape) == 2:
            out.append((node, shape))
    return out


def after_cls(graph) -> set[str]:
    """Names of the nodes that run on one vector per sentence: everything downstream of the Gather along
    the sequence axis that picks the CLS position (pooler and classifier, Gemm or, once INT8, MatMul).
    Embedding lookups gather along axis 0, also when QDQ feeds them a DequantizeLinear output."""
    per_sentence, tensors = set(), set()
    for node in graph.node:  # ONNX graphs are stored in topological order
        cls_pick = node.op_type == "Gather" and any(a.name == "axis" and a.i == 1 for a in node.attribute)
        if cls_pick or tensors.intersection(node.input):
            per_sentence.add(node.name)
            tensors.update(node.output)
    return per_sentence


def layer_shapes(onnx_path) -> dict:
    """The graph's matmul shapes: per-token (K, N) projections, attention widths, per-sentence (K, N) head GEMMs."""
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    shapes, per_sentence = {"token": [], "attention_width": [], "sentence": []}, after_cls(graph)
    for node, (k, n) in _weight_shapes(graph):
        if node.op_type in ("Attention", "QAttention"):
            shapes["token"].append((k, n))  # packed QKV: hidden x 3 * all_head_size
            shapes["attention_width"].append(n // 3)
        elif node.name in per_sentence:  # a MAC count does not care whether B is stored transposed
            shapes["sentence"].append((k, n))
        else:
            shapes["token"].append((k, n))
    return shapes


def macs_per_sentence(onnx_path, token_counts) -> dict:
    """Mean useful multiply-accumulates per sentence for sentences of these real token counts, by part."""
    s = layer_shapes(onnx_path)
    lengths = np.asarray(token_counts, dtype=np.float64)
    linear = lengths.mean() * sum(k * n for k, n in s["token"])
    # QK^T and softmax(QK^T) V: length x length x head_dim per head, i.e. length^2 x all_head_size each.
    attention = 2 * (lengths ** 2).mean() * sum(s["attention_width"])
    head = float(sum(k * n for k, n in s["sentence"]))
    return {"linear": float(linear), "attention": float(attention), "head": head,
            "total": float(linear + attention + head), "mean_tokens": float(lengths.mean())}


def share_of_peak(macs: float, sentences_per_s: float, peak_gops: float) -> float:
    """Fraction of the peak reached: 2 ops per MAC, times sentences per second, over peak ops per second."""
    return 2 * macs * sentences_per_s / (peak_gops * 1e9)


def matmul_model(m: int, k: int, n: int, kind: str, seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """One-node graph A[m,k] @ B[k,n] with B constant (ORT pre-packs it, as in a model): uint8 x int8 ->
    int32 MatMulInteger for "int8", float MatMul for "fp32"; plus a feed for A. INT8 weights are 7-bit, as the
    study's INT8 graphs write them: full-range int8 overflows VPMADDUBSW's int16 pair sums on CPUs without VNNI."""
    rng = np.random.default_rng(seed)
    if kind == "int8":
        a = rng.integers(0, 256, (m, k), dtype=np.uint8)
        b = rng.integers(-64, 64, (k, n), dtype=np.int8)
        node = helper.make_node("MatMulInteger", ["A", "B"], ["Y"])
        a_type, y_type = TensorProto.UINT8, TensorProto.INT32
    elif kind == "fp32":
        a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
        node = helper.make_node("MatMul", ["A", "B"], ["Y"])
        a_type = y_type = TensorProto.FLOAT
    else:
        raise ValueError(f"kind {kind!r} is neither int8 nor fp32")
    graph = helper.make_graph([node], f"peak_{kind}", [helper.make_tensor_value_info("A", a_type, [m, k])],
                              [helper.make_tensor_value_info("Y", y_type, [m, n])], [numpy_helper.from_array(b, "B")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, {"A": a}


def time_matmul(m: int, k: int, n: int, kind: str, threads: int = 2, seconds: float = 1.0) -> float:
    """GOP/s (2 ops per MAC) of ORT on one matmul shape: the fastest of repeated runs within `seconds`."""
    model, feed = matmul_model(m, k, n, kind)
    sess = session(model.SerializeToString(), threads)
    sess.run(None, feed)
    best, start = float("inf"), time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        sess.run(None, feed)
        best = min(best, time.perf_counter() - t)
    return 2 * m * k * n / best / 1e9


def peak_gops(kind: str, threads: int = 2, shapes=PEAK_SHAPES, seconds: float = 1.0) -> dict:
    """The best GOP/s over `shapes` and every shape's figure."""
    per_shape = {f"{m}x{k}x{n}": time_matmul(m, k, n, kind, threads, seconds) for m, k, n in shapes}
    best = max(per_shape, key=per_shape.get)
    return {"kind": kind, "threads": threads, "gops": per_shape[best], "shape": best, "per_shape": per_shape}


def interleaved_seconds(passes: dict, rounds: int = 3) -> dict[str, list[float]]:
    """Wall seconds of each pass (a no-argument callable) per round, the passes run in turn and their order
    rotated every round, so background load from other processes falls on all of them alike."""
    names, times = list(passes), {n: [] for n in passes}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            passes[name]()
            times[name].append(time.perf_counter() - start)
    return times
