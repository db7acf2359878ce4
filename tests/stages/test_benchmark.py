"""Stage 05 (lib/stages/benchmark.py): every listed variant plus the stacked ones, one harness, the recommendation."""
import json

import pandas as pd


def test_stage05_smoke(smoke_run):
    m = json.loads((smoke_run / "reports" / "05_benchmark.json").read_text())
    rows = pd.read_csv(smoke_run / "results" / "benchmark.csv")
    listed = [v["name"] for s in ("01_data_teacher", "02_distillation", "03_quantization", "04_pruning")
              for v in json.loads((smoke_run / "reports" / f"{s}.json").read_text())["variants"]]
    assert rows["name"].tolist()[:len(listed)] == listed  # every earlier variant, in stage order, the teacher first
    stacked = rows.iloc[len(listed):]
    assert len(stacked) and set(stacked["stage"]) == {"05_benchmark"} and set(stacked["precision"]) == {"int8"}
    # each stacked model has a vocabulary-trimmed twin from the same pruned source, smaller on disk
    by_kind = {trimmed: g.set_index("source")["disk_bytes"]
               for trimmed, g in stacked.groupby(stacked["techniques"].str.contains("vocab_trim"))}
    assert set(by_kind[True].index) == set(by_kind[False].index) == set(rows.loc[rows["format"] == "pruned", "name"])
    assert (by_kind[True] < 0.8 * by_kind[False]).all()
    for col in ["macro_f1", "f1_ci_low", "f1_ci_high", "accuracy", "f1_negative", "teacher_agreement", "ece",
                "latency_median_ms", "latency_p95_ms", "latency_p99_ms", "throughput_b32_per_s", "peak_rss_mb",
                "disk_bytes", "load_s", "speedup", "size_ratio", "f1_drop_pts"]:
        assert rows[col].notna().all(), col
    assert (rows["f1_ci_low"] <= rows["macro_f1"]).all() and (rows["macro_f1"] <= rows["f1_ci_high"]).all()
    assert [r["name"] for r in m["metrics"]["table"]] == rows["name"].tolist()
    assert [g["goal"] for g in m["goals"]] == ["max_f1_drop_pts", "min_speedup", "min_size_ratio"]
    model = smoke_run / "artifacts" / "model"
    card = (model / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-nc-sa-3.0\n") and m["headline"]["recommended"] in card
    assert "fine-tuned for 3-class sentiment" in card and not (model / "MODEL_CARD.md").exists()
    config = json.loads((model / "config.json").read_text())
    assert config["model_type"] == "bert" and config["fincompress"]["variant"] == m["headline"]["recommended"]
    page = (smoke_run / "reports" / "05_benchmark.html").read_text()
    assert page.count("data:image/png;base64,") >= 2
    assert "Benchmark (test set, CPU)" in (smoke_run / "reports" / "index.html").read_text()
