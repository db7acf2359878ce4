"""Issue 30 items 4-5 (lib/measure/reference.py): the off-the-shelf reference rows are built from the teacher, measured
with the same statistics as every variant, never recommended, and the goals against them read the right rows."""
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from transformers import AutoConfig

from lib.core import goals, params, stats
from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.measure import harness, reference
from lib.ship import decide
from tests.test_bench import tiny_variant  # noqa: F401  (a fixture)
from tests.test_harness import one_hot, raw_measurement

GOALS = {"max_f1_drop_pts": 1.0, "min_speedup": 2.0, "min_size_ratio": 2.0, "min_speedup_vs_reference": 2.0,
         "min_throughput_vs_reference": 1.5}


def rows(spec: list[tuple]) -> pd.DataFrame:
    """Benchmark rows from (name, val delta, model ms, e2e ms, e2e b32 sentences/s, MB, reference)."""
    return pd.DataFrame([{"name": n, "val_delta_pts": d, "latency_median_ms": ms, "e2e_latency_median_ms": e2e,
                          "e2e_throughput_b32_per_s": b32, "disk_bytes": mb * 1e6, "speedup_vs_teacher": 10 / ms,
                          "size_ratio_vs_teacher": 90 / mb, "reference": ref} for n, d, ms, e2e, b32, mb, ref in spec])


def split(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    refs = decide.reference_rows(df)
    return df[~refs].reset_index(drop=True), df[refs].reset_index(drop=True)


def test_goals_vs_reference_read_the_fastest_b1_row_and_the_best_b32_row_end_to_end():
    # ref_a is the fastest end to end at batch 1, ref_b has the highest batch-32 throughput; ref_c is the fastest
    # model-only (no tokenizer), which the goals must not read
    df = rows([("teacher", 0, 10.0, 11.0, 300, 90, False), ("pick", -0.5, 0.5, 0.4, 1600, 9, False),
               ("ref_a", -1.0, 1.2, 1.0, 500, 60, True), ("ref_b", 0.0, 2.2, 2.0, 1000, 24, True),
               ("ref_c", -0.2, 0.3, 3.0, 400, 24, True)])
    cands, refs = split(df)
    best = decide.best_references(refs)
    assert (best["batch1"]["name"], best["batch32"]["name"]) == ("ref_a", "ref_b")
    out = decide.with_reference_ratios(cands, refs)
    pick = out.set_index("name").loc["pick"]
    assert pick["speedup_vs_reference"] == pytest.approx(1.0 / 0.4)  # not 2.0 / 0.4 (ref_b) nor 3.0 / 0.4 (ref_c)
    assert pick["throughput_vs_reference"] == pytest.approx(1600 / 1000)  # not 1600 / 500 (ref_a)
    gs = goals.from_params(GOALS, columns=decide.COLUMNS)
    checks = {c["goal"]: c for c in goals.check_all(gs, pick, "pick")}
    assert checks["min_speedup_vs_reference"]["met"] and checks["min_throughput_vs_reference"]["met"]
    assert checks["min_speedup_vs_reference"]["reads"] == "2.50x" and checks["min_throughput_vs_reference"]["reads"] == "1.60x"
    # 1.1x the best throughput misses the goal
    slow = decide.with_reference_ratios(rows([("x", 0, 1, 0.4, 1100, 9, False)]), refs).iloc[0]
    assert not goals.check_all(gs, slow, "x")[-1]["met"]


def test_without_reference_rows_the_goals_are_not_judged():
    cands = decide.with_reference_ratios(rows([("teacher", 0, 10, 11, 300, 90, False)]), rows([]))
    gs = [g for g in goals.from_params(GOALS, columns=decide.COLUMNS) if g.metric in cands]
    assert {g.name for g in gs} == {"max_f1_drop_pts", "min_speedup", "min_size_ratio"}
    from lib.stages.benchmark import SKIPPED
    assert SKIPPED["speedup_vs_reference"] == SKIPPED["throughput_vs_reference"] == "n/a (no reference rows)"
    assert "n/a (no reference rows)" in reference.summary(cands.iloc[0], rows([]), {})


def test_a_reference_row_is_never_recommended_even_when_fastest_and_within_budget():
    df = rows([("teacher", 0, 10.0, 11.0, 300, 90, False), ("cand", -0.5, 1.0, 1.1, 900, 9, False),
               ("ref", 0.0, 0.2, 0.3, 3000, 5, True)])
    gs = goals.from_params({"max_f1_drop_pts": 1.0, "min_speedup": 2.0, "min_size_ratio": 2.0}, columns=decide.COLUMNS)
    assert decide.recommend(df, gs)["name"] == "cand"
    assert "ref" not in decide.why_here(df.iloc[1], df, gs)
    # read back from a CSV, the flag is a word or a bool: still a reference row
    assert decide.reference_rows(df.astype({"reference": str})).tolist() == [False, False, True]
    assert decide.reference_rows(df.drop(columns="reference")).tolist() == [False] * 3


def test_reference_rows_get_f1_deltas_and_their_own_holm_family(monkeypatch):
    """The harness scores a reference row like any variant against the teacher (row 0), and Holm-adjusts it in a
    family of its own: adding reference rows moves no candidate's word."""
    labels = {"val": [0, 1, 2, 0, 1, 2, 0, 1], "test": [0, 0, 1, 1, 2, 2, 2, 1]}
    preds = {"teacher": labels, "cand": {"val": [0, 1, 2, 2, 0, 2, 0, 1], "test": [0, 1, 1, 2, 2, 0, 1, 1]},
             "ref": {"val": [0, 1, 2, 0, 1, 1, 0, 0], "test": [0, 0, 1, 1, 2, 2, 0, 0]}}
    raw = {n: raw_measurement({s: one_hot(p) for s, p in preds[n].items()}, 10.0 / (i + 1), 1000)
           for i, n in enumerate(preds)}
    monkeypatch.setattr(harness, "measure_in_subprocess", lambda v, *a: raw[v.name])
    sets = {s: pd.DataFrame({"text": [f"s{i}" for i in range(len(y))], "label": y}) for s, y in labels.items()}
    variants = [Variant("teacher", "hf", "t"), Variant("cand", "onnx", "c"), Variant("ref", "onnx", "r", reference=True)]
    df = harness.run_benchmark(Path("."), sets, variants)
    alone = harness.run_benchmark(Path("."), sets, variants[:2])
    assert df["reference"].tolist() == [False, False, True]
    for s in labels:
        assert df.loc[2, f"{s}_delta_pts"] == pytest.approx(100 * (df.loc[2, f"{s}_macro_f1"] - df.loc[0, f"{s}_macro_f1"]))
        assert df.loc[2, f"{s}_delta_ci_low"] <= df.loc[2, f"{s}_delta_pts"] <= df.loc[2, f"{s}_delta_ci_high"]
        assert df.loc[2, f"{s}_p_holm"] == pytest.approx(df.loc[2, f"{s}_p"])  # a family of one
        assert df.loc[1, f"{s}_p_holm"] == alone.loc[1, f"{s}_p_holm"]
        assert df.loc[1, f"{s}_reading"] == alone.loc[1, f"{s}_reading"] and np.isnan(df.loc[0, f"{s}_p_holm"])
        assert df.loc[2, f"{s}_reading"] == stats.reading(df.loc[2, f"{s}_delta_pts"], df.loc[2, f"{s}_p_holm"])
    cands, refs = split(df)
    table = reference.table(cands.iloc[1], refs)
    assert table["model"].tolist() == ["cand (shipped)", f"ref ({reference.MARK})"]
    assert table.loc[1, "val macro-F1 (Δ vs teacher, pts)"] == f"{refs.loc[0, 'val_macro_f1']:.3f} ({refs.loc[0, 'val_delta_pts']:+.2f})"
    assert table.loc[1, "batch-1 e2e ms"] == refs.loc[0, "e2e_latency_median_ms"]


def test_the_notebook_parameter_names_the_registry_and_is_validated():
    cell = params.parse_parameters(Path("notebooks_src/05_benchmark.py").read_text())
    assert cell["references"].each == tuple(reference.RECIPES)
    assert cell["references"].presets["smoke"] == "ort_optimized_int8"
    cell["references"].check("")
    with pytest.raises(FinCompressError, match="names 'optimum'"):
        cell["references"].check("ort_optimized_int8,optimum")
    for name in ("min_speedup_vs_reference", "min_throughput_vs_reference"):
        assert name in goals.KINDS and cell[name].low == 0
        with pytest.raises(FinCompressError, match="out of range"):
            cell[name].check(-1.0)


def test_the_openvino_references_run_at_openvino_defaults_and_serve(tiny_variant):  # noqa: F811
    from lib import formats
    from lib.predict import serving
    from lib.runtime import openvino as ovrt
    assert list(reference.RECIPES) == ["ort_optimized_int8", "openvino", "openvino_nncf_int8"]
    root, teacher = tiny_variant
    texts = ["Sales fell", "Operating profit rose to EUR 13.1 mn", "The company kept its outlook"]
    built, skipped = reference.build(root, root / "references", teacher, texts, ["openvino", "openvino_nncf_int8"],
                                     calibration=texts * 4)
    assert skipped == {} and [v.format for v in built] == ["openvino", "openvino"]
    assert [v.precision for v in built] == ["fp32", "int8"] and all(v.reference for v in built)
    for v in built:  # "default hints": the precision OpenVINO picks on this CPU when not told
        assert ovrt.settings_of(v.location(root)).precision == reference.default_precision()
        predict, tokenizer = formats.load(v, root, threads=1)
        assert np.asarray(predict(dict(tokenizer(["Sales fell"], return_tensors="np")))).shape == (1, 3)
        assert serving.load(v.location(root), 1).labels == serving.load(teacher.location(root), 1).labels
    assert "FakeQuantize" in {op.get_type_name() for op in __import__("lib.runtime.openvino", fromlist=["core"]).core().read_model(
        str(built[1].location(root) / "openvino_model.xml")).get_ops()}


def test_the_ort_reference_is_optimizer_fused_dynamic_int8_and_serves(tiny_variant):  # noqa: F811
    import onnx

    from lib import formats
    from lib.predict import serving
    root, teacher = tiny_variant
    built, skipped = reference.build(root, root / "references", teacher, ["Sales fell", "Operating profit rose to EUR 13.1 mn"],
                                     ["ort_optimized_int8"])
    (v,) = built
    assert skipped == {} and v.reference and v.source == teacher.name and v.precision == "int8" and v.format == "onnx"
    assert reference.label(v.techniques) == reference.RECIPES["ort_optimized_int8"].label
    graph = onnx.load(str(v.location(root) / "model.onnx")).graph
    ops = {n.op_type for n in graph.node}
    # the optimizer's fusions (O3: FastGelu), then every op ORT quantizes dynamically, as Optimum's avx512_vnni config
    # leaves them: MatMul and the fused Attention in INT8, and the word embeddings (Gather) stored in 8 bits
    assert {"QAttention", "SkipLayerNormalization", "FastGelu", "MatMulInteger", "DynamicQuantizeLinear"} <= ops
    assert "Attention" not in ops and "EmbedLayerNormalization" not in ops
    vocab = AutoConfig.from_pretrained(teacher.location(root)).vocab_size
    eight_bit = (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)  # ORT quantizes Gather's table as its activations, uint8
    assert any(t.data_type in eight_bit and list(t.dims[:1]) == [vocab] for t in graph.initializer)
    predict, tokenizer = formats.load(v, root, threads=1)
    assert np.asarray(predict(dict(tokenizer(["Sales fell"], return_tensors="np")))).shape == (1, 3)
    model = serving.load(v.location(root), 1)
    assert model.labels == serving.load(teacher.location(root), 1).labels
