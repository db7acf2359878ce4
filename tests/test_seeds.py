"""lib/core/seeds.py and stage 02's decisions over training seeds (issue 31): they read the mean val macro-F1 over
seeds, never test; one seed's val moves the mean they read."""
import copy
import statistics
from types import SimpleNamespace

import pandas as pd
import pytest

from lib.core import goals, seeds
from lib.core.errors import FinCompressError
from lib.stages import distillation


def run(seed, val, test=0.5, ood=None):
    return {"seed": seed, "val_macro_f1": val, "test_macro_f1": test, "ood_val_macro_f1": ood}


def test_training_seeds_start_at_the_study_seed_and_wrap_inside_32_bits():
    assert seeds.training_seeds(42, 1) == [42]
    assert seeds.training_seeds(42, 3) == [42, 43, 44]
    assert seeds.training_seeds(2 ** 32 - 1, 2) == [2 ** 32 - 1, 0]
    with pytest.raises(FinCompressError, match="at least one seed"):
        seeds.training_seeds(42, 0)


def test_spread_is_mean_sample_sd_and_range():
    s = seeds.spread([0.80, 0.84, 0.82])
    assert (s["n"], s["min"], s["max"]) == (3, 0.80, 0.84)
    assert s["mean"] == pytest.approx(0.82) and s["sd"] == pytest.approx(0.02)
    assert seeds.spread([0.8])["sd"] is None
    assert seeds.spread_text(s) == "0.8200 ± 0.0200 (0.8000-0.8400)" and seeds.spread_text(seeds.spread([0.8])) == "0.8000"
    # OOD-val is summarized only where every seed has it
    assert set(seeds.summary([run(1, 0.8, ood=0.7), run(2, 0.9, ood=0.6)])) == {"val_macro_f1", "test_macro_f1",
                                                                             "ood_val_macro_f1"}
    assert set(seeds.summary([run(1, 0.8), run(2, 0.9)])) == {"val_macro_f1", "test_macro_f1"}


def test_seed_folders_and_val_deltas():
    assert [seeds.folder_name("student_kd", s, 43) for s in (42, 43)] == ["student_kd_seed42", "student_kd"]
    assert seeds.val_deltas([run(1, 0.85), run(2, 0.87)], 0.86) == pytest.approx([-1.0, 1.0])


def test_the_exported_run_is_the_median_seed_on_val():
    assert seeds.median_run([run(1, 0.9), run(2, 0.7), run(3, 0.8)])["seed"] == 3
    assert seeds.median_run([run(1, 0.9), run(2, 0.7)])["seed"] == 2  # even count: the lower median
    assert seeds.median_run([run(5, 0.8), run(4, 0.8)])["seed"] == 4  # equal val: the lower seed
    # test never enters: the median on val whatever test says
    assert seeds.median_run([run(1, 0.9, test=0.1), run(2, 0.7, test=0.9), run(3, 0.8, test=0.2)])["seed"] == 3


CANDIDATES = {"a": [run(1, 0.85, 0.80), run(2, 0.86, 0.81), run(3, 0.84, 0.99)],
              "b": [run(1, 0.86, 0.70), run(2, 0.83, 0.71), run(3, 0.85, 0.60)]}


def test_the_best_candidate_is_the_best_mean_on_val_and_test_changes_nothing():
    assert seeds.best_on_mean(CANDIDATES) == "a"  # means 0.85 vs 0.8467, though seed 1 alone picks b
    assert seeds.per_seed_best(CANDIDATES) == {1: "b", 2: "a", 3: "b"}
    shuffled = copy.deepcopy(CANDIDATES)
    tests = [r["test_macro_f1"] for r in shuffled["a"]]
    for r, t in zip(shuffled["a"], reversed(tests)):  # one candidate's test figures permuted across its seeds
        r["test_macro_f1"] = t
    shuffled["b"][0]["test_macro_f1"] = 1.0
    assert seeds.best_on_mean(shuffled) == "a"
    moved = copy.deepcopy(CANDIDATES)
    moved["b"][1]["val_macro_f1"] = 0.86  # one seed's val: b's mean becomes 0.8567
    assert seeds.mean_of(moved["b"]) == pytest.approx(0.8567, abs=1e-4) and seeds.best_on_mean(moved) == "b"
    tie = {"x": [run(1, 0.8)], "y": [run(1, 0.8)]}
    assert seeds.best_on_mean(tie) == "x" and seeds.best_on_mean(dict(reversed(tie.items()))) == "y"


def test_a_goal_on_a_seed_mean_says_how_many_seeds_met_it():
    goal = goals.from_params({"max_f1_drop_pts": 1.0})[0]
    check = goal.check(-0.8, "s", per_seed=[-0.2, -1.5, -0.7])
    assert check["met"] and (check["seeds"], check["seeds_met"]) == (3, 2)
    assert "the mean of 3 seeds; met by 2 of them" in check["reads"]
    assert "seeds" not in goal.check(-0.8, "s", per_seed=[-0.8]) and "seeds" not in goal.check(-0.8, "s")


def stage_with(candidates: dict, exported: dict) -> distillation.Stage:
    """Stage 02 holding finished students (only what its decisions read): per kind its seeds' records."""
    stage = object.__new__(distillation.Stage)
    stage.p = SimpleNamespace(seed=1, seeds=3, max_f1_drop_pts=1.5, min_speedup=2.0)
    stage.params = {"max_f1_drop_pts": 1.5, "min_speedup": 2.0}
    stage.teacher_val = {"macro_f1": 0.86}
    stage.results = {k: {"runs": copy.deepcopy(runs), "seed": exported[k]} for k, runs in candidates.items()}
    stage.sizes = pd.DataFrame({"speedup": [2.5] * len(candidates)}, index=[f"student_{k}" for k in candidates])
    return stage


def test_stage_02_decides_on_the_seed_mean_of_val():
    stage = stage_with({"kd_vanilla": CANDIDATES["a"], "kd_intermediate": CANDIDATES["b"]},
                       {"kd_vanilla": 1, "kd_intermediate": 3})
    assert stage.best() == "student_kd_vanilla"
    f1_goal = stage.goal_checks()[0]
    assert f1_goal["value"] == pytest.approx(100 * (0.85 - 0.86)) and f1_goal["seeds_met"] == 2  # -1, 0, -2 points
    line = stage.seeds_line()
    assert "mean val macro-F1 of 3 seeds (0.8500 ± 0.0100 (0.8400-0.8600))" in line and "1 of 3 seeds alone" in line
    for r in stage.results["kd_vanilla"]["runs"]:
        r["test_macro_f1"] = 1 - r["test_macro_f1"]  # test moves: the choice and its goal do not
    assert stage.best() == "student_kd_vanilla" and stage.goal_checks()[0]["value"] == f1_goal["value"]
    stage.results["kd_intermediate"]["runs"][1]["val_macro_f1"] = 0.86  # one seed's val moves the mean it reads
    assert stage.best() == "student_kd_intermediate"
    assert stage.goal_checks()[0]["value"] == pytest.approx(100 * (statistics.fmean([0.86, 0.86, 0.85]) - 0.86))
    table = stage.seed_table()
    # the exported seed is derived, the median on val: (0.85, seed 3), (0.86, seed 1), (0.86, seed 2) -> seed 1
    assert table.loc["student_kd_intermediate", "exported seed"] == 1 and table["seeds"].tolist() == [3, 3]
    assert "OOD-val macro-F1" not in table  # no seed has OOD-val figures here


def test_one_seed_says_it_carries_no_training_variance():
    stage = stage_with({"kd_vanilla": [run(42, 0.85)]}, {"kd_vanilla": 42})
    assert stage.seeds_line().startswith("* One training seed (42)") and "--seeds 3" in stage.seeds_line()
    assert "seeds" not in stage.goal_checks()[0]
