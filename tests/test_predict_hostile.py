"""predict against hostile input and untrusted model folders (issue 33 items 3, 4, 5 and 9), in this process so
mutation testing sees the code: each case is one line on stderr, exit 2, nothing on stdout."""
import argparse
import errno
import io
import json
import shutil
import sys

import pytest

from lib.core import cli, manifest
from lib.predict import command
from tests.test_predict_here import json_rows, model, run  # noqa: F401  (fixtures)


def one_line(result, says: str) -> None:
    code, out, err = result
    assert (code, out) == (2, "") and err == f"predict: error: {says}\n"


@pytest.mark.parametrize("option, bad, limit", [("--threads", 0, "in [1, 256]"), ("--threads", 100_000, "in [1, 256]"),
                                                ("--batch-size", 0, "in [1, 256]"), ("--batch-size", 10**10, "in [1, 256]"),
                                                ("--max-length", 65_537, "<= 65536")])
def test_every_numeric_option_has_a_range(model, run, option, bad, limit):
    one_line(run("--model", model, option, bad, "Sales rose"),
             f"parameter {option}={bad} is out of range: it must be {limit}; pass a value inside it")


def test_the_ranges_reach_their_edges(model, run):
    command.check_limits(argparse.Namespace(threads=256, batch_size=256, max_length=2**16))
    command.check_limits(argparse.Namespace(threads=1, batch_size=1, max_length=None))
    assert json_rows(run("--model", model, "--json", "--threads", "256", "--batch-size", "256", "Up"))[0]["row"] == 1
    one_line(run("--model", model, "--max-length", "-1", "Up"), "--max-length -1 leaves no room for text after the "
             "model's special tokens; pass --max-length 3 or more")  # the model's own bounds still apply


def padded(folder, size: int):
    """`folder`'s model.onnx grown past `size` bytes with a doc_string (a valid ONNX field), its manifest rewritten."""
    n = size + 1
    length = bytearray()
    while True:  # protobuf varint
        length.append((n & 0x7F) | (0x80 if n >> 7 else 0))
        n >>= 7
        if not n:
            break
    with open(folder / "model.onnx", "ab") as f:
        f.write(b"\x32" + bytes(length) + b" " * (size + 1))  # field 6 (ModelProto.doc_string), length-delimited
    manifest.write_manifest(folder)
    return folder


def test_a_large_model_damaged_in_place_is_refused(model, run, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    big = padded(shutil.copytree(model, tmp_path / "big"), manifest.HASH_AT_LOAD)
    assert json_rows(run("--model", big, "--json", "Sales rose"))[0]["row"] == 1  # loads, and its digests are cached
    data = bytearray((big / "model.onnx").read_bytes())
    data[-100:] = b"x" * 100  # the same size, as a flipped byte would leave it
    (big / "model.onnx").write_bytes(data)
    one_line(run("--model", big, "Sales rose"), f"{big / 'model.onnx'} is damaged (its SHA-256 differs from its "
             "manifest's); save it again (no run_all stage wrote it)")


@pytest.mark.parametrize("source", ["file", "stdin"])
def test_a_quote_left_open_is_an_error_naming_its_row(model, run, tmp_path, source):
    data = b'id,text\n1,Sales rose\n2,"Profit fell\n3,Up\n4,Down\n5,Flat\n'
    (tmp_path / "q.csv").write_bytes(data)
    where = tmp_path / "q.csv" if source == "file" else "stdin"
    args = ["--csv", tmp_path / "q.csv" if source == "file" else "-"]
    one_line(run("--model", model, *args, stdin=data), f"{where} row 2 (from line 3) opens a quoted field that never "
             'closes; close the quote, or write a quote in a cell as ""')
    one_line(run("--model", model, "--csv", "-", stdin=b'"text\nUp\n'),
             'stdin header (from line 1) opens a quoted field that never closes; close the quote, or write a quote in a '
             'cell as ""')
    rows = json_rows(run("--model", model, "--json", "--csv", "-", stdin=b'text\n"say ""hi"", go"\nUp\n'))
    assert [r["text"] for r in rows] == ['say "hi", go', "Up"]  # quotes written as "" still read as one cell


def test_a_duplicated_column_name_is_an_error_naming_it(model, run):
    one_line(run("--model", model, "--csv", "-", stdin=b"text,id,text\nUp,1,Down\n"),
             "stdin has 2 columns named 'text' (columns 1 and 3); rename all but one")
    assert json_rows(run("--model", model, "--json", "--csv", "-", "--column", "t", stdin=b"id,id,t\n1,2,Up\n"))[0][
        "text"] == "Up"  # other names may repeat


def test_a_folder_or_a_device_is_not_a_csv_file(model, run, tmp_path):
    one_line(run("--model", model, "--csv", tmp_path), f"CSV file {tmp_path} is a folder; pass a CSV file, or --csv - "
             "for stdin")
    one_line(run("--model", model, "--csv", tmp_path / "none.csv"), f"CSV file {tmp_path / 'none.csv'} does not exist; "
             "pass a CSV file, or --csv - for stdin")


def test_a_bad_byte_on_stdin_is_named_by_its_line(model, run):
    lines = b"Profit rose\n" * 2000  # past the decoder's first block
    one_line(run("--model", model, stdin=lines + b"caf\xe9\n"), "stdin is not UTF-8 (byte 0xe9 on line 2001); send "
             "UTF-8 text")
    one_line(run("--model", model, stdin=b"\xff early\n"), "stdin is not UTF-8 (byte 0xff on line 1); send UTF-8 text")


def test_the_table_escapes_bidi_and_terminal_controls(model, run):
    texts = ["evil\u202etxt.exe", "esc\x1b[31mred", "rtl\u2067mark\u200f", "caf\u00e9 \u00a0ok"]
    code, out, _ = run("--model", model, *texts)
    assert code == 0 and [line.split("\t")[-1] for line in out.splitlines()[1:]] == [
        "evil\\u202etxt.exe", "esc\\u001b[31mred", "rtl\\u2067mark\\u200f", "caf\u00e9 \u00a0ok"]
    rows = json_rows(run("--model", model, "--json", *texts))
    assert [r["text"] for r in rows] == texts


def test_a_closed_or_full_stdout_is_one_line(model, run, monkeypatch, capsys):
    class Full(io.StringIO):  # no descriptor, as a replaced stdout has none
        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")

    for stdout, says in [(None, "stdout is closed; send the output to a file or a pipe (> labels.txt)"),
                         (Full(), "cannot write to stdout (No space left on device); free space where it goes, or "
                                  "send it elsewhere")]:
        monkeypatch.setattr(sys, "stdin", None)
        monkeypatch.setattr(sys, "stdout", stdout)
        with pytest.raises(SystemExit) as e:
            cli.run_cli(lambda: command.main(["--model", str(model), "Up"]), "predict")
        assert e.value.code == 2 and capsys.readouterr().err == f"predict: error: {says}\n"


@pytest.mark.parametrize("key, value, says", [
    ("max_seq_length", "128", 'max_seq_length is "128", expected a whole number of at least 1'),
    ("max_seq_length", 0, "max_seq_length is 0, expected a whole number of at least 1"),
    ("max_position_embeddings", True, "max_position_embeddings is true, expected a whole number of at least 1"),
    ("id2label", ["negative"], 'id2label is ["negative"], expected an object'),
    ("fincompress", {"text_normalization": 1}, "text_normalization is 1, expected a string")])
def test_a_config_field_of_the_wrong_type_is_named(model, run, tmp_path, key, value, says):
    folder = shutil.copytree(model, tmp_path / "m")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, key: value}))
    manifest.write_manifest(folder)
    one_line(run("--model", folder, "Up"), f"{folder / 'config.json'}: {says}; fix it or re-export the model")
