"""lib/decide.py: Pareto frontier, deployment goals, the recommendation and its lineage."""
import pandas as pd

from lib import decide


def costs(df: pd.DataFrame) -> pd.DataFrame:
    """Speed-up and size ratio against the first row (the teacher), as run_benchmark computes them."""
    return df.assign(speedup_vs_teacher=df["latency_median_ms"].iloc[0] / df["latency_median_ms"],
                     size_ratio_vs_teacher=df["disk_bytes"].iloc[0] / df["disk_bytes"])


def test_pareto_front_and_recommendation():
    df = costs(pd.DataFrame({"name": ["teacher", "a", "b", "c"], "macro_f1": [0.90, 0.895, 0.85, 0.89],
                             "latency_median_ms": [10.0, 3.0, 1.0, 4.0], "disk_bytes": [100, 30, 10, 40],
                             "f1_drop_points": [0.0, 0.5, 5.0, 1.0]}))
    assert decide.pareto_front(df, "latency_median_ms").tolist() == [True, True, True, False]
    # nothing within 1.5 points is 8x faster and 6x smaller: the fastest within the F1 budget
    assert decide.recommend(df, 1.5)["name"] == "a"  # b is faster but loses 5 points
    assert decide.recommend(df, 6.0)["name"] == "b"
    # within timing noise (10%) of the fastest, the smaller variant is the one to ship
    twin = costs(pd.concat([df, pd.DataFrame({"name": ["a_vocab"], "macro_f1": [0.893], "latency_median_ms": [3.2],
                                              "disk_bytes": [20], "f1_drop_points": [0.7]})], ignore_index=True))
    assert decide.recommend(twin, 1.5)["name"] == "a_vocab"
    assert decide.recommend(twin, 1.5, latency_tie=0.0)["name"] == "a"


def test_recommendation_prefers_variants_that_meet_every_goal():
    df = costs(pd.DataFrame({"name": ["teacher", "fast_big", "small", "small_slow"], "macro_f1": [0.9, 0.89, 0.89, 0.9],
                             "latency_median_ms": [10.0, 0.9, 1.2, 2.0], "disk_bytes": [100, 25, 14, 10],
                             "f1_drop_points": [0.0, 1.0, 1.2, 0.1]}))
    assert decide.recommend(df, 1.5, min_speedup=8, min_size_ratio=6)["name"] == "small"  # fast_big is 4x smaller
    assert decide.recommend(df, 1.5, min_speedup=4, min_size_ratio=9)["name"] == "small_slow"
    assert decide.recommend(df, 1.5, min_speedup=20, min_size_ratio=6)["name"] == "fast_big"  # no one meets: fastest
    goals = {"max_drop_points": 1.5, "min_speedup": 8, "min_size_ratio": 6}
    assert "at least 8x faster and 6x smaller" in decide.choice_rule(df.iloc[2], goals)
    assert "none met" in decide.choice_rule(df.iloc[1], goals)


def test_lineage():
    df = pd.DataFrame({"name": ["teacher", "student", "student_p50", "student_p50_onnx_int8"],
                       "parent": [None, "teacher", "student", "student_p50"]})
    assert decide.lineage(df, "student_p50_onnx_int8") == ["teacher", "student", "student_p50", "student_p50_onnx_int8"]
