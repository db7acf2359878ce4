"""A FinBERT-sized yardstick: a BertForSequenceClassification with bert-base dimensions and random weights.

FinBERT (ProsusAI/finbert) is not downloaded here, yet "how much faster than FinBERT as people run it" is the
question a reader asks. Speed and size depend on the shape, not on the weights, so a seeded random model of
FinBERT's shape (12 layers x 768, 12 heads, FFN 3072, the bert-base-uncased vocabulary, 3 labels) answers it on
the same machine, timed by the same harness as PyTorch FP32 and as ONNX Runtime dynamic INT8. Its F1 means
nothing: it is labelled "shape only, untrained", never recommended, never the reference of a delta.
"""
from pathlib import Path

from lib.core.files import atomic_dir
from lib.core.model_source import PACKAGED_TEACHER, resolve_model_source
from lib.core.variants import ONNX_FILE, Variant
from lib.techniques import quantize as q

FINBERT_SHAPE = {"vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                 "intermediate_size": 3072, "max_position_embeddings": 512, "type_vocab_size": 2, "num_labels": 3}
LABEL = "shape only, untrained"


def build_yardstick(out_dir: Path, layers: int = 12, seed: int = 42, tokenizer_source: str = PACKAGED_TEACHER) -> Path:
    """Save the seeded random bert-base-shaped classifier (`layers` of FinBERT's 12) and its tokenizer."""
    # the packaged teacher's tokenizer is bert-base-uncased's WordPiece, the vocabulary FinBERT uses
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    torch.manual_seed(seed)
    model = BertForSequenceClassification(BertConfig(**{**FINBERT_SHAPE, "num_hidden_layers": layers})).eval()
    model.config.id2label = {0: "negative", 1: "neutral", 2: "positive"}
    model.config.label2id = {v: k for k, v in model.config.id2label.items()}
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(tokenizer_source))
    with atomic_dir(Path(out_dir)) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return Path(out_dir)


def yardstick_int8(model_dir: Path, out_dir: Path, texts: list[str]) -> Path:
    """The yardstick as people deploy BERT on a CPU with ONNX Runtime: the fused graph, dynamic INT8 (everything
    quantized: its weights are random, so there is no accuracy to keep FP32 groups for)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with atomic_dir(Path(out_dir)) as tmp:
        q.export_onnx(model, q.example_inputs(tokenizer, texts[:8]), tmp / "fp32.onnx")
        q.quantize_onnx(tmp / "fp32.onnx", tmp / ONNX_FILE)
        (tmp / "fp32.onnx").unlink()
        tokenizer.save_pretrained(tmp)
        (tmp / "config.json").write_text((Path(model_dir) / "config.json").read_text())  # labels, for lib.predict
    return Path(out_dir)


def build(root: Path, out_dir: Path, texts: list[str], layers: int = 12, seed: int = 42,
          stage: str = "05_benchmark") -> list[Variant]:
    """The two yardstick variants in out_dir (under root): FP32 PyTorch (the reference of the FinBERT ratio) and
    ORT dynamic INT8."""
    fp32 = build_yardstick(Path(out_dir) / "fp32", layers, seed)
    int8 = yardstick_int8(fp32, Path(out_dir) / "onnx_int8", texts)
    name = "finbert_sized" if layers == FINBERT_SHAPE["num_hidden_layers"] else f"finbert_shaped_{layers}_layers"
    base = Variant(f"{name}_fp32", "hf", str(fp32.relative_to(root)), None, ("random_init",), stage, "fp32")
    return [base, base.derive(f"{name}_onnx_int8", "onnx", int8.relative_to(root), ("onnx_export", "onnx_int8"),
                              stage, "int8")]
