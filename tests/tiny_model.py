"""A tiny BERT classifier (random weights, the packaged MiniLM's real tokenizer) exported to artifacts/model by
the same code stage 05 uses, and stage-05 result rows with the field names of notes/SCHEMA."""
import os
import subprocess
import sys
from pathlib import Path

from lib.core import stats
from tests.conftest import REPO

SETS = ("val", "test")
# Imports that raise in a child process: a Python with only requirements-serve.txt installed, or without this repo.
BLOCKER = '''import os, sys
BLOCKED = set(os.environ.get("BLOCK_IMPORTS", "").split(","))
class Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
sys.meta_path.insert(0, Blocker())
'''


def schema_row(name: str, f1: dict, delta: dict | None = None, **extra) -> dict:
    """One benchmark row: per set S `S_macro_f1`, its CI, the paired delta vs the teacher with its CI, p and word
    (the teacher's: "reference"), and costs."""
    row = {"name": name, "format": "onnx", "stage": "05_benchmark", "precision": "int8", "path": name,
           "latency_median_ms": 2.5, "latency_p95_ms": 3.1, "latency_p99_ms": 3.9, "throughput_b32_per_s": 1500.0,
           "peak_rss_mb": 120.0, "load_s": 0.3, "disk_bytes": 9_800_000, "weight_bytes": 9_500_000,
           "speedup_vs_teacher": 9.5, "size_ratio_vs_teacher": 9.3}
    for s, value in f1.items():
        d = (delta or {}).get(s, (0.0, 0.0, 0.0))
        # as the bootstrap would read the CI (1 for no difference at all); a family of one: Holm adds nothing
        p = 0.001 if not d[1] <= 0 <= d[2] else 1.0 if d[1] == d[2] == 0 else 0.5
        row.update({f"{s}_p": p, f"{s}_p_holm": None if name == "teacher" else p,
                    f"{s}_reading": "reference" if name == "teacher" else stats.reading(d[0], p)})
        row.update({f"{s}_macro_f1": value, f"{s}_f1_ci_low": value - 0.03, f"{s}_f1_ci_high": value + 0.03,
                    f"{s}_accuracy": value + 0.01, f"{s}_f1_negative": value - 0.05, f"{s}_f1_neutral": value + 0.04,
                    f"{s}_f1_positive": value, f"{s}_delta_pts": d[0], f"{s}_delta_ci_low": d[1],
                    f"{s}_delta_ci_high": d[2], f"{s}_mcnemar_p": p,
                    f"{s}_retention": 1.0, f"{s}_teacher_agreement": 0.95, f"{s}_ece": 0.04})
    return {**row, **extra}


def info() -> dict:
    return {"seed": 42, "git_commit": "abc1234", "hardware": {"cpu": "Test CPU 9000", "cpu_count": 2},
            "params": {"threads": 2}}


TEXTS = ["Operating profit rose to EUR 13.1 mn", "Sales fell", "The meeting is in May, said the company",
         "Net loss widened", "Shares jumped 12%", "Dividend unchanged"]


def tiny_classifier():
    """(model, tokenizer): a 2-layer, 32-wide BERT with random weights and the packaged MiniLM's tokenizer, its
    classifier widened so that the six TEXTS get different labels."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from lib.core.model_source import PACKAGED_TEACHER, resolve_model_source
    from lib.core.variants import LABELS
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_source(PACKAGED_TEACHER))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, id2label=dict(enumerate(LABELS)), label2id={l: i for i, l in enumerate(LABELS)})
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():  # random weights give every text the same label; centre and widen the logits instead
        pooled = model.bert(**tokenizer(TEXTS, padding=True, return_tensors="pt")).pooler_output
        model.classifier.weight.mul_(5000)
        model.classifier.bias.copy_(-model.classifier(pooled).mean(0) + model.classifier.bias)
    return model, tokenizer


def build(root: Path, serving: dict | None = None) -> Path:
    """root/artifacts/model exported from tiny_classifier (ONNX INT8), plus its hf checkpoint; `serving`: the serving
    settings record stage 05 ships (lib.measure.serving_search.run)."""
    import pandas as pd

    from lib.core.model_source import PACKAGED_TEACHER
    from lib.core.variants import Variant
    from lib.ship.artifacts import ship_recommended
    from lib.techniques.onnx_export import save_onnx_fp32, save_onnx_int8
    model, tokenizer = tiny_classifier()
    texts = TEXTS
    teacher_dir = root / "checkpoints" / "teacher"
    model.save_pretrained(teacher_dir)
    tokenizer.save_pretrained(teacher_dir)
    fp32_dir, _ = save_onnx_fp32("teacher", model, tokenizer, texts, root / "checkpoints" / "stacked", 1e-3)
    int8_dir = save_onnx_int8("teacher", fp32_dir, tokenizer, root / "checkpoints" / "stacked", [])
    teacher = Variant("teacher", "hf", "checkpoints/teacher", PACKAGED_TEACHER, ("finetune",), "01_data_teacher")
    shipped = teacher.derive("teacher_onnx_int8", "onnx", str(int8_dir.relative_to(root)), ("onnx_export", "onnx_int8"),
                             "05_benchmark", "int8")
    df = pd.DataFrame([schema_row("teacher", {"val": 0.85, "test": 0.84}, format="hf", precision="fp32"),
                       schema_row(shipped.name, {"val": 0.84, "test": 0.83},
                                  {"val": (-1.0, -2.5, 0.4), "test": (-1.2, -2.8, 0.3)})])
    return ship_recommended(df.iloc[1], df, [teacher, shipped], {"root": root}, info(), "the test's choice",
                            serving=serving)


def blocked_env(tmp: Path, blocked: str) -> dict:
    """Environment for a child Python in which importing any of `blocked` (comma-separated) raises."""
    (tmp / "blocker").mkdir(exist_ok=True)
    (tmp / "blocker" / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": str(tmp / "blocker"), "BLOCK_IMPORTS": blocked, "OMP_WAIT_POLICY": "PASSIVE"}


def predict(*args, cwd=REPO, env=None, stdin=None, script=False) -> subprocess.CompletedProcess:
    """python -m lib.predict (or the lib/predict folder as a script path) in a fresh process."""
    entry = [str(REPO / "lib" / "predict")] if script else ["-m", "lib.predict"]
    return subprocess.run([sys.executable, *entry, *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
