"""Static INT8 in ONNX Runtime (lib/techniques/quantize_static.py): batch-independent labels, which ops stay INT8 after ORT's
load-time fusion, FP32-kept modules, calibration methods, the val-only choice of method, bad input."""
import json

import numpy as np
import pytest
import torch

from lib.core.errors import FinCompressError
from lib.data.corpus import parse_phrasebank
from lib.runtime import onnxrt
from lib.techniques import quantize as q, quantize_static as qs
from tests.tiny_model import tiny_classifier


@pytest.fixture(scope="module")
def texts(data_dir):
    rows, _ = parse_phrasebank(data_dir / "financial_phrasebank" / "Sentences_AllAgree.txt")
    return [r["text"] for r in rows]


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory, texts):
    """tests/tiny_model's classifier as lib.runtime.onnx_graph's fused graph: (path, torch model, tokenizer)."""
    model, tokenizer = tiny_classifier()
    path = tmp_path_factory.mktemp("static") / "fp32.onnx"
    q.export_onnx(model, q.example_inputs(tokenizer, texts[:8]), path)
    return path, model, tokenizer


@pytest.fixture(scope="module")
def calib(fp32_onnx, texts):
    return qs.calibration_inputs(fp32_onnx[2], texts[100:], n=64, batch_size=16)


def logits(path, tokenizer, texts, batch_size):
    predict = onnxrt.predictor(onnxrt.session(path))
    return np.concatenate([predict(dict(tokenizer(texts[i:i + batch_size], padding=True, return_tensors="np")))
                           for i in range(0, len(texts), batch_size)])


def test_static_labels_do_not_depend_on_batching(fp32_onnx, calib, texts, tmp_path):
    src, _, tok = fp32_onnx
    sentences = texts[:64]
    q.quantize_onnx(src, tmp_path / "static.onnx", q.QuantConfig("static"), qs.ranges_for(src, calib))
    one, many = logits(tmp_path / "static.onnx", tok, sentences, 1), logits(tmp_path / "static.onnx", tok, sentences, 32)
    assert len(set(many.argmax(1))) > 1, "a model that predicts one class cannot show labels moving"
    assert np.abs(one - many).max() <= 1e-3 * np.abs(many).max() and (one.argmax(1) == many.argmax(1)).all()
    # The same check catches per-batch scales: dynamic INT8 of the same graph moves with its batch-mates.
    q.quantize_onnx(src, tmp_path / "dynamic.onnx")
    dyn_one, dyn_many = logits(tmp_path / "dynamic.onnx", tok, sentences, 1), logits(tmp_path / "dynamic.onnx", tok, sentences, 32)
    assert np.abs(dyn_one - dyn_many).max() > 10 * np.abs(one - many).max()


def test_static_graph_is_int8_where_it_counts(fp32_onnx, calib, texts, tmp_path):
    src, model, tok = fp32_onnx
    q.quantize_onnx(src, tmp_path / "static.onnx", q.QuantConfig("static"), qs.ranges_for(src, calib))
    ops = qs.loaded_ops(tmp_path / "static.onnx")
    # Every projection runs as an INT8 GEMM: QKV inside QAttention, the other three as MatMulIntegerToFloat.
    assert ops.get("QAttention") == 2 and "Attention" not in ops
    assert ops.get("MatMulIntegerToFloat") == 6 and "MatMul" not in ops and "QLinearMatMul" not in ops
    assert ops.get("QGemm") == 1 and ops.get("Gemm") == 1  # the pooler INT8, the classifier (writes the logits) FP32
    assert qs.int8_summary(ops) == "INT8 2 QAttention, 6 MatMulIntegerToFloat, 1 QGemm (FP32 1 Gemm)"
    # Random weights leave tiny margins, so labels say little here; the logits must be closer to FP32 than dynamic INT8's.
    with torch.inference_mode():
        ref = model(**q.example_inputs(tok, texts[:32])).logits.numpy()
    q.quantize_onnx(src, tmp_path / "dynamic.onnx")
    static, dynamic = (logits(tmp_path / f, tok, texts[:32], 32) for f in ("static.onnx", "dynamic.onnx"))
    assert np.abs(static - ref).mean() < np.abs(dynamic - ref).mean()
    assert (tmp_path / "static.onnx").stat().st_size < src.stat().st_size / 3


def test_keep_fp32_modules_in_static_mode(fp32_onnx, calib, tmp_path):
    src, _, _ = fp32_onnx
    keep = ["bert.encoder.layer.1.attention.self.value", "bert.encoder.layer.0.output.dense"]
    q.quantize_onnx(src, tmp_path / "static.onnx", q.QuantConfig("static", keep_fp32=tuple(keep)), qs.ranges_for(src, calib))
    ops = qs.loaded_ops(tmp_path / "static.onnx")
    assert ops.get("QAttention") == 1 and ops.get("Attention") == 1
    assert ops.get("MatMulIntegerToFloat") == 5 and ops.get("MatMul") == 1


def test_calibration_methods_give_different_ranges(fp32_onnx, calib):
    src = fp32_onnx[0]
    ranges = {m: qs.calibrate(src, calib, m) for m in qs.CALIBRATIONS}
    name = "bert.encoder.layer.0.intermediate.gelu"  # the FFN's GELU output: long right tail
    width = {m: float(np.max(r[name].range_value[1]) - np.min(r[name].range_value[0])) for m, r in ranges.items()}
    assert width["percentile"] < width["minmax"] and width["entropy"] < width["minmax"]


def test_calibration_batches_are_length_sorted(fp32_onnx, texts):
    tok = fp32_onnx[2]
    feeds = qs.calibration_inputs(tok, texts, n=40, batch_size=16, seed=1)
    assert [f["input_ids"].shape[0] for f in feeds] == [16, 16, 8]
    assert [f["input_ids"].shape[1] for f in feeds] == sorted(f["input_ids"].shape[1] for f in feeds)
    assert qs.calibration_inputs(tok, texts, n=40, seed=1)[0]["input_ids"].tolist() == feeds[0]["input_ids"].tolist()


def test_method_is_chosen_on_val_only():
    scores = {"minmax": {"val_macro_f1": 0.80, "test_macro_f1": 0.90}, "entropy": {"val_macro_f1": 0.82, "test_macro_f1": 0.70},
              "percentile": {"val_macro_f1": 0.82, "test_macro_f1": 0.95}}
    assert qs.choose_calibration(scores) == "entropy"  # best on val; a tie goes to the earlier method
    flipped = {m: {**s, "test_macro_f1": 1 - s["test_macro_f1"]} for m, s in scores.items()}
    assert qs.choose_calibration(flipped) == "entropy"
    assert qs.choose_calibration({m: {"val_macro_f1": s["val_macro_f1"]} for m, s in scores.items()}) == "entropy"
    assert qs.choose_calibration({**scores, "minmax": {"val_macro_f1": 0.83, "test_macro_f1": 0.0}}) == "minmax"


def test_bad_mode_or_missing_calibration_is_one_line_and_writes_nothing(fp32_onnx, tmp_path):
    src = fp32_onnx[0]
    with pytest.raises(FinCompressError, match="neither 'dynamic' nor 'static'"):
        q.QuantConfig("statc")
    with pytest.raises(FinCompressError, match="is not one of minmax, entropy, percentile"):
        q.QuantConfig("static", "kl")
    with pytest.raises(FinCompressError, match="is not one of minmax, entropy, percentile"):
        qs.ranges_for(src, [{}], "kl")
    with pytest.raises(FinCompressError, match="calibration batches"):
        qs.ranges_for(src, [], "minmax")
    with pytest.raises(FinCompressError, match="needs activation ranges; calibrate once"):
        q.quantize_onnx(src, tmp_path / "x.onnx", q.QuantConfig("static"))
    assert not (tmp_path / "x.onnx").exists()


def test_one_calibration_serves_many_quantizations(fp32_onnx, calib, tmp_path, monkeypatch):
    """Optimum's split: the calibrator runs once per graph and method, and its ranges quantize any kept-FP32 set."""
    src, calls = fp32_onnx[0], []
    real = qs.calibrate
    monkeypatch.setattr(qs, "calibrate", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    ranges = qs.ranges_for(src, calib, "entropy")
    keep = ("bert.encoder.layer.0.output.dense",)
    for name, kept in (("all.onnx", ()), ("keep.onnx", keep), ("again.onnx", ())):
        q.quantize_onnx(src, tmp_path / name, q.QuantConfig("static", "entropy", keep_fp32=kept), ranges)
    assert calls == ["entropy"]
    assert qs.loaded_ops(tmp_path / "keep.onnx").get("MatMul") == 1 and "MatMul" not in qs.loaded_ops(tmp_path / "all.onnx")
    assert (tmp_path / "all.onnx").read_bytes() == (tmp_path / "again.onnx").read_bytes()


def test_static_graphs_carry_their_mark(fp32_onnx, calib, tmp_path):
    # Fixed activation scales: the mark tells a static graph from a dynamic one without the onnx package.
    src = fp32_onnx[0]
    q.quantize_onnx(src, tmp_path / "static.onnx", q.QuantConfig("static"), qs.ranges_for(src, calib))
    q.quantize_onnx(src, tmp_path / "dynamic.onnx")
    key = onnxrt.STATIC_INT8[0]
    marks = {f: onnxrt.session(tmp_path / f, 1).get_modelmeta().custom_metadata_map
             for f in ("static.onnx", "dynamic.onnx")}
    assert marks["static.onnx"][key] == "static" and key not in marks["dynamic.onnx"]


def test_calibration_trials_are_scratch_not_outputs_run_all_records(fp32_onnx, calib, texts, tmp_path, monkeypatch):
    """Issue 33 item 1: the study saved each trial through atomic_dir under the temp folder, so run_all recorded
    folders that were gone by the next run. Only the chosen method's folder is logged, and it holds no trial's."""
    import pandas as pd

    from lib.core import manifest
    from lib.data.batching import make_loader
    from lib.run import runstate
    from lib.techniques import onnx_export
    _, model, tok = fp32_onnx
    out = tmp_path / "out"
    qdir = out / "checkpoints" / "quantized"
    fp32_dir, _ = onnx_export.save_onnx_fp32("tiny", model, tok, texts[:8], qdir, 1e-3)
    onnx_export.save_onnx_int8("tiny", fp32_dir, tok, qdir, [])
    val = make_loader(pd.DataFrame({"text": texts[:24], "label": [i % 3 for i in range(24)]}), tok, 8, 64)
    monkeypatch.delenv(manifest.WRITES_ENV, raising=False)  # what writes_log sets, monkeypatch removes again
    log = runstate.writes_log(out / "reports", "03_quantization")
    study = onnx_export.calibration_study({"tiny": fp32_dir}, tok, qdir, [], calib[:1], {"val": val})
    assert log.read_text() == f"{qdir / 'tiny_onnx_static_int8'}\n"
    assert set(study["scores"]) == set(qs.CALIBRATIONS) and study["paths"] == {"tiny": qdir / "tiny_onnx_static_int8"}
    assert study["scores"] == study["per_model"]["tiny"]  # one model: its own scores are the mean
    path = study["paths"]["tiny"]
    assert manifest.problem(path, required=True) is None
    meta = json.loads((path / onnx_export.STATIC_META).read_text())
    assert meta == {"calibration": study["calibration"], "calibration_sentences": len(calib[0]["input_ids"])}
    state = {}
    runstate.record_outputs(state, "03_quantization", log, out, keep=True)
    assert state["outputs"]["03_quantization"] == ["checkpoints/quantized/tiny_onnx_static_int8"]


def test_calibration_is_chosen_on_the_mean_val_over_seeds(fp32_onnx, calib, texts, tmp_path, monkeypatch):
    """Issue 31 item 3: with a graph per training seed, the method is the one best on their mean val (here neither
    seed's own pick), and every seed's graph is saved calibrated by it."""
    from lib.techniques import onnx_export
    _, model, tok = fp32_onnx
    qdir = tmp_path / "q"
    dirs = {}
    for name in ("a", "a_seed43"):
        dirs[name], _ = onnx_export.save_onnx_fp32(name, model, tok, texts[:8], qdir, 1e-3)
        onnx_export.save_onnx_int8(name, dirs[name], tok, qdir, [])
    val = {"a": {"minmax": 0.80, "entropy": 0.90, "percentile": 0.70},
           "a_seed43": {"minmax": 0.80, "entropy": 0.60, "percentile": 0.85}}
    test = {"minmax": 0.10, "entropy": 0.99, "percentile": 0.99}  # test never chooses
    scored = lambda trial, loader: {"macro_f1": (val[trial.parent.name] if loader == "val" else test)[trial.name]}  # noqa: E731
    monkeypatch.setattr(onnx_export.q, "load_onnx", lambda trial: (trial, None))
    monkeypatch.setattr(onnx_export, "evaluate_predictor", scored)
    study = onnx_export.calibration_study(dirs, tok, qdir, [], calib[:1], {"val": "val", "test": "test"})
    assert [qs.choose_calibration(study["per_model"][n]) for n in dirs] == ["entropy", "percentile"]
    assert study["calibration"] == "minmax" and study["scores"]["percentile"]["val_macro_f1"] == pytest.approx(0.775)
    for name, path in study["paths"].items():
        assert path == qdir / f"{name}_onnx_static_int8"
        assert json.loads((path / onnx_export.STATIC_META).read_text())["calibration"] == "minmax"
