"""lib/ship/decide.py's batch-flip rule: only variants whose val and OOD-val labels do not move with their batch-mates
ship; test flips are reported, never read; when every variant within the F1 budget flips, the fewest flips ship."""
import numpy as np

from lib.core import goals
from lib.ship import decide
from tests.test_ship import deployment, ood_rows

N = {"val": 505, "test": 506, "ood_val": 2829}


def with_flips(val, test=(0, 0, 0), ood_val=(0, 0, 0)):
    """ood_rows (teacher, student_p50, student_p50_int8: the last the fastest; both students meet every goal) with
    these batch flips per set."""
    flips = {"val": val, "test": test, "ood_val": ood_val}
    return ood_rows().assign(ood_val_retention=[1.0, 0.98, 0.98], **{f"{s}_batch_flips": list(f) for s, f in flips.items()},
                             **{f"{s}_batch_n": [n] * 3 for s, n in N.items()})


def goals_of():
    return deployment(1.5, 2.0, 1.2) + goals.from_params({"min_ood_retention": 0.97}, columns=decide.COLUMNS)


def test_a_fastest_variant_that_flips_labels_is_not_recommended():
    gs = goals_of()
    assert decide.recommend(with_flips((0, 0, 0)), gs)["name"] == "student_p50_int8"  # the fastest meets every goal
    for df in (with_flips((0, 0, 2)), with_flips((0, 0, 0), ood_val=(0, 0, 1))):
        rec = decide.recommend(df, gs)
        assert rec["name"] == "student_p50"
        flips = f"{df.loc[2, 'val_batch_flips']} on val, {df.loc[2, 'ood_val_batch_flips']} on ood_val"
        assert f"`student_p50_int8` (1.00 ms) flips labels with its batch-mates ({flips})" in decide.why_here(rec, df, gs)
        assert decide.choice_rule(rec, gs).startswith(
            "the fastest variant that meets every goal and keeps its labels whatever its batch-mates (zero batch "
            "flips on val and ood_val): validation macro-F1 at most 1.5 points below the teacher")
    df = with_flips((0, 0, 2), test=(0, 3, 4))
    lines = decide.recommendation_text(decide.recommend(df, gs), df, gs, ["val", "test"]).splitlines()
    assert ("* Batch flips (its label for a sentence alone against its label in a shuffled batch of 32): 0 of 505 on "
            "val, 0 of 2829 on ood_val (the choice reads these); 3 of 506 on test (reported only).") in lines
    table = decide.quality_table(df, ["val", "test"])
    column = "batch flips (val / test / ood_val; - outside the F1 budget, not counted)"
    assert table[column].tolist() == ["0 / 0 / 0", "0 / 3 / 0", "2 / 4 / 0"]


def test_test_flips_never_change_the_choice():
    gs = goals_of()
    rng = np.random.default_rng(0)
    for val, ood_val in [((0, 0, 0), (0, 0, 0)), ((0, 0, 2), (0, 0, 0)), ((1, 3, 2), (0, 0, 0))]:
        picks = {decide.recommend(with_flips(val, tuple(rng.permutation([0, 5, 40])), ood_val), gs)["name"]
                 for _ in range(6)} | {decide.recommend(with_flips(val, (0, 0, 0), ood_val), gs)["name"]}
        assert len(picks) == 1, (val, picks)
    # a variant that flips only test labels ships like one that flips none, and says so as reported only
    rec = decide.recommend(with_flips((0, 0, 0), test=(0, 0, 9)), gs)
    assert rec["name"] == "student_p50_int8" and "zero batch flips on val and ood_val" in decide.choice_rule(rec, gs)


def test_when_every_variant_flips_the_fewest_flips_ship_and_the_verdict_says_so():
    gs = goals_of()
    df = with_flips((1, 3, 1), ood_val=(0, 0, 0))  # the teacher and the INT8 tie on the fewest: the faster ships
    rec = decide.recommend(df, gs)
    assert rec["name"] == "student_p50_int8"
    assert decide.choice_rule(rec, gs).startswith(
        "the fastest variant that meets every goal and flips the fewest labels with its batch-mates (1 on val and "
        "ood_val; no variant within the F1 budget flips none)")
    df = with_flips((1, 3, 2), ood_val=(0, 0, 1))  # the teacher flips fewest: it ships, though it misses the goals
    rec = decide.recommend(df, gs)
    assert rec["name"] == "teacher"
    assert decide.choice_rule(rec, gs) == (
        "the fastest variant with validation macro-F1 at most 1.5 points below the teacher that flips the fewest labels "
        "with its batch-mates (1 on val and ood_val; no variant within the F1 budget flips none) (none of those met "
        "every goal)")
    why = decide.why_here(rec, df, gs)
    assert "`student_p50_int8` (1.00 ms) flips labels with its batch-mates (2 on val, 1 on ood_val)" in why
    assert "`student_p50` (4.00 ms) flips labels with its batch-mates (3 on val, 0 on ood_val)" in why
    # outside the F1 budget nothing counts: a variant 5 points down with no flips does not ship
    far = df.assign(val_delta_pts=[0.0, -5.0, -0.5], val_batch_flips=[1, 0, 2])
    assert decide.recommend(far, gs)["name"] == "teacher"


def test_without_counted_flips_the_rule_is_as_before():
    df = ood_rows()
    gs = goals_of()
    rec = decide.recommend(df, gs)
    assert rec["name"] == "student_p50_int8" and decide.decision_flips(df).tolist() == [0, 0, 0]
    assert "batch-mates" not in decide.choice_rule(rec, gs)
    assert not [c for c in decide.quality_table(df, ["val", "test"]) if "batch flips" in c]
    assert "* Batch flips: not measured (`batch_flip_sets` is empty)" in decide.recommendation_text(rec, df, gs, ["val", "test"])
    assert decide.flips_of(with_flips((0, 0, 2), test=(7, 7, 7), ood_val=(0, 0, 3)).iloc[2]) == 5


def test_a_variant_whose_flips_were_not_counted_is_never_taken_for_a_steady_one():
    """Stage 05 counts flips only within the F1 budget (harness.run_benchmark's flip_budget_pts): an uncounted
    variant reads '-' in the table and, were it ever inside the budget, could not ship as one with zero flips."""
    gs = goals_of()
    df = with_flips((0, 0, 0)).astype({f"{s}_batch_flips": float for s in N})
    df.loc[2, [f"{s}_batch_flips" for s in N]] = np.nan  # the fastest, uncounted
    assert decide.recommend(df, gs)["name"] == "student_p50"
    column = "batch flips (val / test / ood_val; - outside the F1 budget, not counted)"
    assert decide.quality_table(df, ["val", "test"])[column].tolist() == ["0 / 0 / 0", "0 / 0 / 0", "- / - / -"]
    assert decide.decision_flips(df).tolist() == [0, 0, 0]  # the reasons' wording reads 0, the choice reads inf
    assert decide.decision_flips(df, uncounted=np.inf).tolist() == [0, 0, np.inf]
