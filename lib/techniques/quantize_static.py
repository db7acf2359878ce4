"""Static INT8 in ONNX Runtime: activation scales calibrated once on training sentences.

Why static: dynamic INT8 picks each activation's scale from the batch it sees, padding included, so a
sentence's logits (and sometimes its label) depend on its batch-mates; with fixed scales every row is
computed on its own. What ORT's `quantize_static` (QDQ format) does with lib.runtime.onnx_graph's fused graph,
and what this module adds (`scripts/static_int8_graphs.py` shows the optimized graphs and times them):
- MatMul: DQ -> MatMul with the output left FP32 is fused at load into MatMulIntegerToFloat (INT8 GEMM,
  FP32 out); quantizing the output too gives QLinearMatMul plus a DequantizeLinear, slower and coarser.
- The fused com.microsoft.Attention node has no QDQ support, and ORT does not fuse DQ + Attention into
  QAttention at load, so its QKV projection (a quarter of a layer's MACs) would stay FP32. We rewrite it
  into QAttention, the op the dynamic quantizer makes, fed by a QuantizeLinear with the calibrated scale.
- The pooler is a Gemm: QDQ with FP32 output fuses it into QGemm (INT8, FP32 out); left FP32 it costs
  0.44 MB on disk at width 384. The classifier (the Gemm writing the logits) stays FP32.
- QDQ quantizes a tensor for every consumer: the LayerNorm output feeding the FFN also feeds the
  residual, which would read the 8-bit copy. An Identity in front of each MatMul input keeps it FP32.
"""
import logging
import tempfile
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from lib.core.errors import FinCompressError
from lib.data.batching import length_sorted
from lib.modeling.device import quiet
from lib.runtime.onnxrt import STATIC_INT8

CALIBRATIONS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.999  # ORT's default; cut both tails (uint8 activations are asymmetric)
# ORT's own Entropy defaults (128 bins, 128 quantized bins) leave one candidate threshold, the full range:
# plain MinMax under another name. 512 bins against 256 levels (8 bits over the window) give 129 candidates.
ENTROPY_BINS = {"num_bins": 512, "num_quantized_bins": 256}
# Kernels that compute a projection in INT8, and the FP32 ones a projection would otherwise run as.
INT8_OPS = ("QAttention", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "QLinearMatMul", "MatMulInteger", "QGemm")
FP32_OPS = ("Attention", "MatMul", "Gemm", "FusedGemm", "FusedMatMul")


def calibration_inputs(tokenizer, texts: list[str], n: int = 256, batch_size: int = 16, seed: int = 0,
                       max_length: int = 128) -> list[dict]:
    """n sentences drawn at random, sorted by length so batches carry little padding, tokenized as numpy feeds."""
    if not texts:
        raise FinCompressError("static INT8 needs calibration sentences; pass some training sentences")
    rng = np.random.default_rng(seed)
    pick = [texts[i] for i in rng.choice(len(texts), size=min(n, len(texts)), replace=False)]
    feeds = []
    for batch in length_sorted(tokenizer, pick, batch_size, max_length):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feeds.append({k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc})
    return feeds


def _reader(feeds: list[dict]):
    from onnxruntime.quantization import CalibrationDataReader

    class FeedReader(CalibrationDataReader):
        """Hands ORT's calibrator one tokenized batch at a time."""

        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)
    return FeedReader()


def isolate_matmul_inputs(model: onnx.ModelProto) -> onnx.ModelProto:
    """Give each MatMul whose input has other consumers its own copy (an Identity, removed again at load),
    so QDQ quantizes the MatMul's view of the tensor and the residual path keeps FP32."""
    uses = {}
    for node in model.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    nodes = []
    for node in model.graph.node:
        if node.op_type == "MatMul" and uses.get(node.input[0], 0) > 1:
            copy = f"{node.name}/input"
            nodes.append(helper.make_node("Identity", [node.input[0]], [copy], name=f"{node.name}/isolate"))
            node.input[0] = copy
        nodes.append(node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model


def calibrate(model_path: Path, feeds: list[dict], calibration: str, op_types=("MatMul", "Attention", "Gather", "Gemm")):
    """Activation ranges (ORT TensorsData) of the inputs and outputs of `op_types` nodes (None: all) over `feeds`.
    One batch per collect_data call: ORT's histogram collector stacks a call's batches, so they must share
    a shape, and it holds every intermediate output of the call in memory until merged."""
    from onnxruntime.quantization import CalibrationMethod, create_calibrator
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibration]
    options = {"percentile": {"percentile": PERCENTILE, "symmetric": False}, "entropy": ENTROPY_BINS}.get(calibration, {})
    with tempfile.TemporaryDirectory() as tmp, quiet():  # the histogram calibrators print their settings
        cal = create_calibrator(Path(model_path), op_types and list(op_types), str(Path(tmp) / "augmented.onnx"),
                                calibrate_method=method, extra_options=options)
        for feed in feeds:
            cal.collect_data(_reader([feed]))
        return cal.compute_data()


def uint8_params(rmin: float, rmax: float) -> tuple[float, int]:
    """Asymmetric uint8 scale and zero point covering [rmin, rmax] and 0 (ORT's formula)."""
    rmin, rmax = min(float(np.min(rmin)), 0.0), max(float(np.max(rmax)), 0.0)
    scale = (rmax - rmin) / 255.0 if rmax > rmin else 1.0
    return scale, int(np.clip(round(-rmin / scale), 0, 255))


def _qattention(node, weight: np.ndarray, x_range, reduce_range: bool) -> tuple[list, list]:
    """QuantizeLinear(x, calibrated scale) -> QAttention with per-column symmetric INT8 QKV weights."""
    x, name = node.input[0], node.name
    scale, zero = uint8_params(*x_range)
    qmax = 63 if reduce_range else 127  # 7-bit weights, as ORT's own Attention quantizer writes them
    w_scale = np.maximum(np.abs(weight).max(axis=0), 1e-8) / qmax
    inits = [numpy_helper.from_array(np.array(scale, np.float32), f"{name}/x_scale"),
             numpy_helper.from_array(np.array(zero, np.uint8), f"{name}/x_zero"),
             numpy_helper.from_array(np.clip(np.round(weight / w_scale), -qmax, qmax).astype(np.int8), f"{name}/w_int8"),
             numpy_helper.from_array(w_scale.astype(np.float32), f"{name}/w_scale"),
             numpy_helper.from_array(np.zeros(weight.shape[1], np.int8), f"{name}/w_zero")]
    quant = helper.make_node("QuantizeLinear", [x, f"{name}/x_scale", f"{name}/x_zero"], [f"{name}/x_uint8"],
                             name=f"{name}/quantize_input")
    mask = node.input[3] if len(node.input) > 3 else ""
    qatt = helper.make_node("QAttention", [f"{name}/x_uint8", f"{name}/w_int8", node.input[2], f"{name}/x_scale",
                                           f"{name}/w_scale", mask, f"{name}/x_zero", f"{name}/w_zero"],
                            list(node.output), name=name, domain="com.microsoft")
    qatt.attribute.extend(node.attribute)
    qatt.metadata_props.extend(node.metadata_props)  # keeps onnx_nodes_for working on the INT8 graph
    return [quant, qatt], inits


def attention_to_qattention(model: onnx.ModelProto, ranges, skip=(), reduce_range: bool = True) -> int:
    """Rewrite each fused Attention node (not in `skip`) into static QAttention; returns how many."""
    inits = {i.name: i for i in model.graph.initializer}
    nodes, done = [], 0
    for node in model.graph.node:
        if node.op_type != "Attention" or node.name in set(skip) or node.input[0] not in ranges:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        new_nodes, new_inits = _qattention(node, weight, ranges[node.input[0]].range_value, reduce_range)
        nodes += new_nodes
        model.graph.initializer.extend(new_inits)
        done += 1
    used = {i for n in nodes for i in n.input}
    kept = [i for i in model.graph.initializer if i.name in used]  # the FP32 QKV weights that were replaced
    del model.graph.node[:], model.graph.initializer[:]
    model.graph.node.extend(nodes)
    model.graph.initializer.extend(kept)
    return done


def static_exclusions(model: onnx.ModelProto, exclude) -> list[str]:
    """Nodes QDQ must leave alone: the FP32-kept ones, the Attention nodes (rewritten separately), Gathers of
    activations (the CLS pick), where 8 bits would only add error, and the node writing the graph's outputs (the
    classifier: a few KB, and its rounding lands on the logits unscaled)."""
    inits, outputs = {i.name for i in model.graph.initializer}, {o.name for o in model.graph.output}
    own = [n.name for n in model.graph.node if n.op_type == "Attention" or set(n.output) & outputs
           or (n.op_type == "Gather" and n.input[0] not in inits)]
    return sorted(set(exclude) | set(own))


def choose_calibration(scores: dict[str, dict]) -> str:
    """The calibration method with the best validation macro-F1 (ties: the earlier of CALIBRATIONS). Reads
    `val_macro_f1` only: test figures sit beside it for the report and never move the choice."""
    if not scores:
        raise FinCompressError("no calibration method was scored; pass at least one of " + ", ".join(CALIBRATIONS))
    return max(scores, key=lambda m: (scores[m]["val_macro_f1"], -CALIBRATIONS.index(m)))


def loaded_ops(path: Path) -> dict[str, int]:
    """Op types (count) of the graph ONNX Runtime runs after its load-time fusions. ORT_ENABLE_EXTENDED: the
    graph written at ALL adds machine-specific layouts, the INT8/FP32 kernels are the same."""
    import onnxruntime as ort
    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.optimized_model_filepath, opts.log_severity_level = str(Path(tmp) / "optimized.onnx"), 3
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        ops = [n.op_type for n in onnx.load(str(Path(tmp) / "optimized.onnx")).graph.node]
    return {op: ops.count(op) for op in sorted(set(ops))}


def int8_summary(ops: dict[str, int]) -> str:
    """One line: which projections run as INT8 kernels and which stay FP32."""
    int8 = [f"{ops[o]} {o}" for o in INT8_OPS if ops.get(o)]
    fp32 = [f"{ops[o]} {o}" for o in FP32_OPS if ops.get(o)]
    return f"INT8 {', '.join(int8) or 'none'} (FP32 {', '.join(fp32) or 'none'})"


def check_calibration(calibration: str) -> None:
    if calibration not in CALIBRATIONS:
        raise FinCompressError(f"calibration {calibration!r} is not one of {', '.join(CALIBRATIONS)}; pass one of them")


def ranges_for(src: Path, feeds: list[dict], calibration: str = "minmax"):
    """Activation ranges of an FP32 graph, calibrated once on `feeds` by `calibration`: what quantize() reads, for any
    number of quantizations of that graph (kept-FP32 sets, attention on or off)."""
    check_calibration(calibration)
    if not feeds:
        raise FinCompressError("static INT8 needs calibration batches; build them with "
                               "quantize_static.calibration_inputs(tokenizer, train_texts)")
    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(isolate_matmul_inputs(onnx.load(str(src))), str(Path(tmp) / "isolated.onnx"))
        return calibrate(Path(tmp) / "isolated.onnx", feeds, calibration)


def quantize(src: Path, dst: Path, ranges, exclude=(), per_channel: bool = True, attention_int8: bool = True) -> None:
    """Static INT8 of an FP32 ONNX graph with ranges from ranges_for: QDQ MatMuls and embedding Gathers, fused
    Attention -> QAttention; 7-bit weights throughout (no VPMADDUBSW overflow without VNNI: quantize.quantize_onnx)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.calibrate import save_tensors_data
    logging.getLogger().setLevel(logging.ERROR)  # ORT logs a pre-processing hint at WARNING on every call
    model = isolate_matmul_inputs(onnx.load(str(src)))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        onnx.save(model, str(tmp / "isolated.onnx"))
        save_tensors_data(ranges, tmp / "ranges.json")  # quantize_static reads ranges from its cache file
        quantize_static(str(tmp / "isolated.onnx"), str(tmp / "qdq.onnx"), None, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul", "Gather", "Gemm"], per_channel=per_channel, reduce_range=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=static_exclusions(model, exclude), calibrate_method=ranges.calibration_method,
                        calibration_cache_path=str(tmp / "ranges.json"),
                        extra_options={"OpTypesToExcludeOutputQuantization": ["MatMul", "Gemm"], "MatMulConstBOnly": True})
        qmodel = onnx.load(str(tmp / "qdq.onnx"))
    if attention_int8:
        attention_to_qattention(qmodel, ranges, skip=exclude)
    qmodel.metadata_props.add(key=STATIC_INT8[0], value=STATIC_INT8[1])  # fixed scales: batch-mates cannot move its logits
    onnx.save(qmodel, str(dst))
