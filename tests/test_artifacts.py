"""artifacts/model as standard tools see it (lib/ship/artifacts.py) and its model card (lib/ship/card.py): front matter,
lineage from the records, quality in words from notes/SCHEMA's fields, and the card's example run torch-free."""
import json
import re
import subprocess
import sys

import pytest
import yaml

from lib.core.variants import Variant
from lib.ship import card
from tests import tiny_model
from tests.tiny_model import info, schema_row


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    return tiny_model.build(tmp_path_factory.mktemp("tiny"))


def chain() -> list[Variant]:
    teacher = Variant("teacher", "hf", "t", "ProsusAI/finbert", ("finetune",), "01_data_teacher")
    student = teacher.derive("student_kd", "hf", "s", "student_kd", "02_distillation")
    pruned = student.derive("student_kd_p30", "pruned", "p", "prune", "04_pruning")
    return [teacher, student, pruned, pruned.derive("shipped", "onnx", "o", ("vocab_trim", "onnx_export", "onnx_int8"),
                                                    "05_benchmark", "int8")]


def render(row, teacher=None) -> str:
    teacher = teacher or schema_row("teacher", {"val": 0.86, "test": 0.85})
    return card.model_card(row, teacher, chain(), info(), "the fastest variant that meets every goal", 128, 33)


def front(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def test_front_matter_and_lineage_come_from_the_records_and_rows():
    row = schema_row("shipped", {"val": 0.8412, "test": 0.8307}, {"val": (-1.1, -2.6, 0.5), "test": (-3.0, -4.9, -1.1)})
    text = render(row)
    meta = front(text)
    assert meta["license"] == "cc-by-nc-sa-3.0" and meta["language"] == ["en"]
    assert meta["pipeline_tag"] == "text-classification" and meta["base_model"] == "ProsusAI/finbert"
    assert {"pruning", "vocabulary-trimming", "int8", "onnx"} <= set(meta["tags"]) and meta["datasets"]
    results = meta["model-index"][0]["results"]
    assert [(r["dataset"]["split"], r["metrics"][0]["value"]) for r in results] == [("validation", 0.8412), ("test", 0.8307)]
    steps = re.findall(r"^\d+\. `([^`]+)`", text, flags=re.M)
    assert steps == ["ProsusAI/finbert", "teacher", "student_kd", "student_kd_p30", "shipped"]
    assert "vocabulary cut to the tokens" in text and "heads and FFN neurons removed" in text
    # val's CI contains 0, test's lies below it: said in words, per set
    assert "On the validation set it is indistinguishable from the teacher" in text
    assert "On the test set it is worse than the teacher" in text
    assert "Holm-adjusted over the 33 variants compared with the teacher, alpha 0.05" in text  # the rule, its family
    assert "| 0.001; 0.001 | 0.001 | worse than the teacher |" in text  # bootstrap p; Holm p; McNemar p; the word
    assert "-3.00 (-4.90 to -1.10)" in text and "Test CPU 9000" in text and "9.5x faster" in text


def test_the_lineage_says_which_training_seed_ships_and_why():
    """Issue 31: a trained step names its exported seed, the median on val of its seeds, with their spread."""
    runs = [{"seed": s, "val_macro_f1": f, "test_macro_f1": 0.8} for s, f in ((42, 0.85), (43, 0.87), (44, 0.86))]
    steps = chain()
    steps[1] = steps[1].with_metrics(seed=44, seed_runs=runs)
    steps[2] = steps[2].with_metrics(seed=42, seed_runs=runs[:1])
    text = card.lineage(steps)
    assert ("`student_kd`, from `teacher` by stage 02_distillation: technique `student_kd` (hf, fp32); training seed 44, "
            "the median on val of 3 seeds (val macro-F1 over the seeds 0.8600 ± 0.0100 (0.8500-0.8700))") in text
    assert "training seed 42 (one seed: no training variance measured)" in text
    assert text.count("training seed") == 2  # the teacher and the shipped export trained nothing here
    # a stacked recipe lists each seed's model (paths, no figures): stage 05 scored them
    steps[-1] = steps[-1].with_metrics(seed=43, seed_runs=[{"seed": 43, "path": "a"}, {"seed": 42, "path": "b"}])
    assert "made from training seed 43's model, one of 2 built the same way (stage 05's F1 goals read their mean)" in \
        card.lineage(steps)


def test_out_of_domain_is_not_evaluated_until_the_rows_carry_it():
    row = schema_row("shipped", {"val": 0.84, "test": 0.83})
    assert "was **not evaluated**" in render(row)
    ood = schema_row("shipped", {"val": 0.84, "test": 0.83, "ood_val": 0.71, "ood_test": 0.695})
    text = render(ood, schema_row("teacher", {"val": 0.86, "test": 0.85, "ood_val": 0.74, "ood_test": 0.72}))
    assert "not evaluated" not in text
    assert "out-of-domain test macro-F1 0.6950 against 0.8300 in-domain test, a gap of 13.5 points" in text
    assert [r["dataset"]["split"] for r in front(text)["model-index"][0]["results"]] == ["validation", "test"]


def test_a_row_without_scored_sets_reports_no_figures():
    text = render(schema_row("shipped", {}))
    assert "reports no quality figures" in text and "model-index" in text


def test_exported_folder_is_recognised_by_transformers(artifact):
    from transformers import AutoConfig, AutoTokenizer
    config = AutoConfig.from_pretrained(artifact)
    assert config.model_type == "bert" and config.num_labels == 3 and config.max_seq_length == 128
    assert config.id2label == {0: "negative", 1: "neutral", 2: "positive"}
    assert AutoTokenizer.from_pretrained(artifact).model_max_length == 128
    saved = json.loads((artifact / "tokenizer.json").read_text())
    assert saved["truncation"] is None and saved["padding"]["strategy"] == "BatchLongest"  # one rule: reject, never cut
    assert "max_length" not in json.loads((artifact / "tokenizer_config.json").read_text())
    assert not (artifact / "MODEL_CARD.md").exists() and front((artifact / "README.md").read_text())["license"]


def example_of(card_text: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", card_text, flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_card_example_runs_without_torch_transformers_or_this_repo(artifact, tmp_path):
    """The card's own text, run where importing torch, transformers or lib raises; its labels are predict's."""
    code = example_of((artifact / "README.md").read_text())
    assert len(code.strip().splitlines()) <= 20
    script = tmp_path / "example.py"
    script.write_text(code)
    env = tiny_model.blocked_env(tmp_path, "torch,transformers,lib")
    proc = subprocess.run([sys.executable, str(script)], cwd=artifact.parent.parent, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = [line.split("\t") for line in proc.stdout.splitlines()]
    check = subprocess.run([sys.executable, "-c", "import torch"], env=env, capture_output=True, text=True)
    assert "blocked in this test" in check.stderr  # the blocker really blocks
    ref = tiny_model.predict("--model", artifact, "--json", *[text for _, _, text in out])
    assert ref.returncode == 0, ref.stderr
    rows = [json.loads(line) for line in ref.stdout.splitlines()]
    assert [(label, text) for label, _, text in out] == [(r["label"], r["text"]) for r in rows]
    assert [float(p) for _, p, _ in out] == pytest.approx([r[f"p_{r['label']}"] for r in rows], abs=2e-4)
    assert len({label for label, _, _ in out}) > 1  # the tiny model's labels differ, so agreement means something


def test_a_position_trimmed_model_ships_with_its_own_position_count(tmp_path):
    # The lineage's checkpoint reads 512 positions, the trimmed ONNX only 16: config.json must say 16, so that
    # predict refuses a --max-length the graph cannot read instead of failing inside ONNX Runtime.
    import pandas as pd

    from lib.ship.artifacts import ship_recommended
    from lib.techniques import vocab
    from lib.techniques.onnx_export import save_onnx_fp32, save_onnx_int8
    model, tokenizer = tiny_model.tiny_classifier()
    model.save_pretrained(tmp_path / "teacher")
    vocab.trim_positions(model, 16)
    fp32_dir, _ = save_onnx_fp32("t", model, tokenizer, tiny_model.TEXTS, tmp_path / "stacked", 1e-3)
    int8_dir = save_onnx_int8("t", fp32_dir, tokenizer, tmp_path / "stacked", [])
    teacher = Variant("teacher", "hf", "teacher", "x", ("finetune",), "01_data_teacher")
    shipped = teacher.derive("t_vocab_onnx_int8", "onnx", str(int8_dir.relative_to(tmp_path)),
                             ("vocab_trim", "onnx_export", "onnx_int8"), "05_benchmark", "int8")
    df = pd.DataFrame([schema_row("teacher", {"val": 0.85, "test": 0.84}, format="hf", precision="fp32"),
                       schema_row(shipped.name, {"val": 0.84, "test": 0.83},
                                  {"val": (-1.0, -2.5, 0.4), "test": (-1.2, -2.8, 0.3)})])
    out = ship_recommended(df.iloc[1], df, [teacher, shipped], {"root": tmp_path}, info(), "the test's choice", 16)
    assert json.loads((tmp_path / "teacher" / "config.json").read_text())["max_position_embeddings"] > 16
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == 16
    run = tiny_model.predict("--model", out, "--max-length", "32", "Profit rose")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "16 positions" in run.stderr
