"""lib/ship/seed_mean.py and lib.core.seeds.twins: the ship rule's F1 goals read on the mean of a recipe's models over
its training seeds (issue 31, item 3); stage 06's recipes matched across seeds; the twins scored as the harness scores."""
import numpy as np
import pandas as pd
import pytest

from lib.core import goals, seeds
from lib.core.variants import Variant
from lib.measure import bench, harness
from lib.ship import decide, seed_mean
from lib.stages.stacking import with_seed_runs
from tests.test_bench import TEXTS, tiny_variant  # noqa: F401 (a fixture)

GOALS = goals.from_params({"max_f1_drop_pts": 1.0, "min_speedup": 20.0, "min_ood_retention": 0.97},
                          columns=decide.COLUMNS | seed_mean.SEED_COLUMNS)


def table() -> pd.DataFrame:
    """The teacher, a fast pruned variant whose exported seed is within the F1 budget, a slower one-model variant."""
    val = [0.89, 0.885, 0.882]
    return pd.DataFrame({"name": ["teacher", "pruned_int8", "student_fp32"], "latency_median_ms": [5.0, 1.0, 2.0],
                         "disk_bytes": [90, 20, 70], "val_macro_f1": val, "val_delta_pts": [100 * (v - 0.89) for v in val],
                         "ood_val_macro_f1": [0.48, 0.49, 0.50], "ood_val_retention": [1.0, 0.49 / 0.48, 0.50 / 0.48],
                         "speedup_vs_teacher": [1.0, 5.0, 2.5]})


def runs(second_val: float, third_test: float = 0.8) -> dict:
    """pruned_int8's three seeds: the exported one first, as stage 05 lists them."""
    return {"pruned_int8": [{"seed": 43, "val_macro_f1": 0.885, "ood_val_macro_f1": 0.49, "exported": True},
                            {"seed": 42, "val_macro_f1": second_val, "ood_val_macro_f1": 0.50, "exported": False},
                            {"seed": 44, "val_macro_f1": 0.872, "ood_val_macro_f1": 0.49, "exported": False,
                             "test_macro_f1": third_test}]}


def test_the_ship_rule_reads_the_seed_mean_and_one_seeds_val_moves_it():
    df = table()
    assert decide.recommend(seed_mean.with_seed_means(df, {}), GOALS)["name"] == "pruned_int8"  # exported seed alone
    low = seed_mean.with_seed_means(df, runs(0.870))  # mean val delta (-0.5 - 2.0 - 1.8) / 3 = -1.43: out
    assert low.loc[1, "seeds_read"] == 3 and low.loc[1, "seed_val_delta_pts"] == pytest.approx(-4.3 / 3)
    assert low.loc[1, "val_delta_pts"] == pytest.approx(-0.5)  # the exported model's own figure stays as it was
    assert decide.recommend(low, GOALS)["name"] == "student_fp32"
    high = seed_mean.with_seed_means(df, runs(0.895))  # one seed's val changed: mean (-0.5 + 0.5 - 1.8) / 3 = -0.6
    assert high.loc[1, "seed_val_delta_pts"] == pytest.approx(-0.6) and decide.recommend(high, GOALS)["name"] == "pruned_int8"
    # a seed's test figure is never read, and a variant with one model reads its own figures
    assert seed_mean.with_seed_means(df, runs(0.870, third_test=0.1)).equals(low)
    assert low.loc[2, "seeds_read"] == 1 and low.loc[2, "seed_val_delta_pts"] == low.loc[2, "val_delta_pts"]
    assert low.loc[1, "seed_ood_val_retention"] == pytest.approx((0.49 + 0.50 + 0.49) / 3 / 0.48)


def test_the_verdict_says_in_how_many_seeds_each_goal_was_met_and_which_seed_is_exported():
    df = seed_mean.with_seed_means(table(), runs(0.895)).assign(source=None, **{c: 0.0 for c in (
        "test_macro_f1", "test_f1_ci_low", "test_f1_ci_high", "test_delta_pts", "test_delta_ci_low", "test_delta_ci_high",
        "test_p", "test_mcnemar_p", "size_ratio_vs_teacher")}, test_reading="indistinguishable", test_p_holm=1.0)
    rec, rs = decide.recommend(df, GOALS), runs(0.895)
    checks = goals.check_all(GOALS, rec, rec["name"], seed_mean.per_seed(rs["pruned_int8"], df.iloc[0]))
    budget = next(c for c in checks if c["goal"] == "max_f1_drop_pts")
    assert budget["met"] and (budget["seeds"], budget["seeds_met"]) == (3, 2)
    assert "the mean of 3 seeds; met by 2 of them" in budget["reads"]
    line = seed_mean.seeds_line(rec, rs, df.iloc[0])
    assert "-0.50 (seed 43, exported) / +0.50 (seed 42) / -1.80 (seed 44)" in line and "-0.60" in line
    text = decide.recommendation_text(rec, df, GOALS, ["val", "test"], line, checks)
    assert line in text and "met by 2 of them" in text and "(the exported model)" in text
    shown = seed_mean.table(df, rs)
    assert shown.to_dict("records") == [{"#": 1, "variant": "pruned_int8", "seeds (exported first)": "43 / 42 / 44",
                                         "val Δ per seed, pts": "-0.50 / +0.50 / -1.80", "val Δ, seed mean": pytest.approx(-0.6),
                                         "ood_val kept per seed": "1.021 / 1.042 / 1.021",
                                         "ood_val kept, seed mean": pytest.approx(1.48 / 3 / 0.48)}]


def test_twins_are_the_other_seeds_models_and_stage06_matches_recipes_across_seeds():
    v = Variant("teacher_pruned_30", "pruned", "checkpoints/pruned/teacher_pruned_30", "teacher", ("prune",), "04",
                metrics={"seed": 43, "seed_runs": [{"seed": 42, "path": "p/s42"}, {"seed": 43, "path": "p/s43"},
                                                   {"seed": 44, "path": "p/s44"}]})
    twins = seeds.twins(v)
    assert [(t.path, t.metrics) for t in twins] == [("p/s42", {"twin_of": "teacher_pruned_30", "seed": 42}),
                                                   ("p/s44", {"twin_of": "teacher_pruned_30", "seed": 44})]
    assert all((t.format, t.source, t.techniques) == (v.format, v.source, v.techniques) for t in twins)
    assert seeds.twins(v.with_metrics(seed_runs=[{"seed": 43, "path": "x"}])) == []
    made = [v.derive("a_int8", "onnx", "s/a_int8", "onnx_int8", "06", "int8"),
            v.derive("a_ov", "openvino", "s/a_ov", "openvino", "06")]
    others = {42: [v.derive("b_ov", "openvino", "s/b_ov", "openvino", "06"),
                   v.derive("b_int8", "onnx", "s/b_int8", "onnx_int8", "06", "int8")]}
    out = with_seed_runs(made, 43, others)
    assert [m.metrics["seed_runs"] for m in out] == [[{"seed": 43, "path": "s/a_int8"}, {"seed": 42, "path": "s/b_int8"}],
                                                     [{"seed": 43, "path": "s/a_ov"}, {"seed": 42, "path": "s/b_ov"}]]
    assert with_seed_runs(made, 43, {}) == made


def test_a_twin_scores_what_the_benchmark_scores_for_the_same_model(tiny_variant):  # noqa: F811
    root, variant = tiny_variant
    labels = np.arange(len(TEXTS)) % 3
    sets = {"val": pd.DataFrame({"text": TEXTS, "label": labels})}
    twin = Variant("tiny_seed7", variant.format, variant.path, metrics={"twin_of": "tiny", "seed": 7})
    scored = harness.score_twins(root, sets, [twin], threads=1, seed=3)
    logits = bench.measure_variant(variant, root, {"val": TEXTS}, threads=1, latency_n=2, seed=3)["logits"]["val"]
    assert scored["tiny_seed7"]["val"] == pytest.approx(harness.scores(labels, np.asarray(logits).argmax(1))["macro_f1"])


def test_the_index_card_shows_the_seed_mean_beside_the_exported_models_figure():
    from lib.report import card
    rec = {"name": "p", "val_macro_f1": 0.881, "val_delta_pts": -1.06, "seeds_read": 3, "seed_val_delta_pts": -0.9996,
           "test_macro_f1": 0.873, "test_delta_pts": -2.1, "test_delta_ci_low": -4.6, "test_delta_ci_high": 0.2,
           "speedup_vs_teacher": 4.3, "latency_median_ms": 1.24, "size_ratio_vs_teacher": 8.2, "disk_bytes": 11_200_000}
    bench = {"metrics": {"recommended": rec}, "run_info": {}}
    page = card.study_card({card.BENCHMARK: bench})
    assert "-1.06 points vs the teacher; -1.00 on the mean of its 3 training seeds (what the goal reads)" in page
    one = card.study_card({card.BENCHMARK: {**bench, "metrics": {"recommended": {**rec, "seeds_read": 1}}}})
    assert "-1.06 points vs the teacher</span>" in one and "training seeds" not in one
