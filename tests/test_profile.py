"""Issue 30, item 6 (lib/measure/profile.py): where the shipped model's time goes, per operator group, from ONNX
Runtime's profiling trace (OpenVINO's performance counters read the same way), and the GEMM group against the peak."""
import json
from datetime import timedelta
from types import SimpleNamespace

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from lib.core.files import write_json
from lib.core.variants import Variant
from lib.measure import profile
from lib.runtime import onnxrt
from tests import tiny_model
from tests.test_predict_here import model  # noqa: F401  (fixture)

M, K, N = 4, 16, 8


def tiny_graph() -> bytes:
    """X[M,K] @ W[K,N] -> Softmax -> LayerNormalization -> Abs: one op per group but quantize/dequantize, one other."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("MatMul", ["X", "W"], ["Y"]), helper.make_node("Softmax", ["Y"], ["S"], axis=-1),
             helper.make_node("LayerNormalization", ["S", "G", "B"], ["L"], axis=-1),
             helper.make_node("Abs", ["L"], ["Z"])]
    inits = [numpy_helper.from_array(rng.standard_normal((K, N)).astype(np.float32), "W"),
             numpy_helper.from_array(np.ones(N, np.float32), "G"), numpy_helper.from_array(np.zeros(N, np.float32), "B")]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [M, K])],
                              [helper.make_tensor_value_info("Z", TensorProto.FLOAT, [M, N])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> list:
    """A recorded trace of tiny_graph: 5 runs on basic optimizations (no fusion), the profile file read back."""
    sess = onnxrt.session(tiny_graph(), settings=onnxrt.Settings(1, "basic"),
                          profile_prefix=str(tmp_path_factory.mktemp("trace") / "ort"))
    for _ in range(5):
        sess.run(None, {"X": np.ones((M, K), np.float32)})
    return json.loads(open(sess.end_profiling()).read())


def test_op_types_fall_in_their_groups_and_unknown_ones_in_other():
    expected = {"GEMM": ["MatMulInteger", "QGemm", "MatMulIntegerToFloat", "DynamicQuantizeMatMul", "Gemm", "MatMul",
                         "FusedMatMul", "FullyConnected"],
                "attention": ["QAttention", "Attention", "MultiHeadAttention", "Softmax"],
                "quantize/dequantize": ["DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "FakeQuantize"],
                "layer norm": ["SkipLayerNormalization", "LayerNormalization", "EmbedLayerNormalization", "MVN"],
                "other": ["Gather", "Add", "Gelu", "Tanh", "NoSuchOp", "", "matmul"]}
    for group, ops in expected.items():
        assert [profile.group_of(op) for op in ops] == [group] * len(ops), group
    assert set(profile.OP_GROUPS.values()) == set(profile.GROUPS) - {"other"}


def test_a_recorded_trace_sums_to_its_node_total_without_the_warm_up_runs(trace):
    kernels = sorted((e for e in trace if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")),
                     key=lambda e: e["ts"])
    per_run = len(kernels) // 5
    assert per_run == 4 and len(kernels) == 20  # MatMul, Softmax, LayerNormalization, Abs, five times
    ops, wall, runs = profile.ort_ops(trace, skip=2)
    assert runs == 3 and len(ops) == 3 * per_run
    assert sum(o.us for o in ops) == pytest.approx(sum(e["dur"] for e in kernels[2 * per_run:]))
    assert sorted({o.op_type for o in ops}) == ["Abs", "LayerNormalization", "MatMul", "Softmax"]
    assert 0 < sum(o.us for o in ops) <= wall
    assert {o.macs for o in ops if o.op_type == "MatMul"} == {float(M * K * N)}
    assert all(o.macs is None for o in ops if o.op_type != "MatMul")
    assert profile.ort_ops(trace, skip=5) == ([], 0.0, 0)


def test_shares_sum_to_one_and_the_gemm_rate_is_its_macs_over_its_time():
    ops = [profile.Op("MatMulInteger", 300.0, 3e6), profile.Op("DynamicQuantizeMatMul", 100.0, 1e6),
           profile.Op("QAttention", 250.0), profile.Op("DynamicQuantizeLinear", 50.0),
           profile.Op("SkipLayerNormalization", 100.0), profile.Op("Gelu", 150.0), profile.Op("Mystery", 50.0)]
    peak = {"int8": {"gops": 100.0}, "fp32": {"gops": 40.0}}
    s = profile.summarize(ops, wall_us=1250.0, sentences=4, peak=peak)
    assert list(s["groups"]) == list(profile.GROUPS)
    assert sum(g["share"] for g in s["groups"].values()) == pytest.approx(1.0)
    assert sum(o["share"] for o in s["ops"]) == pytest.approx(1.0)
    assert s["groups"]["GEMM"]["share"] == pytest.approx(0.4) and s["groups"]["other"]["us"] == 200.0
    assert s["groups"]["GEMM"]["share_of_wall"] == pytest.approx(0.32) and s["node_share_of_wall"] == pytest.approx(0.8)
    assert s["groups"]["attention"]["ms_per_sentence"] == pytest.approx(0.0625)
    assert s["gemm_gops"] == pytest.approx(2 * 4e6 / 400e-6 / 1e9)  # 20 GOP/s
    assert s["gemm_share_int8_peak"] == pytest.approx(0.2) and s["gemm_share_fp32_peak"] == pytest.approx(0.5)
    assert [o["op_type"] for o in s["ops"]][:2] == ["MatMulInteger", "QAttention"] and s["ops"][0]["calls"] == 1
    assert profile.summarize(ops, 1250.0, 4, None)["gemm_share_int8_peak"] is None
    unknown = profile.summarize(ops + [profile.Op("FullyConnected", 10.0)], 1250.0, 4, peak)  # no shapes: no rate
    assert unknown["gemm_gops"] is None and unknown["gemm_share_int8_peak"] is None


def test_openvino_performance_counters_read_as_ops():
    def info(node_type, us, status):
        return SimpleNamespace(node_type=node_type, real_time=timedelta(microseconds=us), status=status)
    infos = [info("FullyConnected", 120, "Status.EXECUTED"), info("MVN", 30, "Status.EXECUTED"),
             info("Reshape", 0, "Status.OPTIMIZED_OUT"), info("Softmax", 15, "Status.NOT_RUN")]
    ops = profile.openvino_ops(infos)
    assert ops == [profile.Op("FullyConnected", 120.0), profile.Op("MVN", 30.0)]
    assert [profile.group_of(o.op_type) for o in ops] == ["GEMM", "layer norm"]


def test_the_openvino_collector_leaves_the_warm_up_requests_out():
    class Request:
        def __init__(self):
            self.fed = []

        def infer(self, feed):
            self.fed.append(feed)

        def get_profiling_info(self):  # counters of the last request: one FullyConnected per input row
            rows = len(self.fed[-1]["input_ids"])
            return [SimpleNamespace(node_type="FullyConnected", real_time=timedelta(microseconds=10 * rows),
                                    status="Status.EXECUTED")]
    request = Request()
    compiled = SimpleNamespace(create_infer_request=lambda: request,
                               inputs=[SimpleNamespace(get_any_name=lambda: "input_ids")])
    feeds = [{"input_ids": np.zeros((rows, 5)), "other": None} for rows in (1, 2)]
    ops, wall, runs = profile.collect_openvino(compiled, feeds)
    assert len(request.fed) == profile.WARMUP + 2 and set(request.fed[0]) == {"input_ids"}
    assert runs == 2 and ops == [profile.Op("FullyConnected", 10.0), profile.Op("FullyConnected", 20.0)] and wall > 0


def test_the_shipped_model_is_profiled_as_predict_serves_it(model, tmp_path):  # noqa: F811
    record = profile.run(model, tiny_model.TEXTS * 6, onnxrt.Settings(1), n=4, peak={"int8": {"gops": 50.0},
                         "fp32": {"gops": 20.0}}, name="shipped")
    assert record["variant"] == "shipped" and record["settings"]["threads"] == 1
    b1, b32 = record["batches"]["batch_1"], record["batches"]["batch_32"]
    assert (b1["sentences"], b1["runs"], b32["sentences"], b32["runs"]) == (4, 4, 32, 1)
    for b in (b1, b32):
        assert sum(g["share"] for g in b["groups"].values()) == pytest.approx(1.0)
        assert b["groups"]["GEMM"]["us"] > 0 and 0 < b["node_share_of_wall"] <= 1
        assert b["gemm_gops"] > 0 and b["gemm_share_int8_peak"] == pytest.approx(b["gemm_gops"] / 50.0)
    write_json(tmp_path / "p.json", record)  # strict JSON: no NaN anywhere
    assert json.loads((tmp_path / "p.json").read_text()) == json.loads(json.dumps(record))
    table = profile.table(record)
    assert table["group"].tolist() == [*profile.GROUPS, "all nodes"]
    assert table.loc[0, "% of INT8 peak (batch 32)"] != "" and table.loc[1, "% of INT8 peak (batch 32)"] == ""
    assert "At batch 1 (4 sentences, 4 runs)" in profile.summary(record, "") and "batch 32" in profile.text(record)
    assert not list(tmp_path.glob("ort*.json")) and not list(model.glob("ort*.json"))  # traces are no output


def test_no_profile_without_sentences_or_an_onnx_model(model):  # noqa: F811
    onnx = Variant("shipped", "onnx", str(model), "teacher", ("onnx_export",), "06_stacking", "int8")
    torch_one = Variant("q", "torch_int8", str(model), "teacher", ("torch_int8",), "03_quantization", "int8")
    assert profile.of_variant(onnx, model.parent, tiny_model.TEXTS, 0, onnxrt.Settings(1), None) is None
    assert profile.of_variant(torch_one, model.parent, tiny_model.TEXTS, 3, onnxrt.Settings(1), None) is None
    assert profile.why_none(0, "x") == "profile_n = 0" and "neither ONNX Runtime nor OpenVINO" in profile.why_none(3, "q")
    assert profile.summary(None, "profile_n = 0") == "No per-operator profile (profile_n = 0)."
    assert profile.of_variant(onnx, model.parent, tiny_model.TEXTS, 2, onnxrt.Settings(1), None)["variant"] == "shipped"


def test_an_openvino_model_is_profiled_from_its_performance_counters(tmp_path):
    pytest.importorskip("openvino", reason="the OpenVINO runtime is not installed")
    from lib.techniques import openvino_export as ovx
    from lib.techniques.onnx_export import save_onnx_fp32
    classifier, tokenizer = tiny_model.tiny_classifier()
    fp32_dir, _ = save_onnx_fp32("t", classifier, tokenizer, tiny_model.TEXTS, tmp_path, 1e-3)
    ir, _ = ovx.save_openvino_fp32("t", fp32_dir, tokenizer, tmp_path, tiny_model.TEXTS[:4], 1e-3)
    variant = Variant("t_openvino", "openvino", str(ir), "t", ("onnx_export", "openvino"), "06_stacking", "fp32")
    record = profile.of_variant(variant, tmp_path, tiny_model.TEXTS * 6, 4, onnxrt.Settings(1), None)
    assert record["runtime"] == "openvino" and record["settings"] == {"threads": 1, "precision": "f32"}
    b1, b32 = record["batches"]["batch_1"], record["batches"]["batch_32"]
    assert (b1["runs"], b32["runs"]) == (4, 1)
    for b in (b1, b32):
        assert sum(g["share"] for g in b["groups"].values()) == pytest.approx(1.0)
        assert b["groups"]["GEMM"]["us"] > 0 and b["groups"]["other"]["share"] < 1
