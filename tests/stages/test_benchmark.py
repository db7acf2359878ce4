"""Stage 05 (lib/stages/benchmark.py): every listed variant (stage 06's stacked ones too), one harness, the
recommendation; and stage 06 (lib/stages/stacking.py), which builds the stacked ones."""
import importlib.util
import json

import numpy as np
import pandas as pd
import pytest

from lib.core import pipeline, stats


def test_stage05_smoke(smoke_run):
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    rows = pd.read_csv(smoke_run / "results" / "benchmark.csv")
    listed = [v["name"] for s in pipeline.producers("05_benchmark")
              for v in json.loads((smoke_run / "reports" / f"{s}.json").read_text())["variants"]]
    assert rows["name"].tolist() == listed  # every earlier variant, in stage order, the teacher first; none built here
    stacked = rows[rows["stage"] == "06_stacking"]
    assert len(stacked) and stacked.index[0] > rows[rows["format"] == "pruned"].index[-1]
    # the runtime is a dimension of a stacked variant: ONNX Runtime INT8, and OpenVINO FP32 (bf16 too where the CPU
    # runs it) and NNCF INT8, each measured like every other variant
    assert set(stacked["format"]) == {"onnx", "openvino"} and set(stacked.loc[stacked["format"] == "onnx", "precision"]) == {"int8"}
    assert {"fp32", "int8"} <= set(stacked.loc[stacked["format"] == "openvino", "precision"]) <= {"fp32", "bf16", "int8"}
    # each stacked model has a vocabulary-trimmed twin from the same pruned source, smaller on disk
    dynamic = stacked[stacked["techniques"].str.contains("'onnx_int8'")]
    by_kind = {trimmed: g.set_index("source")["disk_bytes"]
               for trimmed, g in dynamic.groupby(dynamic["techniques"].str.contains("vocab_trim"))}
    assert set(by_kind[True].index) == set(by_kind[False].index) == set(rows.loc[rows["format"] == "pruned", "name"])
    assert (by_kind[True] < 0.8 * by_kind[False]).all()
    per_set = ["macro_f1", "accuracy", "f1_negative", "f1_neutral", "f1_positive", "f1_ci_low", "f1_ci_high", "delta_pts",
               "delta_ci_low", "delta_ci_high", "p", "mcnemar_p", "retention", "teacher_agreement", "ece"]
    costs = ["latency_median_ms", "latency_p95_ms", "latency_p99_ms", "throughput_b32_per_s", "peak_rss_mb", "load_s",
             "disk_bytes", "weight_bytes", "speedup_vs_teacher", "size_ratio_vs_teacher"]
    sets = ("val", "test", "ood_val", "ood_test")  # the smoke data folder has the tweets: stage 01 split them
    for col in [f"{s}_{c}" for s in sets for c in per_set] + costs:  # SCHEMA.md
        assert rows[col].notna().all(), col
    for s in sets:
        assert (rows[f"{s}_f1_ci_low"] <= rows[f"{s}_macro_f1"]).all() and (rows[f"{s}_macro_f1"] <= rows[f"{s}_f1_ci_high"]).all()
        assert (rows[f"{s}_delta_ci_low"] <= rows[f"{s}_delta_pts"] + 1e-9).all()
        assert (rows[f"{s}_delta_pts"] <= rows[f"{s}_delta_ci_high"] + 1e-9).all()
        assert rows.loc[0, [f"{s}_delta_pts", f"{s}_delta_ci_low", f"{s}_mcnemar_p"]].tolist() == [0, 0, 1]
        # the word: the bootstrap p Holm-adjusted over every variant compared with the teacher (not the teacher itself)
        assert rows[f"{s}_p_holm"].isna().tolist() == [True] + [False] * (len(rows) - 1)
        assert rows[f"{s}_p_holm"][1:].tolist() == pytest.approx(stats.holm(rows[f"{s}_p"][1:]).tolist())
        assert rows[f"{s}_reading"].tolist() == ["reference"] + [stats.reading(d, a) for d, a in
                                                                 zip(rows[f"{s}_delta_pts"][1:], rows[f"{s}_p_holm"][1:])]
        # negative = worse than the teacher
        assert rows[f"{s}_delta_pts"].round(9).tolist() == (100 * (rows[f"{s}_macro_f1"] - rows.loc[0, f"{s}_macro_f1"])).round(9).tolist()
    assert [r["name"] for r in m["metrics"]["table"]] == rows["name"].tolist()
    table = m["metrics"]["table"]  # what the index reads: the word and its p per set, null where absent
    assert [r["test_reading"] for r in table] == rows["test_reading"].tolist() and table[0]["test_p_holm"] is None
    assert {"test_p", "ood_test_p", "ood_test_p_holm", "ood_test_reading"} <= set(table[1])
    assert f"p Holm-adjusted over the {len(rows) - 1} variants compared with the teacher" in m["verdict"]
    assert [g["goal"] for g in m["goals"]] == ["max_f1_drop_pts", "min_speedup", "min_size_ratio", "min_speedup_vs_reference",
                                               "min_throughput_vs_reference", "min_ood_retention"]
    model = smoke_run / "artifacts" / "model"
    card = (model / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-nc-sa-3.0\n") and m["headline"]["recommended"] in card
    assert "fine-tuned for 3-class sentiment" in card and not (model / "MODEL_CARD.md").exists()
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == "bert" and config["fincompress"]["variant"] == m["headline"]["recommended"]
    page = (smoke_run / "reports" / "05_benchmark.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    index = (smoke_run / "reports" / "index.html").read_text()
    assert "Benchmark (CPU): chosen on validation, test reported" in index and "class=rec" in index
    assert "OOD-test kept (share of the teacher)" in index and "ood_test retention" in page
    assert "out-of-domain test macro-F1" in card and "Out of domain (financial tweets; ood_test reported only)" in m["verdict"]
    assert (smoke_run / "reports" / "img" / "05_benchmark_pareto.png").is_file() and "img/05_benchmark_pareto.png" in index


def test_stage05_chooses_on_validation(smoke_run):
    from lib.core import goals
    from lib.ship import decide, seed_mean
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    rows = pd.read_csv(smoke_run / "results" / "benchmark.csv")
    assert m["metrics"]["sets"] == {"val": 24, "test": 24, "ood_val": 24, "ood_test": 24}
    # recomputed from the table's val columns (and costs), the choice is the same variant
    gs = goals.from_params(m["run_info"]["params"], columns=decide.COLUMNS | seed_mean.SEED_COLUMNS)
    assert decide.recommend(rows, gs)["name"] == m["headline"]["recommended"]
    assert all(g["metric"] in ("seed_val_delta_pts", "speedup_vs_teacher", "size_ratio_vs_teacher", "seed_ood_val_retention",
                               "speedup_vs_reference", "throughput_vs_reference") for g in m["goals"])
    assert "Why here:" in m["verdict"] or "fastest variant measured" in m["verdict"]


def test_stage05_end_to_end_yardstick_and_peak(smoke_run):
    """Issue 20: end-to-end columns for every variant, the (smoke: one-layer) FinBERT-shaped yardstick rows kept
    out of the candidates, the measured peak and each ONNX variant's share of it, all in the report."""
    rows = pd.read_csv(smoke_run / "results" / "benchmark.csv")
    results = json.loads((smoke_run / "results" / "benchmark.json").read_text())
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    for col in ("e2e_latency_median_ms", "e2e_throughput_b32_per_s", "speedup_vs_finbert_fp32"):
        assert (rows[col] > 0).all(), col
    assert (rows["e2e_label_agreement"] > 0.5).all()
    onnx = rows["format"] == "onnx"
    assert onnx.any() and (rows.loc[onnx, "useful_macs_per_sentence"] > 0).all()
    assert (rows.loc[onnx, "share_int8_peak_b32"] > 0).all() and rows.loc[~onnx, "share_int8_peak_b32"].isna().all()
    yard = results["yardstick"]
    assert [(y["name"], y["format"], y["shape_only"]) for y in yard] == [
        ("finbert_shaped_1_layers_fp32", "hf", True), ("finbert_shaped_1_layers_onnx_int8", "onnx", True)]
    assert not set(rows["name"]) & {y["name"] for y in yard} and rows.loc[0, "name"] == "teacher"
    assert results["peak"]["int8"]["gops"] > 0 and m["metrics"]["peak"] == results["peak"]
    page = (smoke_run / "reports" / "05_benchmark.html").read_text()
    assert "finbert_shaped_1_layers_fp32 (shape only, untrained)" in page and "e2e sentences/s (batch 32)" in page
    assert "of the INT8 peak" in m["verdict"] or "no ONNX graph" in m["verdict"]


def test_stage05_reference_rows_are_measured_beside_the_variants_and_never_shipped(smoke_run):
    """Issue 30, items 4-5: the smoke run's reference row (Optimum's ORT recipe on the teacher) has F1, paired deltas,
    batch flips and OOD figures from the same harness; it stays out of the candidates; the goals against it read the
    run's own figures; the report shows it marked, beside the shipped model."""
    from lib.measure import reference
    from lib.ship import decide
    rows = pd.read_csv(smoke_run / "results" / "benchmark.csv")
    results = json.loads((smoke_run / "results" / "benchmark.json").read_text())
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    refs = pd.DataFrame(results["references"])
    assert refs["name"].tolist() == ["teacher_ort_optimized_int8"] and refs["reference"].all()
    assert not rows["reference"].any() and "teacher_ort_optimized_int8" not in set(rows["name"])
    for s in ("val", "test", "ood_val", "ood_test"):
        for col in ("macro_f1", "delta_pts", "delta_ci_low", "delta_ci_high", "p", "p_holm", "retention"):
            assert refs[f"{s}_{col}"].notna().all(), (s, col)
    assert (refs["val_batch_n"] == 24).all() and (refs["e2e_latency_median_ms"] > 0).all()
    if importlib.util.find_spec("openvino") is None:
        assert m["metrics"]["references_skipped"] == {} and results["references_skipped"] == {}  # smoke: ORT only
    rec = m["metrics"]["recommended"]
    ref = refs.iloc[0]
    assert rec["speedup_vs_reference"] == pytest.approx(ref["e2e_latency_median_ms"] / rec["e2e_latency_median_ms"])
    assert rec["throughput_vs_reference"] == pytest.approx(rec["e2e_throughput_b32_per_s"] / ref["e2e_throughput_b32_per_s"])
    checks = {g["goal"]: g for g in m["goals"]}
    assert checks["min_speedup_vs_reference"]["value"] == pytest.approx(rec["speedup_vs_reference"])
    assert decide.recommend(pd.concat([rows, refs], ignore_index=True), decide_goals(m))["name"] == m["headline"]["recommended"]
    page = (smoke_run / "reports" / "05_benchmark.html").read_text()
    assert reference.MARK in page and "Against the off-the-shelf tools" in page and "(shipped)" in page
    assert "Against the off-the-shelf reference rows" in m["verdict"]


def decide_goals(m: dict) -> list:
    from lib.core import goals
    from lib.ship import decide, seed_mean
    return goals.from_params(m["run_info"]["params"], columns=decide.COLUMNS | seed_mean.SEED_COLUMNS)


def test_stage05_counts_batch_flips_and_scores_the_shipped_model_as_predict_serves_it(smoke_run):
    """Issue 30, item 3: every variant's labels alone against its shuffled batch of 32 on val, test and OOD-val, the
    ship rule reading val and OOD-val only, and the shipped model's F1 as `python -m lib.predict` gives it."""
    from lib.core import goals
    from lib.measure import harness, invariance
    from lib.ship import decide, seed_mean
    rows = pd.read_csv(smoke_run / "results" / "benchmark.csv")
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    budget = decide.budget(goals.from_params(m["run_info"]["params"], columns=decide.COLUMNS | seed_mean.SEED_COLUMNS))
    # counted for the teacher, the reference rows and the variants within the budget plus the margin; no others
    floor = -(m["run_info"]["params"]["max_f1_drop_pts"] + harness.FLIP_MARGIN_PTS)
    counted = (rows.index == 0) | rows["reference"] | (rows["val_delta_pts"] >= floor)
    assert counted.any() and budget.met(rows[budget.metric]).le(counted).all()
    for s in ("val", "test", "ood_val"):  # the default batch_flip_sets; smoke: 24 sentences per set
        assert (rows.loc[counted, f"{s}_batch_n"] == 24).all(), s
        assert rows.loc[counted, f"{s}_batch_flips"].between(0, 24).all(), s
        assert rows.loc[~counted, f"{s}_batch_flips"].isna().all(), s
    assert "ood_test_batch_flips" not in rows
    within = rows[budget.met(rows[budget.metric])]
    shipped = rows[rows["name"] == m["headline"]["recommended"]].iloc[0]
    assert decide.flips_of(shipped) == decide.decision_flips(within).min()
    assert "* Batch flips (its label for a sentence alone" in m["verdict"]
    assert "batch flips (val / test / ood_val; - outside the F1 budget" in (smoke_run / "reports" / "05_benchmark.html").read_text()
    served = m["metrics"]["served_macro_f1"]
    assert set(served) == {"val", "test", "ood_val", "ood_test"} and all(0 < f <= 1 for f in served.values())
    model = smoke_run / "artifacts" / "model"
    assert json.loads((model / "metrics.json").read_text())["served_macro_f1"] == served
    sets = {s: (df["text"].tolist(), df["label"].to_numpy()) for s in served
            for df in [pd.read_csv(smoke_run / "data" / f"{s}.csv").iloc[:24]]}
    assert invariance.served_f1(model, sets, threads=1) == pytest.approx(served, abs=1e-12)  # the exported folder
    assert invariance.served_text(shipped, served) in m["verdict"]


def test_ood_goal_is_skipped_with_a_note_when_stage01_wrote_no_ood_sets():
    from lib.ship import decide, seed_mean
    from lib.stages import benchmark
    from tests.test_ship import ood_rows, table_rows
    stage = object.__new__(benchmark.Stage)
    stage.params = {"max_f1_drop_pts": 1.5, "min_speedup": 2.0, "min_size_ratio": 1.2, "min_ood_retention": 0.97,
                    "min_speedup_vs_reference": 2.0}
    stage.df = seed_mean.with_seed_means(table_rows(), {})  # as score_seeds leaves it: every row one model
    assert [g.name for g in stage.stage_goals()] == ["max_f1_drop_pts", "min_speedup", "min_size_ratio"]
    assert stage.skipped_goals().splitlines() == [
        "* Goal min_speedup_vs_reference (at least 2.0x faster end to end at batch 1 than the fastest reference row) "
        "skipped: n/a (no reference rows).",
        "* Goal min_ood_retention (out-of-domain validation macro-F1 at least 0.97 of the teacher's) skipped: stage 01 "
        "wrote no out-of-domain sets (no tweets in the data folder)."]
    assert decide.recommend(stage.df, stage.stage_goals())["name"] == "student_p50_int8"
    stage.df = seed_mean.with_seed_means(ood_rows().assign(speedup_vs_reference=3.0), {})
    assert stage.stage_goals()[-1].metric == "seed_ood_val_retention" and stage.skipped_goals() == ""


def test_stage06_stacks_with_stage03s_choices_read_from_its_variants(smoke_run):
    m06 = json.loads((smoke_run / "reports" / "06_stacking.json").read_text())
    v03 = json.loads((smoke_run / "reports" / "03_quantization.json").read_text())["variants"]
    models = json.loads((smoke_run / "reports" / "03_quantization.json").read_text())["metrics"]["models"]
    # what stage 03 chose per model travels on its ONNX INT8 variants and is what stage 06 used
    assert m06["metrics"]["keep_fp32_groups"] == {m["name"]: m["onnx_keep_fp32_groups"] for m in models}
    assert m06["metrics"]["calibrations"] == {m["name"]: m["onnx_static_calibration"] for m in models}
    assert {v["name"] for v in v03 if "keep_fp32_groups" in v["metrics"]} == {f"{m['name']}_onnx_int8" for m in models}
    pruned_from = {v["name"]: v["source"] for v in json.loads((smoke_run / "reports" / "04_pruning.json").read_text())["variants"]}
    from lib.runtime import openvino
    for v in m06["variants"]:
        assert v["stage"] == "06_stacking" and v["format"] in ("onnx", "openvino")
        if v["format"] == "onnx" or v["precision"] == "fp32":  # exports held to a tolerance; bf16 and INT8 scored
            assert v["metrics"].get("onnx_parity", v["metrics"].get("openvino_parity")) < 1e-3
        if "onnx_static_int8" in v["techniques"]:  # calibrated as stage 03 chose for the model it was pruned from
            assert v["metrics"]["calibration"] == m06["metrics"]["calibrations"][pruned_from[v["source"]]]
    assert m06["headline"]["stacked variants"] == len(m06["variants"]) > 0 and m06["goals"] == []
    runtimes = {(v["source"], "vocab_trim" in v["techniques"]): set() for v in m06["variants"]}
    for v in m06["variants"]:
        runtimes[(v["source"], "vocab_trim" in v["techniques"])].add(v["techniques"][-1])
    bf16 = {"openvino_bf16"} if openvino.bf16_supported(m06["run_info"]["hardware"]["cpu_flags"]) else set()
    assert all(made == {"onnx_int8", "onnx_static_int8", "openvino", "nncf_int8"} | bf16 for made in runtimes.values())


def test_stage05_ships_serving_settings_chosen_on_its_machine(smoke_run):
    """Issue 30 item 2: the search ran at smoke size (same code path) on the recommended ONNX model; its choice and
    what it measured are in serving.json beside the model, in the stage's metrics and on its page; predict reads it."""
    from lib.measure import serving_search
    from lib.predict import serving
    from lib.runtime.onnxrt import SETTINGS_FILE, Settings
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    model = smoke_run / "artifacts" / "model"
    record = m["metrics"]["serving"]
    if json.loads((model / "config.json").read_text())["fincompress"]["format"] == "openvino":
        # OpenVINO shipped: ORT's search does not apply; the folder names the precision it was scored at
        assert record is None and set(json.loads((model / SETTINGS_FILE).read_text())) == {"openvino"}
        return
    assert json.loads((model / "config.json").read_text())["fincompress"]["format"] == "onnx"
    assert json.loads((model / SETTINGS_FILE).read_text()) == record
    assert record["sentences"]["batch_1"] == m["run_info"]["params"]["serving_n"] and record["rounds"] == 1
    rows = record["measured"]
    assert [r["step"] for r in rows if r["chosen"]] == list(serving_search.STEPS)  # threads = 2: every step ran
    last = next(r for r in reversed(rows) if r["chosen"])
    assert serving.settings_of(model) == Settings(**record["onnxruntime"]) == Settings(**{k: last[k] for k in Settings._fields})
    assert all(r["batch1_ms"] > 0 and r["batch32_per_s"] > 0 for r in rows)
    page = (smoke_run / "reports" / "05_benchmark.html").read_text()
    assert "Serving settings tried, step by step" in page and f"Shipped in <code>{SETTINGS_FILE}</code>" in page


def test_no_serving_search_without_an_onnx_model_or_with_serving_n_0(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from lib.core.variants import Variant
    from lib.stages import benchmark
    stage = object.__new__(benchmark.Stage)
    teacher = Variant("teacher", "hf", "t", "x", ("finetune",), "01_data_teacher")
    stage.variants, stage.recommended, stage.paths = [teacher], pd.Series({"name": "teacher"}), {"root": tmp_path}
    stage.p = SimpleNamespace(serving_n=4, serving_rounds=1, threads=2)
    assert stage.tune_serving() is None and "`teacher` does not run on ONNX Runtime" in stage.serving_text()
    stage.p.serving_n = 0
    assert stage.tune_serving() is None and "(serving_n = 0)" in stage.serving_text()
    assert "runs ONNX Runtime's defaults" in stage.serving_text()


def test_stage05_profiles_where_the_shipped_models_time_goes(smoke_run):
    """Issue 30 item 6: the recommendation profiled per operator group at batch 1 and 32 with the settings it ships
    with, in the stage's metrics (strict JSON) and on its page, the GEMM group against the measured INT8 peak."""
    from lib.measure import profile
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    record, params = m["metrics"]["profile"], m["run_info"]["params"]
    assert record["variant"] == m["headline"]["recommended"] and record["runtime"] == "onnxruntime"
    assert record["settings"] == m["metrics"]["serving"]["onnxruntime"]
    b1, b32 = record["batches"]["batch_1"], record["batches"]["batch_32"]
    assert b1["sentences"] == b1["runs"] == params["profile_n"] and b32["sentences"] == m["metrics"]["sets"]["val"]
    for b in (b1, b32):
        assert list(b["groups"]) == list(profile.GROUPS) and b["groups"]["GEMM"]["us"] > 0
        assert sum(g["share"] for g in b["groups"].values()) == pytest.approx(1.0)
        assert sum(o["us"] for o in b["ops"]) == pytest.approx(b["node_ms"] * 1000) and b["node_ms"] <= b["wall_ms"]
        assert b["gemm_share_int8_peak"] == pytest.approx(b["gemm_gops"] / m["metrics"]["peak"]["int8"]["gops"])
    page = (smoke_run / "reports" / "05_benchmark.html").read_text()
    assert "Where the time goes" in page and "% of node time (batch 32)" in page and "of the INT8 peak" in page


def test_no_profile_with_profile_n_0_or_a_model_no_collector_reads(tmp_path):
    from types import SimpleNamespace

    import pandas as pd

    from lib.core.variants import Variant
    from lib.stages import benchmark
    stage = object.__new__(benchmark.Stage)
    teacher = Variant("teacher", "hf", "t", "x", ("finetune",), "01_data_teacher")
    stage.variants, stage.recommended, stage.paths = [teacher], pd.Series({"name": "teacher"}), {"root": tmp_path}
    stage.sets, stage.serving, stage.peak = {"val": pd.DataFrame({"text": ["Sales fell"]})}, None, None
    stage.p = SimpleNamespace(profile_n=4, threads=2)
    assert stage.profile_shipped() is None and stage.profiled is None


def test_stage05_reads_the_f1_goals_on_the_seed_mean_of_the_variants_it_can_ship(smoke_run):
    """Issue 31, item 3: stage 06 built every stacked recipe from each training seed's pruned model; stage 05 scored
    the other seeds' models of exactly the variants the ship rule can read, and its F1 goals read their mean."""
    from lib.core import seeds
    from lib.core.variants import Variant
    from lib.measure import harness
    from lib.ship import seed_mean
    report = lambda s: json.loads((smoke_run / "reports" / f"{s}.json").read_text())  # noqa: E731
    m, rows = report("05_benchmark"), pd.read_csv(smoke_run / "results" / "benchmark.csv")
    pruned = {v["name"]: v for v in report("04_pruning")["variants"]}
    stacked = report("06_stacking")["variants"]
    assert stacked and report("06_stacking")["metrics"]["seed_twins"] == sum(len(v["metrics"]["seed_runs"]) - 1 for v in stacked)
    for v in stacked:  # smoke: two training seeds, the exported one first, every model on disk
        runs, source = v["metrics"]["seed_runs"], pruned[v["source"]]["metrics"]
        assert [r["seed"] for r in runs] == [source["seed"]] + [r["seed"] for r in source["seed_runs"] if r["seed"] != source["seed"]]
        assert len(runs) == 2 and runs[0]["path"] == v["path"] and all((smoke_run / r["path"]).exists() for r in runs)
    listed = [Variant.from_dict(v) for s in pipeline.producers("05_benchmark") for v in report(s)["variants"]]
    floor = -(m["run_info"]["params"]["max_f1_drop_pts"] + harness.FLIP_MARGIN_PTS)
    delta = dict(zip(rows["name"], rows["val_delta_pts"]))
    assert set(m["metrics"]["seed_runs"]) == {v.name for v in listed if seeds.twins(v) and delta[v.name] >= floor}
    by_name = rows.set_index("name")
    for name, rs in m["metrics"]["seed_runs"].items():
        assert [r["exported"] for r in rs] == [True, False] and by_name.loc[name, "seeds_read"] == 2
        per_seed = seed_mean.per_seed(rs, rows.iloc[0])
        assert per_seed["seed_val_delta_pts"][0] == pytest.approx(delta[name])
        assert by_name.loc[name, "seed_val_delta_pts"] == pytest.approx(np.mean(per_seed["seed_val_delta_pts"]))
    one = ~rows["name"].isin(list(m["metrics"]["seed_runs"]))
    assert (rows.loc[one, "seeds_read"] == 1).all()
    assert np.allclose(rows.loc[one, "seed_val_delta_pts"], rows.loc[one, "val_delta_pts"])
    budget = next(g for g in m["goals"] if g["goal"] == "max_f1_drop_pts")
    assert budget["metric"] == "seed_val_delta_pts" and "Seeds:" in m["verdict"]
