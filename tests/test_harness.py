"""lib/measure/harness.py: each variant measured in its own process (fork server, or spawn where there is none)."""
import json
from pathlib import Path

import numpy as np
import pytest

from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.measure import bench, harness
from tests.test_bench import TEXTS, tiny_variant  # noqa: F401  (a fixture)


@pytest.fixture
def texts(tmp_path):
    """The test sentences as the JSON file the stage-05 harness hands each variant process."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"val": TEXTS[:4], "test": TEXTS}))
    return path


def test_harness_in_subprocess_matches(tiny_variant, texts):
    root, variant = tiny_variant
    ballast = np.ones(200_000_000)  # 1.6 GB in the parent: must not show up as the child's peak memory
    r = harness.measure_in_subprocess(variant, root, texts, threads=1, latency_n=3)
    assert r["latency"]["n"] == 6
    assert r["peak_rss_mb"] < bench.peak_rss_mb() - 1000
    del ballast
    # the child's logits are the model's: each sentence scored here, alone and unpadded, in this process
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model, tok = AutoModelForSequenceClassification.from_pretrained(root / "m").eval(), AutoTokenizer.from_pretrained(root / "m")
    with torch.no_grad():
        here = {s: np.concatenate([model(**tok(t, return_tensors="pt")).logits.numpy() for t in ts])
                for s, ts in (("val", TEXTS[:4]), ("test", TEXTS))}
    for s in here:
        assert np.asarray(r["logits"][s]).shape == here[s].shape and np.allclose(r["logits"][s], here[s], atol=1e-4), s
    # end to end (lib.predict's loader, tokenizer and batching): the same labels as the model-only run, every
    # figure positive; an hf model has no ONNX graph to count MACs from
    row = harness.end_to_end_columns(r)
    assert row["e2e_label_agreement"] == 1.0 and r["e2e"]["labels"] == here["val"].argmax(1).tolist()
    assert row["e2e_latency_median_ms"] > 0 and row["e2e_throughput_b32_per_s"] > 0
    assert row["useful_macs_per_sentence"] is None


def test_harness_without_forkserver_spawns(tiny_variant, texts, monkeypatch):
    root, variant = tiny_variant
    monkeypatch.setattr(harness.multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    assert harness.fork_server().get_start_method() == "spawn"
    r = harness.measure_in_subprocess(variant, root, texts, threads=1, latency_n=3)
    assert len(r["logits"]["val"]) == 4 and r["load_s"] > 0


def test_broken_variant_fails_with_its_name(tiny_variant, texts):
    root, _ = tiny_variant
    with pytest.raises(FinCompressError, match="variant ghost .*nope does not exist; re-run"):
        harness.measure_in_subprocess(Variant("ghost", "hf", "nope"), root, texts, 1, 2)


def test_scores_from_logits_agree_with_the_teacher_predictions():
    labels = np.array([0, 1, 2, 2])
    logits = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    q = harness.score_logits(logits, labels, teacher_preds=np.array([0, 1, 2, 2]))
    assert q["accuracy"] == 0.75 and q["teacher_agreement"] == 0.75 and q["f1_ci_low"] <= q["macro_f1"] <= q["f1_ci_high"]
    # one sentence only the teacher gets right: the delta is negative (worse), McNemar p = 2 * 1/2
    assert q["delta_pts"] < 0 and q["delta_ci_low"] <= q["delta_pts"] <= q["delta_ci_high"] and q["mcnemar_p"] == 1.0
    alone = harness.score_logits(logits, labels, None)  # the teacher against itself
    assert alone["teacher_agreement"] == 1.0 and (alone["delta_pts"], alone["delta_ci_low"], alone["mcnemar_p"]) == (0, 0, 1)


def test_every_set_gets_the_schema_columns_and_ratios():
    import pandas as pd
    df = pd.DataFrame({"val_macro_f1": [0.8, 0.76], "test_macro_f1": [0.9, 0.9], "latency_median_ms": [10.0, 2.5],
                       "disk_bytes": [100, 20]})
    out = harness.with_ratios(df, ["val", "test"])
    assert out["val_retention"].tolist() == [1.0, 0.95] and out["test_retention"].tolist() == [1.0, 1.0]
    assert out["speedup_vs_teacher"].tolist() == [1.0, 4.0] and out["size_ratio_vs_teacher"].tolist() == [1.0, 5.0]


def raw_measurement(logits: dict, median_ms: float, disk_bytes: int) -> dict:
    """What a variant's process reports (bench.measure_variant's fields), with chosen logits and costs."""
    return {"logits": logits, "latency": {"median_ms": median_ms, "p95_ms": median_ms * 1.5, "p99_ms": median_ms * 2},
            "throughput_per_s": 100.0, "peak_rss_mb": 500.0, "load_s": 0.5, "disk_bytes": disk_bytes,
            "weight_bytes": disk_bytes - 10, "useful_macs": 2e6,
            "e2e": {"latency_median_ms": median_ms * 1.2, "throughput_per_s": 80.0,
                    "labels": np.argmax(logits["val"], 1).tolist()[:-1] + [3]}}  # the last label differs


def one_hot(preds) -> list:
    return np.eye(3)[preds].tolist()


def test_stage05_columns_match_values_computed_from_the_raw_measurements(monkeypatch):
    """Issue 23, mutation 3: every derived column, recomputed here with sklearn and plain arithmetic from the logits,
    latencies and sizes the variant processes report; a worse variant has a negative delta."""
    import pandas as pd
    from sklearn.metrics import f1_score
    labels = {"val": [0, 1, 2, 0, 1, 2], "test": [0, 0, 1, 1, 2, 2, 2, 1]}
    preds = {"teacher": {"val": [0, 1, 2, 0, 1, 2], "test": [0, 0, 1, 1, 2, 2, 1, 1]},
             "worse": {"val": [0, 1, 2, 2, 0, 2], "test": [0, 1, 1, 2, 2, 0, 1, 1]},
             "better": {"val": [0, 1, 2, 0, 1, 1], "test": [0, 0, 1, 1, 2, 2, 2, 1]}}
    costs = {"teacher": (10.0, 1000), "worse": (2.5, 250), "better": (4.0, 800)}
    raw = {n: raw_measurement({s: one_hot(p) for s, p in preds[n].items()}, *costs[n]) for n in preds}
    monkeypatch.setattr(harness, "measure_in_subprocess", lambda v, *a: raw[v.name])
    sets = {s: pd.DataFrame({"text": [f"s{i}" for i in range(len(y))], "label": y}) for s, y in labels.items()}
    df = harness.run_benchmark(Path("."), sets, [Variant(n, "hf", n) for n in preds])
    f1 = {(n, s): f1_score(labels[s], preds[n][s], average="macro", labels=[0, 1, 2], zero_division=0)
          for n in preds for s in labels}
    for i, n in enumerate(preds):
        r = df.iloc[i]
        assert r["name"] == n
        for s in labels:
            assert r[f"{s}_macro_f1"] == pytest.approx(f1[n, s])
            assert r[f"{s}_delta_pts"] == pytest.approx(100 * (f1[n, s] - f1["teacher", s]))
            assert r[f"{s}_retention"] == pytest.approx(f1[n, s] / f1["teacher", s])
            assert r[f"{s}_accuracy"] == pytest.approx(np.mean(np.array(preds[n][s]) == labels[s]))
            assert r[f"{s}_teacher_agreement"] == pytest.approx(np.mean(np.array(preds[n][s]) == preds["teacher"][s]))
        assert r["speedup_vs_teacher"] == pytest.approx(costs["teacher"][0] / costs[n][0])
        assert r["size_ratio_vs_teacher"] == pytest.approx(costs["teacher"][1] / costs[n][1])
        assert (r["latency_median_ms"], r["disk_bytes"], r["latency_p99_ms"]) == (costs[n][0], costs[n][1], 2 * costs[n][0])
        assert (r["e2e_latency_median_ms"], r["e2e_throughput_b32_per_s"]) == (1.2 * costs[n][0], 80.0)
        assert r["e2e_label_agreement"] == pytest.approx(5 / 6) and r["useful_macs_per_sentence"] == 2e6
    # the sign convention by hand: "worse" loses points on both sets, "better" gains on test
    assert df.loc[1, "val_delta_pts"] < 0 and df.loc[1, "test_delta_pts"] < 0 and df.loc[2, "test_delta_pts"] > 0
    assert (df.loc[1, "speedup_vs_teacher"], df.loc[1, "size_ratio_vs_teacher"]) == (4.0, 4.0)


def test_flips_are_counted_for_the_teacher_the_reference_rows_and_the_variants_within_the_budget(monkeypatch):
    """flip_budget_pts: the teacher (first) and reference rows get no gate; every other variant gets one whose floor
    is the teacher's val macro-F1 minus the budget and FLIP_MARGIN_PTS; without a budget nobody is gated."""
    import pandas as pd
    from sklearn.metrics import f1_score
    labels = {"val": [0, 1, 2, 0, 1, 2], "test": [0, 0, 1, 1, 2, 2]}
    raw = raw_measurement({s: one_hot(y) for s, y in labels.items()}, 5.0, 100)
    gates = {}
    def fake(v, root, texts, threads, latency_n, flip_sets, seed, gate):
        gates[v.name] = gate
        return raw
    monkeypatch.setattr(harness, "measure_in_subprocess", fake)
    sets = {s: pd.DataFrame({"text": [f"s{i}" for i in range(len(y))], "label": y}) for s, y in labels.items()}
    variants = [Variant("teacher", "hf", "t"), Variant("student", "hf", "s"), Variant("ref", "onnx", "r", reference=True)]
    harness.run_benchmark(Path("."), sets, variants, flip_sets=("val",), flip_budget_pts=1.0)
    teacher_f1 = f1_score(labels["val"], labels["val"], average="macro")
    assert gates["teacher"] is None and gates["ref"] is None
    gate = gates["student"]
    assert gate.set_name == "val" and gate.labels == tuple(labels["val"])
    assert gate.min_macro_f1 == pytest.approx(teacher_f1 - (1.0 + harness.FLIP_MARGIN_PTS) / 100)
    harness.run_benchmark(Path("."), sets, variants, flip_sets=("val",))
    assert set(gates.values()) == {None}
