"""lib/harness.py: each variant measured in its own process (fork server, or spawn where there is none)."""
import json

import numpy as np
import pytest

from lib import bench, harness
from lib.errors import FinCompressError
from lib.variants import Variant
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
    assert len(r["logits"]["test"]) == len(TEXTS) and r["latency"]["n"] == 6
    assert r["peak_rss_mb"] < bench.peak_rss_mb() - 1000
    del ballast


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
