"""What `lib.predict` needs, without the training stack: input rows streamed from a CSV or from lines, a model
loaded with numpy, tokenizers and its runtime (onnxruntime or openvino; torch only for PyTorch formats), padding, and
the CLI runner."""
import csv
import io
import json
import re
import sys
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from lib.core import variants
from lib.core.cli import first_line, quiet_stdout
from lib.core.errors import FinCompressError
from lib.core.textnorm import normalize_text
from lib.runtime import onnxrt, openvino

DEFAULT_MAX_LENGTH = 128  # what the study trains and scores at; a model's config.json max_seq_length overrides it
CSV_CELL_LIMIT = 2**31 - 1  # stdin's size is unknown: any cell a C long can count (csv's own cap is 128 KiB)
ESCAPED_BYTE = re.compile("[\udc80-\udcff]")  # what errors="surrogateescape" makes of a byte that is not UTF-8


class Model(NamedTuple):
    run: Callable          # {input_ids, attention_mask, token_type_ids: int64 arrays} -> logits as a numpy array
    tokenizer: object      # a tokenizers.Tokenizer, no padding, truncation as set_truncation left it
    labels: list
    pad_id: int
    max_length: int        # what the model was trained to read
    max_positions: int | None  # the most it can read (position embeddings), where its files say
    normalization: str = "none"  # lib.core.textnorm mode the training text had: predict applies it to raw input


# --- input rows: (row number, text), streamed -------------------------------------------------------------

def csv_rows(name: str, column: str):
    """(row number, cell) per data row of a CSV file or of stdin ("-"); header and column checked at once."""
    if name == "-":
        stream, where = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline=""), "stdin"
        csv.field_size_limit(CSV_CELL_LIMIT)
    else:
        path = Path(name)
        if not path.is_file():
            what = "is a folder" if path.is_dir() else "is not a regular file" if path.exists() else "does not exist"
            raise FinCompressError(f"CSV file {path} {what}; pass a CSV file, or --csv - for stdin")
        # a cell can be as large as the file: it is read, then the token limit judges it
        csv.field_size_limit(max(csv.field_size_limit(), min(path.stat().st_size, CSV_CELL_LIMIT)))
        stream, where = open(path, encoding="utf-8-sig", newline=""), str(path)
    # newline="" keeps quoted line breaks (and U+2028, U+0085, NUL) inside the cell; strict: a stray quote is an
    # error, not a cell that silently swallows the rows after it
    records = _records(csv.reader(stream, strict=True), where)
    header = next(records, (0, None))[1]
    if header is None:
        raise FinCompressError(f"{where} is empty; pass a CSV whose header row names a {column!r} column")
    if column not in header:
        raise FinCompressError(f"{where} has no column {column!r} (found: {', '.join(header)}); pass --column NAME")
    if header.count(column) > 1:
        places = " and ".join(str(i) for i, h in enumerate(header, 1) if h == column)
        raise FinCompressError(f"{where} has {header.count(column)} columns named {column!r} (columns {places}); "
                               "rename all but one")
    index = header.index(column)
    return ((n, rec[index] if index < len(rec) else "") for n, rec in records)


def _records(reader, where: str):
    """(n, record) per non-blank CSV record, the header being 0; bad bytes or quoting become one line naming where."""
    n = 0
    while True:
        opened = reader.line_num + 1
        try:
            rec = next(reader)
        except StopIteration:
            return
        except UnicodeDecodeError:
            found = bad_byte(Path(where)) if where != "stdin" else ""
            raise FinCompressError(f"{where} is not UTF-8{found}; re-save it as UTF-8") from None
        except csv.Error as e:
            if str(e) == "unexpected end of data":  # strict mode's word for a quote still open at the end
                raise FinCompressError(f"{where} {f'row {n}' if n else 'header'} (from line {opened}) opens a quoted "
                                       'field that never closes; close the quote, or write a quote in a cell as ""'
                                       ) from None
            raise FinCompressError(f"{where} line {reader.line_num}: {e}; fix the CSV quoting") from None
        if rec:
            yield n, rec
            n += 1


def bad_byte(path: Path) -> str:
    """Where a file's first invalid UTF-8 byte is (the text decoder only knows its position in one buffer)."""
    import codecs
    decoder, offset, lines = codecs.getincrementaldecoder("utf-8")(), 0, 1
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            held = len(decoder.getstate()[0])  # bytes of a character cut at the previous block's end
            try:
                decoder.decode(block)
            except UnicodeDecodeError as e:
                at = offset - held + e.start
                lines += e.object.count(b"\n", 0, e.start) - (e.object.count(b"\n", 0, held))
                return f" (byte 0x{e.object[e.start]:02x} at offset {at}, line {lines})"
            offset, lines = offset + len(block), lines + block.count(b"\n")
    return ""


def line_rows(binary):
    """(line number, line) per non-blank line of a byte stream; only \\n, \\r\\n and \\r end a line."""
    # bad bytes come through as lone surrogates, so the line holding one is named (the decoder reads ahead by blocks)
    stream = io.TextIOWrapper(binary, encoding="utf-8-sig", errors="surrogateescape", newline=None)
    for n, line in enumerate(stream, 1):
        if bad := ESCAPED_BYTE.search(line):
            raise FinCompressError(f"stdin is not UTF-8 (byte 0x{ord(bad.group()) - 0xdc00:02x} on line {n}); "
                                   "send UTF-8 text")
        if line.strip():
            yield n, line.rstrip("\n")


# --- the model ---------------------------------------------------------------------------------------------

def read_model_json(path: Path) -> dict:
    """A model folder's JSON object ({} if the file is absent); damage is one line naming the fix."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise FinCompressError(f"{path} is not valid JSON ({first_line(e)}); re-export the model") from None
    if not isinstance(data, dict):
        raise FinCompressError(f"{path} holds a JSON {type(data).__name__}, not an object; re-export the model")
    return data


def field(config: dict, key: str, kind: type, path: Path):
    """config[key] (None when absent) if it is a `kind` (a whole number >= 1 for int); else one line naming it."""
    value = config.get(key)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool) and (kind is not int or value >= 1)):
        return value
    expected = {int: "a whole number of at least 1", dict: "an object", str: "a string"}[kind]
    raise FinCompressError(f"{path}: {key} is {json.dumps(value)[:40]}, expected {expected}; fix it or re-export "
                           "the model")


RUNTIMES = {"onnx": onnxrt, "openvino": openvino}  # the formats served without torch, by the module that runs them


def settings_of(folder: Path, fmt: str = "onnx"):
    """The serving settings of a folder's SETTINGS_FILE for its runtime (stage 05 chose ONNX Runtime's on its machine,
    stage 06 wrote OpenVINO's precision), else the runtime's defaults."""
    path = folder / onnxrt.SETTINGS_FILE
    return RUNTIMES[fmt].settings_from_json(read_model_json(path), path)


def _served(fmt: str, path: Path, threads: int | None, settings):
    return RUNTIMES[fmt].load_serving(path, settings if threads is None else settings._replace(threads=threads))


def _torch(path: Path, threads: int | None):
    """A PyTorch-format variant through lib.formats, fed the same numpy batches as an ONNX model."""
    import torch
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # a CLI's stderr is for its own one-line errors, not load reports
    hf_logging.disable_progress_bar()
    threads = threads or onnxrt.Settings().threads
    torch.set_num_threads(threads)
    from lib import formats  # the training stack, only for a PyTorch-format model
    predict, tokenizer = formats.load(variants.detect(path), threads=threads)

    def run(batch: dict) -> np.ndarray:
        return predict({k: torch.from_numpy(v) for k, v in batch.items()}).float().numpy()
    return run, tokenizer.backend_tokenizer, tokenizer.pad_token_id or 0


def labels_of(config: dict) -> list:
    """The config's label names when it has real ones, else the study's order (its checkpoints say LABEL_0..)."""
    names = [config.get("id2label", {}).get(str(i), "") for i in range(len(variants.LABELS))]
    return names if all(names) and not any(n.startswith("LABEL_") for n in names) else list(variants.LABELS)


def load(path: Path, threads: int | None = None, settings=None) -> Model:
    """Any model folder (or .onnx file); a damaged or foreign file is one line naming it, not a traceback. `threads`:
    the model's, None for its serving settings' (2 without them); `settings`: its runtime's, instead of the folder's
    (ONNX and OpenVINO only)."""
    if not path.exists():
        raise FinCompressError(f"model {path} does not exist; run `python run_all.py` (it exports artifacts/model) "
                               "or pass --model PATH")
    fmt = variants.detect(path).format
    folder = path if path.is_dir() else path.parent
    try:
        run, tokenizer, pad_id = (_served(fmt, path, threads, settings or settings_of(folder, fmt)) if fmt in RUNTIMES
                                  else _torch(path, threads))
    except FinCompressError:
        raise
    except Exception as e:  # InvalidProtobuf, SafetensorError, a damaged tokenizer.json, ...: all the user's file
        raise FinCompressError(f"cannot load model {path} ({type(e).__name__}: {first_line(e)}); re-export it "
                               "with run_all.py or pass another --model") from None
    config_path = folder / variants.HF_CONFIG
    config = read_model_json(config_path)
    limit = read_model_json(folder / "tokenizer_config.json").get("model_max_length")
    positions = field(config, "max_position_embeddings", int, config_path) or (
        limit if isinstance(limit, int) and limit < 10**6 else None)
    field(config, "id2label", dict, config_path)
    mode = field(field(config, "fincompress", dict, config_path) or {}, "text_normalization", str, config_path)
    return Model(guarded(run, path), tokenizer, labels_of(config), pad_id,
                 field(config, "max_seq_length", int, config_path) or DEFAULT_MAX_LENGTH, positions, mode or "none")


def guarded(run: Callable, path: Path) -> Callable:
    def call(batch: dict) -> np.ndarray:
        try:
            return run(batch)
        except Exception as e:
            raise FinCompressError(f"model {path} failed on a batch of shape {batch['input_ids'].shape} "
                                   f"({type(e).__name__}: {first_line(e)}); re-export it or pass another --model") from None
    return call


# --- batches ------------------------------------------------------------------------------------------------

def set_truncation(tokenizer, max_length: int | None) -> None:
    """No padding (pad() pads each batch to its own longest); cut at max_length only when asked to."""
    tokenizer.no_padding()
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length)


def pad(encodings: list, pad_id: int) -> dict:
    """int64 model inputs for tokenizers' Encodings, right-padded to the longest of them."""
    width = max(len(e.ids) for e in encodings)
    batch = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in variants.INPUT_NAMES}
    batch["input_ids"].fill(pad_id)
    for i, e in enumerate(encodings):
        n = len(e.ids)
        batch["input_ids"][i, :n], batch["attention_mask"][i, :n], batch["token_type_ids"][i, :n] = e.ids, 1, e.type_ids
    return batch


def softmax(logits, dtype=np.float32) -> np.ndarray:
    """Row-wise class probabilities (the benchmark scores in float64)."""
    z = np.asarray(logits, dtype=dtype)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def encode(model: Model, texts) -> list:
    """Texts normalized in the model's exported mode (config.json: as its training text was), then tokenized."""
    return model.tokenizer.encode_batch([normalize_text(t, model.normalization) for t in texts])


def classify(model: Model, encodings: list, batch_size: int) -> np.ndarray:
    """Class probabilities in input order. Batches are formed after sorting by length, so each pads only
    to its own longest sentence."""
    probs = np.empty((len(encodings), len(model.labels)), dtype=np.float32)
    for rows, inputs in sorted_batches(encodings, batch_size, model.pad_id):
        probs[rows] = softmax(model.run(inputs))
    return probs


def sorted_batches(encodings: list, batch_size: int, pad_id: int):
    """(row indices, padded inputs) per batch of the encodings sorted by length, as classify feeds the model."""
    order = sorted(range(len(encodings)), key=lambda i: len(encodings[i].ids))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        yield rows, pad([encodings[i] for i in rows], pad_id)


def write_out(text: str) -> None:
    """text on stdout, flushed, so a reader downstream gets each chunk as soon as it is answered. A stdout that
    cannot take it (a full disk, an I/O error) is the user's to fix: one line and exit 2, not a bug report."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise  # the reader left (| head): run_cli ends quietly
    except OSError as e:
        quiet_stdout()
        raise FinCompressError(f"cannot write to stdout ({e.strerror or first_line(e)}); free space where it goes, "
                               "or send it elsewhere") from None

