"""The FinBERT-sized yardstick (bert-base shape, seeded, saved with its tokenizer, and its ORT INT8 form) and
lib/measure/speed.py's rows and ratios for it, the end-to-end columns and the share of the peak."""
import collections

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertConfig, BertForSequenceClassification

from lib.core.variants import ONNX_FILE
from lib.measure import speed, yardstick as ys
from lib.predict import serving

SENTENCES = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn.", "Shares fell.",
             "The company said it will cut 120 jobs at its plant in Finland this year.", "Net sales were flat."]


def test_yardstick_has_finberts_shape_is_seeded_and_runs_as_ort_int8(tmp_path):
    variants = ys.build(tmp_path, tmp_path / "ys", SENTENCES * 2, layers=1, seed=3)
    assert [(v.name, v.format, v.precision) for v in variants] == [
        ("finbert_shaped_1_layers_fp32", "hf", "fp32"), ("finbert_shaped_1_layers_onnx_int8", "onnx", "int8")]
    model = AutoModelForSequenceClassification.from_pretrained(variants[0].location(tmp_path))
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size,
            cfg.vocab_size, cfg.num_labels) == (1, 768, 12, 3072, 30522, 3)
    torch.manual_seed(3)
    again = BertForSequenceClassification(BertConfig(**{**ys.FINBERT_SHAPE, "num_hidden_layers": 1}))
    assert torch.equal(again.classifier.weight, model.classifier.weight)
    int8 = variants[1].location(tmp_path)
    ops = collections.Counter(n.op_type for n in onnx.load(str(int8 / ONNX_FILE)).graph.node)
    assert ops["QAttention"] == 1 and ops["Attention"] == 0
    served = serving.load(int8, threads=1)  # the way the end-to-end timing loads it
    assert served.labels == ["negative", "neutral", "positive"]


def test_full_yardstick_is_bert_base_sized():
    cfg = BertConfig(**ys.FINBERT_SHAPE)
    with torch.device("meta"):
        n = sum(p.numel() for p in BertForSequenceClassification(cfg).parameters())
    assert 109_000_000 < n < 110_000_000 and cfg.num_hidden_layers == 12  # bert-base + a 3-way head


def frames():
    df = pd.DataFrame({"name": ["teacher", "small"], "format": ["hf", "onnx"], "precision": ["fp32", "int8"],
                       "latency_median_ms": [8.0, 1.0], "latency_p95_ms": [9.0, 1.2], "speedup_vs_teacher": [1.0, 8.0],
                       "throughput_b32_per_s": [100.0, 1000.0], "disk_bytes": [90e6, 9e6],
                       "size_ratio_vs_teacher": [1.0, 10.0], "peak_rss_mb": [500.0, 200.0], "load_s": [1.0, 0.1],
                       "e2e_latency_median_ms": [9.0, 1.5], "e2e_throughput_b32_per_s": [90.0, 800.0],
                       "useful_macs_per_sentence": [None, 5e6]})
    yard = df.iloc[[0, 1]].reset_index(drop=True).assign(name=["fs_fp32", "fs_int8"], latency_median_ms=[40.0, 20.0],
                                                         useful_macs_per_sentence=[None, 3e9])
    return df, yard


def test_finbert_ratio_peak_share_and_tables():
    df, yard = frames()
    peak = {"int8": {"gops": 100.0, "threads": 2, "shape": "a", "per_shape": {"a": 100.0}},
            "fp32": {"gops": 50.0, "threads": 2, "shape": "a", "per_shape": {"a": 50.0}}}
    speed.with_peak_share(speed.with_finbert_ratio(df, yard), peak)
    speed.with_peak_share(speed.with_finbert_ratio(yard, yard), peak)
    assert df["speedup_vs_finbert_fp32"].tolist() == [5.0, 40.0]
    assert np.isnan(df.loc[0, "share_int8_peak_b32"]) and df.loc[1, "share_int8_peak_b32"] == pytest.approx(0.1)
    assert df.loc[1, "share_fp32_peak_b32"] == pytest.approx(0.2)  # 2 x 5e6 MACs x 1000/s over 50 GOP/s
    costs = speed.cost_table(df, yard)
    assert costs["variant"].tolist() == ["teacher", "small", "fs_fp32 (shape only, untrained)",
                                         "fs_int8 (shape only, untrained)"]
    assert costs["#"].tolist() == [0, 1, "", ""] and costs["e2e ms (batch 1)"].tolist() == [9.0, 1.5, 9.0, 1.5]
    assert costs["faster than FinBERT-sized FP32 (x)"].tolist() == [5.0, 40.0, 1.0, 2.0]
    assert costs["% of INT8 peak (batch 32)"].tolist() == ["n/a", "10.0", "n/a", "6000.0"]  # 2 x 3e9 x 1000/s
    without_peak = speed.cost_table(df.drop(columns="share_int8_peak_b32"), yard.drop(columns="share_int8_peak_b32"))
    assert "% of INT8 peak (batch 32)" not in without_peak
    quality = speed.quality_table(pd.DataFrame({"#": [0, 1], "variant": ["teacher", "small"], "val F1": ["x", "y"]}), yard)
    assert quality.iloc[2:].to_dict("list") == {"#": ["", ""], "variant": ["fs_fp32 (shape only, untrained)",
                                                                           "fs_int8 (shape only, untrained)"],
                                                "val F1": ["n/a", "n/a"]}
    text = speed.summary(df.iloc[1], yard, peak)
    assert "40.0x faster at batch 1 than `fs_fp32`" in text and "10.0% of the INT8 peak" in text
    assert "1.50 ms per sentence at batch 1, 800 sentences/s" in text
    assert "no ONNX graph" in speed.summary(df.iloc[0], None, peak) and "not measured" in speed.peak_text(df.iloc[1], None)
