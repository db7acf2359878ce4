"""python -m lib.predict: real files, every model format, and bad input as one-line errors."""
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def predict(*args):
    return subprocess.run([sys.executable, "-m", "lib.predict", *map(str, args)], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_texts_and_csv_with_exported_model(smoke_run, tmp_path):
    model = smoke_run / "artifacts" / "model"
    csv = tmp_path / "in.csv"
    csv.write_text('text,id\n"Operating profit rose to EUR 13.1 mn",1\nSales fell sharply,2\n', encoding="utf-8")
    proc = predict("--model", model, "--csv", csv, "--json", "Net loss widened")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(l) for l in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["Net loss widened", "Operating profit rose to EUR 13.1 mn", "Sales fell sharply"]
    for r in rows:
        assert r["label"] in ("negative", "neutral", "positive")
        assert sum(r[f"p_{l}"] for l in ("negative", "neutral", "positive")) == pytest.approx(1, abs=1e-3)


def test_pytorch_checkpoint_gives_a_table(smoke_run):
    proc = predict("--model", smoke_run / "checkpoints" / "teacher", "Profit rose")
    assert proc.returncode == 0, proc.stderr
    head, row = proc.stdout.splitlines()
    assert head.split("\t") == ["label", "p_negative", "p_neutral", "p_positive", "text"]
    assert row.endswith("\tProfit rose")


@pytest.mark.parametrize("case,needle", [("empty", "is empty"), ("long", "--truncate"), ("latin1", "not UTF-8"),
                                         ("nomodel", "does not exist"), ("column", "no column"),
                                         ("notmodel", "is not a model")])
def test_bad_input_is_one_clear_line(smoke_run, tmp_path, case, needle):
    model = smoke_run / "checkpoints" / "teacher"
    bad = tmp_path / "bad.csv"
    bad.write_bytes("text\nCaf\xe9 sales rose\n".encode("latin-1"))
    args = {"empty": ["--model", model, "  "], "long": ["--model", model, "profit " * 300],
            "latin1": ["--model", model, "--csv", bad], "nomodel": ["--model", tmp_path / "none", "x"],
            "column": ["--model", model, "--csv", bad, "--column", "sentence"],
            "notmodel": ["--model", tmp_path, "x"]}[case]
    if case == "column":
        bad.write_text("text\nok\n", encoding="utf-8")
    proc = predict(*args)
    assert proc.returncode == 2
    assert proc.stderr.startswith("predict: error:") and proc.stderr.count("\n") == 1 and needle in proc.stderr


def test_truncate_flag_accepts_long_text(smoke_run):
    proc = predict("--model", smoke_run / "checkpoints" / "teacher", "--truncate", "profit " * 300)
    assert proc.returncode == 0, proc.stderr
