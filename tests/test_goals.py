"""lib/core/goals.py: a goal parameter becomes a check with its metric, direction and words."""
import pandas as pd

from lib.core import goals


def test_goals_come_from_parameters_with_their_direction():
    gs = goals.from_params({"max_f1_drop_pts": 1.5, "min_speedup": 8.0, "lr": 1e-4}, ref="the teacher")
    # a budget of 1.5 points lost bounds the (negative = worse) validation delta from below
    assert [(g.name, g.metric, g.op, g.threshold) for g in gs] == [("max_f1_drop_pts", "val_delta_pts", ">=", -1.5),
                                                                   ("min_speedup", "speedup", ">=", 8.0)]
    assert gs[0].text == "validation macro-F1 at most 1.5 points below the teacher"
    assert gs[0].met(-1.5) and not gs[0].met(-1.6) and gs[0].met(0.3) and gs[1].met(8.0) and not gs[1].met(7.9)
    assert goals.all_met(gs, {"val_delta_pts": -0.2, "speedup": 9})
    assert not goals.all_met(gs, {"val_delta_pts": -2, "speedup": 9})
    assert gs[1].met(pd.Series([7.0, 9.0])).tolist() == [False, True]
    renamed = goals.from_params({"min_speedup": 8.0}, columns={"speedup": "speedup_vs_teacher"})
    assert renamed[0].metric == "speedup_vs_teacher" and renamed[0].short == "speed-up ≥ 8.0x"


def test_checks_are_json_records_and_verdict_lines():
    gs = goals.from_params({"target_f1": 0.87, "max_f1_drop_pts": 1.5})
    checks = goals.check_all(gs, {"val_macro_f1": 0.8802, "val_delta_pts": -1.72}, "teacher")
    assert checks[0] == {"goal": "target_f1", "text": "validation macro-F1 at least 0.87", "short": "val F1 ≥ 0.87",
                         "metric": "val_macro_f1", "threshold": 0.87, "subject": "teacher", "value": 0.8802,
                         "met": True, "reads": "0.8802"}
    assert goals.lines(checks) == [
        "* **MET**: teacher: validation macro-F1 at least 0.87 (it reads 0.8802)",
        "* **NOT MET**: teacher: validation macro-F1 at most 1.5 points below the teacher (it reads -1.72 points)"]


def test_ood_retention_goal_reads_the_out_of_domain_validation_retention():
    g, = goals.from_params({"min_ood_retention": 0.97, "lr": 1e-4})
    assert (g.metric, g.op, g.threshold) == ("ood_val_retention", ">=", 0.97)
    assert g.met(0.97) and not g.met(0.969) and "out-of-domain validation" in g.text
    assert goals.check_all([g], {"ood_val_retention": 0.95}, "s")[0]["reads"] == "0.950"
