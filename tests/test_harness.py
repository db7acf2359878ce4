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
    path.write_text(json.dumps(TEXTS))
    return path


def test_harness_in_subprocess_matches(tiny_variant, texts):
    root, variant = tiny_variant
    ballast = np.ones(200_000_000)  # 1.6 GB in the parent: must not show up as the child's peak memory
    r = harness.measure_in_subprocess(variant, root, texts, threads=1, latency_n=3)
    assert len(r["logits"]) == len(TEXTS) and r["latency"]["n"] == 6
    assert r["peak_rss_mb"] < bench.peak_rss_mb() - 1000
    del ballast


def test_harness_without_forkserver_spawns(tiny_variant, texts, monkeypatch):
    root, variant = tiny_variant
    monkeypatch.setattr(harness.multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    assert harness.fork_server().get_start_method() == "spawn"
    r = harness.measure_in_subprocess(variant, root, texts, threads=1, latency_n=3)
    assert len(r["logits"]) == len(TEXTS) and r["load_s"] > 0


def test_broken_variant_fails_with_its_name(tiny_variant, texts):
    root, _ = tiny_variant
    with pytest.raises(FinCompressError, match="variant ghost .*nope does not exist; re-run"):
        harness.measure_in_subprocess(Variant("ghost", "hf", "nope"), root, texts, 1, 2)


def test_scores_from_logits_agree_with_the_teacher_predictions():
    labels = np.array([0, 1, 2, 2])
    logits = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    q = harness.score_logits(logits, labels, teacher_preds=np.array([0, 1, 2, 2]))
    assert q["accuracy"] == 0.75 and q["teacher_agreement"] == 0.75 and q["f1_ci_low"] <= q["macro_f1"] <= q["f1_ci_high"]
    assert harness.score_logits(logits, labels, None)["teacher_agreement"] == 1.0
