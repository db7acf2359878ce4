"""lib.predict and lib.predict.serving run in this process: what test_predict.py checks through a subprocess, here where
mutation testing can see which code each test runs, with probabilities checked against ONNX Runtime run directly."""
import io
import json
import sys

import numpy as np
import pytest

from lib.core import cli
from lib.predict import command, serving
from tests import tiny_model
from tests.test_predict import ODD, failure_inputs, write_csv

TEXTS = ["Operating profit rose to EUR 13.1 mn from EUR 8.7 mn", "Sales fell", "Shares jumped 12% after the report"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def run(monkeypatch, capsys):
    """predict's CLI in this process: (exit code, stdout, stderr); stdin is the bytes given (empty by default)."""
    def call(*args, stdin: bytes = b""):
        monkeypatch.setenv("RAYON_NUM_THREADS", "1")  # main() sets it; monkeypatch puts it back
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        with pytest.raises(SystemExit) as e:
            cli.run_cli(lambda: command.main([str(a) for a in args]), "predict")
        out, err = capsys.readouterr()
        return e.value.code, out, err
    return call


def direct_probs(model, texts) -> np.ndarray:
    """Each text alone, unpadded, through an ONNX Runtime session and the model's tokenizer.json: no lib code."""
    import onnxruntime
    from tokenizers import Tokenizer
    session, tok = onnxruntime.InferenceSession(str(model / "model.onnx")), Tokenizer.from_file(str(model / "tokenizer.json"))
    out = []
    for t in texts:
        e = tok.encode(t)
        feeds = {"input_ids": [e.ids], "attention_mask": [e.attention_mask], "token_type_ids": [e.type_ids]}
        logits = session.run(None, {k: np.asarray(v, dtype=np.int64) for k, v in feeds.items()})[0][0]
        out.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    return np.array(out)


def json_rows(result) -> list[dict]:
    code, out, err = result
    assert code == 0, err
    return [json.loads(line) for line in out.splitlines()]


def test_probabilities_and_labels_are_the_models(model, run):
    rows = json_rows(run("--model", model, "--json", "--batch-size", "1", *TEXTS))
    expected = direct_probs(model, TEXTS)
    labels = ["negative", "neutral", "positive"]
    for n, (row, p) in enumerate(zip(rows, expected), 1):
        assert row["row"] == n and row["text"] == TEXTS[n - 1] and row["label"] == labels[int(p.argmax())]
        assert [row[f"p_{l}"] for l in labels] == pytest.approx(p.tolist(), abs=1e-4)
    assert len({r["label"] for r in rows}) > 1  # the tiny model's labels differ, so the check means something
    code, out, _ = run("--model", model, "--batch-size", "1", *TEXTS)
    head, *table = out.splitlines()
    assert code == 0 and head == "label\tp_negative\tp_neutral\tp_positive\ttext"
    assert [line.split("\t") for line in table] == [
        [r["label"], *(str(r[f"p_{l}"]) for l in labels), r["text"]] for r in rows]


def test_batches_sorted_by_length_answer_in_input_order(model, run):
    """The FP32 checkpoint (dynamic INT8 scales per batch, so its answers move with the batching): padded batches
    of sentences sorted by length give each sentence the answer it gets alone, in input order."""
    texts = TEXTS * 3 + ["Up"]
    fp32 = model.parent.parent / "checkpoints" / "teacher"
    one = json_rows(run("--model", fp32, "--json", "--batch-size", "1", *texts))
    four = json_rows(run("--model", fp32, "--json", "--batch-size", "4", *texts))
    assert [r["text"] for r in four] == texts and [r["row"] for r in four] == list(range(1, len(texts) + 1))
    for a, b in zip(one, four):
        assert [a[f"p_{l}"] for l in ("negative", "neutral", "positive")] == pytest.approx(
            [b[f"p_{l}"] for l in ("negative", "neutral", "positive")], abs=2e-4)
    assert len({r["p_positive"] for r in one}) > 2  # the sentences' answers differ, so order is visible


def test_lines_from_stdin_keep_their_numbers(model, run):
    rows = json_rows(run("--model", model, "--json", stdin="Profit rose\n\nSales fell\r\nA\u2028B\n".encode()))
    assert [(r["row"], r["text"]) for r in rows] == [(1, "Profit rose"), (3, "Sales fell"), (4, "A\u2028B")]
    code, out, err = run("--model", model, "--json", stdin=b"ok\n\xff\n")
    assert code == 2 and out == "" and err == "predict: error: stdin is not UTF-8 (byte 0xff on line 2); send UTF-8 text\n"


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_csv_cells_come_back_whole_and_escaped_in_the_table(model, run, tmp_path, source):
    path = write_csv(tmp_path / "in.csv", ODD)
    args, stdin = (["--csv", path], b"") if source == "file" else (["--csv", "-"], path.read_bytes())
    rows = json_rows(run("--model", model, "--json", *args, stdin=stdin))
    assert [(r["row"], r["text"]) for r in rows] == list(enumerate(ODD, 1))
    code, out, _ = run("--model", model, *args, stdin=stdin)
    assert code == 0 and [line.split("\t")[-1] for line in out.split("\n")[1:-1]] == [
        "tab\\there", "quoted\\nnewline", "line\\u2028separator", "next\\u0085line", "nul\\0byte", 'say "hi", then, go']


def test_a_short_csv_record_reads_as_an_empty_cell(model, run, tmp_path):
    (tmp_path / "short.csv").write_text("id,text\n1,Profit rose\n2\n")
    code, out, err = run("--model", model, "--csv", tmp_path / "short.csv")
    assert code == 2 and out == "" and "row 2 is empty" in err


def test_each_chunk_is_answered_before_the_next_is_read(model, run, monkeypatch):
    monkeypatch.setattr(command, "CHUNK_ROWS", 2)
    rows = json_rows(run("--model", model, "--json", *TEXTS, "Up", "Down"))
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5]
    code, out, _ = run("--model", model, *TEXTS, "Up", " ")  # the bad row is in the third chunk
    assert code == 2 and out.count("\n") == 5 and out.startswith("label\t")  # header once, chunks 1 and 2 complete


@pytest.fixture(scope="module")
def failures(model, tmp_path_factory):
    return failure_inputs(model, tmp_path_factory.mktemp("bad"))


@pytest.mark.parametrize("case", ["damaged_onnx", "damaged_onnx_with_manifest", "truncated_safetensors",
                                  "max_length_above_positions", "max_length_below_1", "big_cell", "header_only",
                                  "empty_file", "other_column", "empty_cell", "latin1", "no_csv", "no_model",
                                  "not_a_model", "empty_text", "long_text", "args_and_csv", "batch_size"])
def test_bad_input_is_one_line_exit_2_and_no_output(failures, run, case):
    args, needle = failures[case]
    code, out, err = run(*args)
    assert code == 2 and out == "" and err.startswith("predict: error:") and err.count("\n") == 1, err
    assert needle in err


def test_no_input_at_all_is_one_line(model, run):
    code, out, err = run("--model", model)
    assert (code, out) == (2, "") and err == "predict: error: stdin has no lines to classify\n"


def test_truncate_cuts_at_the_max_length_asked_for(failures, model, run):
    rows = json_rows(run("--model", model, "--json", "--truncate", "--max-length", "16", "profit " * 40))
    assert rows[0]["row"] == 1 and rows[0]["text"] == "profit " * 40
    code, _, err = run("--model", model, "--max-length", "16", "profit " * 40)
    assert code == 2 and "text 1 is 42 tokens, longer than the 16 the model reads" in err
    assert json_rows(run("--model", model, "--json", "--max-length", "3", "up"))[0]["text"] == "up"  # [CLS] up [SEP]


def test_csv_with_a_bom_and_crlf_inside_a_cell(model, run, tmp_path):
    data = '\ufefftext,id\r\n"line one\r\nline two",1\r\nProfit rose,2\r\n'.encode()
    (tmp_path / "bom.csv").write_bytes(data)
    for args, stdin in ((["--csv", tmp_path / "bom.csv"], b""), (["--csv", "-"], data)):
        rows = json_rows(run("--model", model, "--json", *args, stdin=stdin))
        assert [r["text"] for r in rows] == ["line one\r\nline two", "Profit rose"]
    code, _, err = run("--model", model, "--csv", "-", "--column", "body", stdin=data)
    assert code == 2 and err == "predict: error: stdin has no column 'body' (found: text, id); pass --column NAME\n"


def test_bad_bytes_and_broken_csv_name_where(model, run, tmp_path, monkeypatch):
    import csv
    data = "text\nCaf\xe9 sales rose\n".encode("latin-1")
    (tmp_path / "l1.csv").write_bytes(data)
    code, _, err = run("--model", model, "--csv", "-", stdin=data)
    assert code == 2 and err == "predict: error: stdin is not UTF-8; re-save it as UTF-8\n"
    code, _, err = run("--model", model, "--csv", tmp_path / "l1.csv")
    assert err == f"predict: error: {tmp_path / 'l1.csv'} is not UTF-8 (byte 0xe9 at offset 8, line 2); re-save it as UTF-8\n"
    limit = csv.field_size_limit()
    monkeypatch.setattr(serving, "CSV_CELL_LIMIT", 10)
    try:
        code, _, err = run("--model", model, "--csv", "-", stdin=b"text\nmore than ten characters\n")
    finally:
        csv.field_size_limit(limit)
    assert code == 2 and err == "predict: error: stdin line 2: field larger than field limit (10); fix the CSV quoting\n"


def test_stdin_lines_keep_their_spaces_and_lose_only_the_line_end(model, run):
    rows = json_rows(run("--model", model, "--json", stdin="\ufeffProfit X  \nSales fell\rUp X\n".encode()))
    assert [r["text"] for r in rows] == ["Profit X  ", "Sales fell", "Up X"]
    code, out, err = run("--model", model, stdin=b"Profit\r\xff early\n")  # \r ends a line too
    assert (code, out) == (2, "") and err == "predict: error: stdin is not UTF-8 (byte 0xff on line 2); send UTF-8 text\n"


def test_help_names_the_command_and_every_option(run, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    code, out, _ = run("--help")
    assert code == 0 and out.startswith("usage: python -m lib.predict [-h] [--csv CSV]")
    assert '\n    python -m lib.predict "Operating profit rose 20%" "Sales fell"\n' in out  # the docstring, as written
    words = " ".join(out.split())
    for option, says in [("texts", "sentences to classify (else --csv, else piped stdin, one per line)"),
                         ("--csv CSV", "a UTF-8 CSV file with a header row, or - for a CSV on stdin"),
                         ("--column COLUMN", "CSV column holding the sentences (default: text)"),
                         ("--model MODEL", "model folder or .onnx file (default: artifacts/model)"),
                         ("--max-length MAX_LENGTH", "tokens the model reads (default: the model's, else 128)"),
                         ("--truncate", "cut texts longer than --max-length instead of failing"),
                         ("--json", "one JSON object per line, with the input row number"),
                         ("--batch-size BATCH_SIZE", "sentences per model call (default: 32)"),
                         ("--threads THREADS", "CPU threads for the model and the tokenizer (default: 2, or for the "
                                               "model what its serving.json says)")]:
        assert f"{option} {says}" in words, option


def test_without_model_the_shipped_one_is_read_and_stdin_is_named(model, run, tmp_path, monkeypatch):
    # Not the checkout's artifacts/model: a `make run` before `make test` writes one there (issue 33 item 2).
    monkeypatch.setattr(command, "DEFAULT_MODEL", tmp_path / "artifacts" / "model")
    code, _, err = run("x")
    assert code == 2 and err == (f"predict: error: model {tmp_path / 'artifacts' / 'model'} does not exist; run "
                                 "`python run_all.py` (it exports artifacts/model) or pass --model PATH\n")
    import shutil
    shutil.copytree(model, tmp_path / "artifacts" / "model")
    assert [r["text"] for r in json_rows(run("--json", "x"))] == ["x"]
    code, out, err = run("--model", "unused", "--csv", "-", stdin=b"text\n")
    assert (code, out) == (2, "") and err == "predict: error: stdin has no rows to classify (only a header)\n"
    (tmp_path / "h.csv").write_text("text\n")
    code, out, err = run("--model", "unused", "--csv", tmp_path / "h.csv")
    assert err == f"predict: error: {tmp_path / 'h.csv'} has no rows to classify (only a header)\n"
    code, _, err = run("--model", "unused", "--csv", "-", "x")
    assert err == "predict: error: pass sentences as arguments or with --csv, not both\n"


def test_threads_and_lengths_at_their_limits(model, run, monkeypatch):
    import os
    real, threads = serving.load, []
    monkeypatch.setattr(serving, "load", lambda path, n=2: threads.append(n) or real(path, n))
    rows = json_rows(run("--model", model, "--json", "--threads", "1", "--max-length", "512", TEXTS[0]))
    assert threads == [1] and os.environ["RAYON_NUM_THREADS"] == "1"
    assert all(r[k] == round(r[k], 4) for r in rows for k in r if k.startswith("p_"))  # 4 decimals, no more
    json_rows(run("--model", model, "--json", "--threads", "3", "--max-length", "3", "up"))
    assert threads == [1, 3] and os.environ["RAYON_NUM_THREADS"] == "3"
    code, _, err = run("--model", model, "--max-length", "2", "up")
    assert code == 2 and "--max-length 2 leaves no room for text after the model's special tokens; pass --max-length 3" in err
    code, _, err = run("--model", model, "--threads", "0", "up")
    assert err == "predict: error: parameter --threads=0 is out of range: it must be in [1, 256]; pass a value inside it\n"


@pytest.mark.parametrize("stdin", [None, "tty"])
def test_a_terminal_or_no_stdin_is_nothing_to_classify(model, capsys, monkeypatch, stdin):
    class Terminal(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr(sys, "stdin", None if stdin is None else Terminal())
    with pytest.raises(SystemExit) as e:
        cli.run_cli(lambda: command.main(["--model", str(model)]), "predict")
    assert e.value.code == 2 and capsys.readouterr().err == (
        "predict: error: nothing to classify; pass sentences as arguments, --csv FILE, or pipe one per line\n")


def test_defaults_are_32_sentences_a_batch_on_2_threads(model, run, monkeypatch):
    import os

    from lib.runtime import onnxrt
    real_session, real_classify, seen = onnxrt.session, serving.classify, []
    monkeypatch.setattr(onnxrt, "session", lambda path, threads=2, settings=None: seen.append(
        ("threads", settings.threads)) or real_session(path, threads, settings))
    monkeypatch.setattr(serving, "classify", lambda m, e, b: seen.append(("batch", b)) or real_classify(m, e, b))
    json_rows(run("--model", model, "--json", "Up"))  # a folder without serving.json
    assert seen == [("threads", 2), ("batch", 32)] and os.environ["RAYON_NUM_THREADS"] == "2"
