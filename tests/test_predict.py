"""python -m lib.predict on a tiny exported model: every input source, one output row per input row, streaming in
bounded memory, no torch for ONNX, and every failure as one line on stderr with nothing on stdout."""
import json
import shlex
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from lib.predict import command as predict_module
from tests import tiny_model
from tests.conftest import REPO
from tests.tiny_model import predict

ODD = ["tab\there", "quoted\nnewline", "line\u2028separator", "next\x85line", "nul\x00byte", 'say "hi", then, go']


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model.build(tmp_path_factory.mktemp("tiny"))


def json_rows(proc) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def write_csv(path, texts, column="text"):
    import csv
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", column])
        w.writerows([i, t] for i, t in enumerate(texts))
    return path


def test_arguments_give_a_table_and_json_lines_with_row_numbers(model):
    proc = predict("--model", model, "Operating profit rose", "Sales fell")
    assert proc.returncode == 0, proc.stderr
    head, *rows = proc.stdout.splitlines()
    assert head.split("\t") == ["label", "p_negative", "p_neutral", "p_positive", "text"]
    assert [r.split("\t")[-1] for r in rows] == ["Operating profit rose", "Sales fell"]
    rows = json_rows(predict("--model", model, "--json", "Operating profit rose", "Sales fell"))
    assert [r["row"] for r in rows] == [1, 2]
    assert all(sum(r[f"p_{l}"] for l in ("negative", "neutral", "positive")) == pytest.approx(1, abs=1e-3) for r in rows)


def test_piped_stdin_is_one_sentence_per_line(model):
    rows = json_rows(predict("--model", model, "--json", stdin="Profit rose\n\nSales fell\r\nA\u2028B\n"))
    assert [(r["row"], r["text"]) for r in rows] == [(1, "Profit rose"), (3, "Sales fell"), (4, "A\u2028B")]


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_csv_keeps_one_output_row_per_input_row_whatever_the_cell_holds(model, tmp_path, source):
    path = write_csv(tmp_path / "in.csv", ODD)
    args = ["--csv", path] if source == "file" else ["--csv", "-"]
    stdin = path.read_bytes().decode("utf-8") if source == "stdin" else None
    rows = json_rows(predict("--model", model, "--json", *args, stdin=stdin))
    assert [(r["row"], r["text"]) for r in rows] == list(enumerate(ODD, 1))
    # the same labels as the texts given as arguments (which cannot hold NUL)
    plain = [t for t in ODD if "\0" not in t]
    assert [r["label"] for r in rows if "\0" not in r["text"]] == [
        r["label"] for r in json_rows(predict("--model", model, "--json", *plain))]


def test_table_escapes_tabs_and_line_breaks(model, tmp_path):
    proc = predict("--model", model, "--csv", write_csv(tmp_path / "in.csv", ODD))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")[:-1]
    assert len(lines) == len(ODD) + 1 and all(line.count("\t") == 4 for line in lines)
    assert [line.split("\t")[-1] for line in lines[1:]] == ["tab\\there", "quoted\\nnewline", "line\\u2028separator",
                                                            "next\\u0085line", "nul\\0byte", 'say "hi", then, go']


def test_script_path_runs_from_any_directory(model, tmp_path):
    rows = json_rows(predict("--model", model, "--json", "Profit rose", cwd=tmp_path, script=True))
    assert rows[0]["text"] == "Profit rose"


def test_onnx_model_never_imports_torch_or_transformers(model, tmp_path):
    env = tiny_model.blocked_env(tmp_path, "torch,transformers,onnx")  # requirements-serve.txt has none of them
    assert json_rows(predict("--model", model, "--json", "Profit rose", env=env))[0]["row"] == 1
    code = (f"import sys; from lib.predict import command; command.main(['--model', {str(model)!r}, 'Profit rose']); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnx')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "[]"


def test_pytorch_checkpoint_is_served_too(model):
    rows = json_rows(predict("--model", model.parent.parent / "checkpoints" / "teacher", "--json", "Profit rose"))
    assert rows[0]["label"] in ("negative", "neutral", "positive")


def test_output_streams_before_the_input_ends(model):
    """A pipeline reader gets the first chunk's answers while the writer is still sending."""
    proc = subprocess.Popen([sys.executable, "-m", "lib.predict", "--model", str(model), "--json"], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        proc.stdin.write("Profit rose\n" * predict_module.CHUNK_ROWS)
        proc.stdin.flush()
        first = []
        reader = threading.Thread(target=lambda: first.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(timeout=120)
        assert first and json.loads(first[0])["row"] == 1  # stdin is still open
    finally:
        out, _ = proc.communicate(timeout=120)  # closes stdin, drains the rest
    assert proc.returncode == 0 and json.loads(out.splitlines()[-1])["row"] == predict_module.CHUNK_ROWS


PEAK_RSS = """import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)"""


def peak_rss_mb(model, csv_path) -> float:
    cmd = [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "lib.predict", "--model", str(model), "--csv",
           str(csv_path), "--json"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return float(out.stdout)


def test_100k_row_csv_streams_in_bounded_memory(model, tmp_path):
    texts = [f"Quarterly sales of unit {i} rose {i % 97} percent to EUR {i % 13}.{i % 10} mn" for i in range(100_000)]
    small, big = write_csv(tmp_path / "small.csv", texts[:1000]), write_csv(tmp_path / "big.csv", texts)
    rss_small, rss_big = peak_rss_mb(model, small), peak_rss_mb(model, big)
    assert rss_big < rss_small + 40 and rss_big < 250, (rss_small, rss_big)  # reading it whole would add ~300 MB


def failure_inputs(model, tmp) -> dict:
    """Each bad input of issue 17 item 5 (and the older ones): name -> (arguments, what the one line must say)."""
    import shutil
    damaged = shutil.copytree(model, tmp / "damaged")
    (damaged / "model.onnx").write_bytes((model / "model.onnx").read_bytes()[:5000])
    truncated = shutil.copytree(model.parent.parent / "checkpoints" / "teacher", tmp / "truncated")
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:4000])
    # Without a manifest (a model from elsewhere) the loader itself fails; with one, the manifest names the damage.
    bare = shutil.copytree(damaged, tmp / "damaged_bare")
    for folder in (bare, truncated):
        (folder / "MANIFEST.json").unlink(missing_ok=True)
    files = {"header_only": "text\n", "empty_file": "", "big_cell": 'text\n"' + "profit " * 30_000 + '"\n',
             "other_column": "sentence\nProfit rose\n", "empty_cell": "text\nProfit rose\n\"\"\n"}
    for name, content in files.items():
        (tmp / f"{name}.csv").write_text(content, encoding="utf-8")
    (tmp / "latin1.csv").write_bytes("text\nCaf\xe9 sales rose\n".encode("latin-1"))
    m = ["--model", model]
    return {
        "damaged_onnx": (["--model", bare, "x"], "cannot load model"),
        "damaged_onnx_with_manifest": (["--model", damaged, "x"], "model.onnx is damaged (5,000 bytes"),
        "truncated_safetensors": (["--model", truncated, "x"], "cannot load model"),
        "max_length_above_positions": ([*m, "--max-length", "600", "x"], "more than the 512 positions"),
        "max_length_below_1": ([*m, "--max-length", "0", "x"], "no room for text"),
        "big_cell": ([*m, "--csv", tmp / "big_cell.csv"], "row 1 is 30002 tokens, longer than the 128"),
        "header_only": ([*m, "--csv", tmp / "header_only.csv"], "has no rows to classify"),
        "empty_file": ([*m, "--csv", tmp / "empty_file.csv"], "is empty"),
        "other_column": ([*m, "--csv", tmp / "other_column.csv"], "no column 'text' (found: sentence)"),
        "empty_cell": ([*m, "--csv", tmp / "empty_cell.csv"], "row 2 is empty"),
        "latin1": ([*m, "--csv", tmp / "latin1.csv"], "not UTF-8"),
        "no_csv": ([*m, "--csv", tmp / "none.csv"], "does not exist"),
        "no_model": (["--model", tmp / "none", "x"], "does not exist"),
        "not_a_model": (["--model", tmp, "x"], "is not a model"),
        "empty_text": ([*m, "  "], "text 1 is empty"),
        "long_text": ([*m, "profit " * 300], "--truncate"),
        "args_and_csv": ([*m, "--csv", tmp / "header_only.csv", "x"], "not both"),
        "batch_size": ([*m, "--batch-size", "0", "x"], "--batch-size=0 is out of range"),
    }


@pytest.fixture(scope="module")
def failures(model, tmp_path_factory):
    return failure_inputs(model, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", ["damaged_onnx", "damaged_onnx_with_manifest", "truncated_safetensors", "max_length_above_positions",
                                  "max_length_below_1", "big_cell", "header_only", "empty_file", "other_column",
                                  "empty_cell", "latin1", "no_csv", "no_model", "not_a_model", "empty_text",
                                  "long_text", "args_and_csv", "batch_size"])
def test_bad_input_is_one_line_exit_2_and_no_output(failures, case):
    args, needle = failures[case]
    proc = predict(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("predict: error:") and proc.stderr.count("\n") == 1, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr and proc.stdout == ""


def test_oversized_cell_is_read_and_truncated_on_request(failures, model):
    rows = json_rows(predict("--model", model, "--json", "--truncate", "--csv", failures["big_cell"][0][-1]))
    assert len(rows) == 1 and rows[0]["row"] == 1 and len(rows[0]["text"]) > 128 * 1024


def test_predict_normalizes_raw_input_in_the_exported_mode(model, tmp_path):
    """config.json's text_normalization is applied before tokenizing; the output echoes the raw text."""
    import shutil
    from lib.core.manifest import write_manifest
    raw, normalized = "Profit rose https://t.co/Ab12 says @analyst", "Profit rose http says @user"
    folder = shutil.copytree(model, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    assert config["fincompress"]["text_normalization"] == "none"  # export records the mode stage 01 used

    def probs(*texts):
        return [tuple(r[f"p_{l}"] for l in ("negative", "neutral", "positive"))
                for r in json_rows(predict("--model", folder, "--json", *texts))]

    plain_raw, plain_norm = probs(raw), probs(normalized)
    assert plain_raw != plain_norm  # the guard: this model tells the two texts apart
    config["fincompress"]["text_normalization"] = "placeholders"
    (folder / "config.json").write_text(json.dumps(config))
    write_manifest(folder)  # as an export in that mode would have written it
    rows = json_rows(predict("--model", folder, "--json", raw, normalized))
    assert [r["text"] for r in rows] == [raw, normalized] and probs(raw) == plain_norm


@pytest.mark.parametrize("redirect, code, says", [
    (">/dev/full", 2, "predict: error: cannot write to stdout (No space left on device); free space where it goes, or "
                      "send it elsewhere\n"),
    (">&-", 2, "predict: error: stdout is closed; send the output to a file or a pipe (> labels.txt)\n"),
    ("| head -1 >/dev/null", 0, "")])
def test_a_full_closed_or_early_closed_stdout(model, redirect, code, says):
    """Real descriptors: the exit flush of what is still buffered must not add a traceback or change the code."""
    if redirect.startswith(">/dev/full") and not Path("/dev/full").exists():
        pytest.skip("no /dev/full here")
    cmd = (f"yes 'Sales rose' | head -5000 | {shlex.quote(sys.executable)} -m lib.predict --model "
           f"{shlex.quote(str(model))} {redirect}; echo \"rc=${{PIPESTATUS[2]}}\" >&2")
    proc = subprocess.run(["bash", "-c", cmd], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.stderr == f"{says}rc={code}\n"
