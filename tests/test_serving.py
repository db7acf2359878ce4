"""lib/predict/serving.py's parts on their own: padding, softmax, label names, the lengths a model
reads, where a bad byte is, errors of a failing batch, the CLI's exit codes, batching by length."""
import json

import numpy as np
import pytest

from lib.core import cli
from lib.predict import serving
from tests.test_predict_here import model  # noqa: F401  (a fixture)


def test_pad_right_pads_each_batch_to_its_longest(model):
    tok = serving.load(model).tokenizer
    encs = tok.encode_batch(["Sales fell", "Operating profit rose to EUR 13.1 mn"])
    batch = serving.pad(encs, pad_id=7)
    n0, n1 = len(encs[0].ids), len(encs[1].ids)
    assert set(batch) == {"input_ids", "attention_mask", "token_type_ids"} and batch["input_ids"].shape == (2, n1)
    assert all(v.dtype == np.int64 for v in batch.values())
    assert batch["input_ids"][0].tolist() == encs[0].ids + [7] * (n1 - n0) and batch["input_ids"][1].tolist() == encs[1].ids
    assert batch["attention_mask"].tolist() == [[1] * n0 + [0] * (n1 - n0), [1] * n1]
    assert batch["token_type_ids"].tolist() == [[0] * n1, [0] * n1]


def test_softmax_and_label_names():
    p = serving.softmax([[0.0, 0.0, np.log(2.0)], [1000.0, 0.0, 0.0]])
    assert p.dtype == np.float32 and np.allclose(p, [[0.25, 0.25, 0.5], [1.0, 0.0, 0.0]], atol=1e-7)
    names = {"id2label": {"0": "bearish", "1": "flat", "2": "bullish"}}
    assert serving.labels_of(names) == ["bearish", "flat", "bullish"]
    study = ["negative", "neutral", "positive"]
    assert serving.labels_of({"id2label": {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}}) == study
    assert serving.labels_of({"id2label": {"0": "a", "1": "b"}}) == study and serving.labels_of({}) == study


def test_the_model_reads_its_lengths_from_its_files(model, tmp_path):
    import shutil
    m = serving.load(model)
    assert (m.max_length, m.max_positions, m.labels) == (128, 512, ["negative", "neutral", "positive"])
    copy = shutil.copytree(model, tmp_path / "m")
    (copy / "MANIFEST.json").unlink()
    config = json.loads((copy / "config.json").read_text())
    for key in ("max_seq_length", "max_position_embeddings"):
        config.pop(key)
    (copy / "config.json").write_text(json.dumps(config))
    (copy / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 256}))
    m = serving.load(copy)
    assert (m.max_length, m.max_positions) == (serving.DEFAULT_MAX_LENGTH, 256)
    (copy / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 10**30}))  # transformers' "no limit"
    assert serving.load(copy).max_positions is None
    (copy / "config.json").write_text("{not json")
    with pytest.raises(serving.FinCompressError, match="config.json is not valid JSON .*; re-export the model"):
        serving.load(copy)


def test_a_bad_byte_is_located_by_offset_and_line(tmp_path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"text\nfine\ncaf\xe9\n")
    assert serving.bad_byte(path) == " (byte 0xe9 at offset 13, line 3)"
    path.write_bytes(b"all fine\n")
    assert serving.bad_byte(path) == ""


def test_a_failing_batch_names_the_model_and_the_shape(tmp_path):
    def broken(batch):
        raise RuntimeError("shape mismatch\nsecond line")
    call = serving.guarded(broken, tmp_path / "m")
    with pytest.raises(serving.FinCompressError, match=r"failed on a batch of shape \(2, 5\) \(RuntimeError: shape "
                                                       r"mismatch\); re-export it or pass another --model$"):
        call({"input_ids": np.zeros((2, 5))})
    assert cli.first_line(ValueError("")) == "" and cli.first_line(ValueError("x" * 200)) == "x" * 160


@pytest.mark.parametrize("error, code, says", [
    (KeyboardInterrupt(), 130, ""), (ValueError("boom\nmore"), 1, "predict: error: unexpected ValueError: boom (a bug"),
    (serving.FinCompressError("two\nlines"), 2, "predict: error: two lines\n")])
def test_run_cli_exit_codes(capsys, monkeypatch, error, code, says):
    monkeypatch.delenv("FINCOMPRESS_DEBUG", raising=False)

    def main():
        raise error
    with pytest.raises(SystemExit) as e:
        cli.run_cli(main, "predict")
    assert e.value.code == code and capsys.readouterr().err.startswith(says)
    monkeypatch.setenv("FINCOMPRESS_DEBUG", "1")
    if code == 1:
        with pytest.raises(ValueError):
            cli.run_cli(main, "predict")


@pytest.mark.parametrize("first_byte_of_block_2", [b"\n", b"\xa9"])
def test_a_bad_byte_past_the_first_block_is_located_exactly(tmp_path, first_byte_of_block_2):
    """bad_byte reads 1 MiB blocks: a line break, or the second byte of a character, may start the second one."""
    block = 1 << 20
    head = b"profit rose\n" * (block // 12)
    head += b"x" * (block - 1 - len(head)) + (b"\xc3" if first_byte_of_block_2 == b"\xa9" else b"y")
    data = head + first_byte_of_block_2 + b"sales\x00\nfell \xff here\n"  # a NUL byte is text to UTF-8
    (tmp_path / "big.csv").write_bytes(data)
    at = data.index(b"\xff")
    line = data[:at].count(b"\n") + 1
    assert serving.bad_byte(tmp_path / "big.csv") == f" (byte 0xff at offset {at}, line {line})"


def test_a_pytorch_model_pads_with_its_tokenizers_pad_id(model):
    m = serving.load(model.parent.parent / "checkpoints" / "teacher")
    assert m.pad_id == 0 and m.labels == ["negative", "neutral", "positive"]


def test_classify_batches_sentences_of_similar_length():
    from types import SimpleNamespace
    widths = []

    def run(batch):
        widths.append(batch["input_ids"].shape[1])
        first = batch["input_ids"][:, 0].astype(np.float32)  # logits that name the sentence: its first id
        return np.stack([first, np.zeros_like(first), np.zeros_like(first)], axis=1)
    encs = [SimpleNamespace(ids=[i] * n, type_ids=[0] * n) for i, n in enumerate([10, 3, 9, 4], 1)]
    probs = serving.classify(SimpleNamespace(run=run, pad_id=0, labels=["a", "b", "c"]), encs, batch_size=2)
    assert widths == [4, 10] and probs.dtype == np.float32  # 3 and 4 tokens together, then 9 and 10: not 10 and 3
    assert np.allclose(probs, serving.softmax([[i, 0, 0] for i in (1, 2, 3, 4)]))  # back in input order


def test_lengths_positions_and_errors_come_from_the_folder_of_an_onnx_file(model, tmp_path):
    import shutil
    m = serving.load(model / "model.onnx")  # a file: its folder holds config.json and the tokenizer
    assert (m.max_length, m.max_positions) == (128, 512)
    with pytest.raises(serving.FinCompressError, match=f"^model {model / 'model.onnx'} failed on a batch of shape "
                                                       r"\(1, 3\) \(\w+: .+\); re-export it or pass another --model$"):
        m.run({"input_ids": np.ones((1, 3), dtype=np.int64)})  # the other inputs are missing
    copy = shutil.copytree(model, tmp_path / "m")
    (copy / "MANIFEST.json").unlink()
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "max_seq_length": 64, "max_position_embeddings": None}))
    for limit in (10**6, 1_500_000, 20_000_000):  # transformers writes huge numbers for "no limit"
        (copy / "tokenizer_config.json").write_text(json.dumps({"model_max_length": limit}))
        assert (serving.load(copy).max_length, serving.load(copy).max_positions) == (64, None), limit
    (copy / "config.json").write_text("{not json")
    with pytest.raises(serving.FinCompressError, match=r"config.json is not valid JSON \(Expecting property name"):
        serving.load(copy)


def test_an_unloadable_model_names_the_error_type(model, tmp_path):
    import shutil
    bare = shutil.copytree(model, tmp_path / "bare")
    (bare / "MANIFEST.json").unlink()
    (bare / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(serving.FinCompressError, match=f"^cannot load model {bare} \\((?!NoneType)\\w+: (?!None\\))"
                                                       ".+\\); re-export it with run_all.py or pass another --model$"):
        serving.load(bare)
    with pytest.raises(serving.FinCompressError, match=f"^model {tmp_path / 'none'} does not exist; run `python "
                                                       "run_all.py` \\(it exports artifacts/model\\) or pass --model PATH$"):
        serving.load(tmp_path / "none")


def test_onnx_models_get_the_threads_asked_for_else_2(model, monkeypatch):
    from lib.runtime import onnxrt
    seen = []
    monkeypatch.setattr(onnxrt, "load_serving", lambda path, settings: seen.append(settings.threads) or (None, None, 0))
    serving.load(model)
    serving.load(model, 5)
    serving.load(model, settings=onnxrt.Settings(3))
    assert seen == [2, 5, 3]


def test_a_closed_pipe_downstream_is_not_an_error(monkeypatch):
    """`predict ... | head`: the reader left; stdout goes to /dev/null so Python's exit flush does not fail too."""
    calls = []
    monkeypatch.setattr(cli.os, "open", lambda path, flags: calls.append(("open", path, flags)) or 99)
    monkeypatch.setattr(cli.os, "dup2", lambda fd, fd2: calls.append(("dup2", fd, fd2)))
    monkeypatch.setattr(cli.sys, "stdout", type("Out", (), {"fileno": lambda self: 7})())

    def main():
        raise BrokenPipeError
    with pytest.raises(SystemExit) as e:
        cli.run_cli(main, "predict")
    assert e.value.code == 0 and calls == [("open", cli.os.devnull, cli.os.O_WRONLY), ("dup2", 99, 7)]


def test_an_unexpected_error_is_reported_as_a_bug_in_one_line(capsys, monkeypatch):
    monkeypatch.delenv("FINCOMPRESS_DEBUG", raising=False)
    with pytest.raises(SystemExit):
        cli.run_cli(lambda: 1 / 0, "predict")
    assert capsys.readouterr().err == ("predict: error: unexpected ZeroDivisionError: division by zero (a bug: please "
                                       "report it; FINCOMPRESS_DEBUG=1 shows the traceback)\n")
