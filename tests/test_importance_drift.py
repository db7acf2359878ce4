"""scripts/importance_drift.py: what stage 04 would prune differently from two trainings of one model."""
import subprocess
import sys

import pandas as pd
import torch

from tests.conftest import REPO
from tests.tiny_model import TEXTS, tiny_classifier


def script(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "importance_drift.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_same_weights_drift_nothing_and_nudged_weights_switch_units(tmp_path):
    model, tokenizer = tiny_classifier()
    data = tmp_path / "data"
    data.mkdir()
    rows = pd.DataFrame({"text": TEXTS * 12, "label": [i % 3 for i in range(len(TEXTS) * 12)]})
    for split in ("train", "val", "test"):
        rows.to_csv(data / f"{split}.csv", index=False)
    for name, scale in (("a", 0.0), ("b", 0.0), ("c", 0.05)):
        torch.manual_seed(1)
        with torch.no_grad():  # c: every weight moved by up to 5% (a retraining's drift, much magnified)
            for p in model.parameters():
                p.mul_(1 + scale * (2 * torch.rand_like(p) - 1)) if scale else None
        model.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    same = script(tmp_path / "a", tmp_path / "b", "--data-dir", data, "--batches", 2)
    assert same.returncode == 0, same.stderr
    lines = same.stdout.splitlines()
    assert lines[0] == "largest relative difference of the importance scores: 0.0e+00"
    assert lines[1:] == ["30%: 0 of 1 heads removed switch sides, 0 of 38 neurons removed switch sides",
                         "50%: 0 of 2 heads removed switch sides, 0 of 64 neurons removed switch sides"]
    nudged = script(tmp_path / "a", tmp_path / "c", "--data-dir", data, "--batches", 2, "--levels", "0.5")
    assert nudged.returncode == 0, nudged.stderr
    rel, level = nudged.stdout.splitlines()
    assert float(rel.rsplit(" ", 1)[1]) > 1e-3 and level.startswith("50%: ")
    assert int(level.split(" of 64 neurons")[0].rsplit(", ", 1)[1]) > 0  # some neuron changes sides


def test_a_folder_without_a_model_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "data").mkdir()
    for split in ("train", "val", "test"):
        pd.DataFrame({"text": ["x"], "label": [0]}).to_csv(tmp_path / "data" / f"{split}.csv", index=False)
    proc = script(tmp_path, tmp_path, "--data-dir", tmp_path / "data")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "is not a model directory" in proc.stderr
    proc = script(tmp_path, tmp_path, "--data-dir", tmp_path / "data", "--levels", "1.5")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "levels" in proc.stderr
