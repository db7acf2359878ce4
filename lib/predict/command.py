"""Classify financial sentences with a shipped model, streaming, so it fits a shell pipeline.

    python -m lib.predict "Operating profit rose 20%" "Sales fell"
    python -m lib.predict --csv headlines.csv --column text --json      # --csv - reads the CSV from stdin
    cat sentences.txt | python -m lib.predict --json                    # piped stdin: one sentence per line
    python -m lib.predict --model checkpoints/teacher "..."             # PyTorch, pruned, INT8 or ONNX

An ONNX model needs only numpy, onnxruntime and tokenizers (requirements-serve.txt), an OpenVINO one numpy,
openvino and tokenizers (requirements-serve-openvino.txt); other formats import torch when they load.
Input is read and answered in chunks, so a CSV of any length runs in constant memory. A text longer than
the model's max length (128 tokens for artifacts/model) is an error unless --truncate; nothing is cut
silently. Input is normalized as the model's training text was (config.json's text_normalization, see
lib/core/textnorm.py); the output echoes the raw text. An ONNX model runs with the session settings stage 05
chose on the machine of its run (serving.json in its folder; ONNX Runtime's defaults without one), an OpenVINO model
at the precision stage 06 built it for (f32 or bf16, the same file); --threads wins over the threads it names. An error stops the run at the chunk holding the bad row: every line written before is
complete.
"""
import argparse
import itertools
import json
import os
import sys
from pathlib import Path

import numpy as np

from lib.core.errors import FinCompressError
from lib.core.params import check_range
from lib.core.variants import SHIPPED_MODEL
from lib.predict import serving
from lib.runtime import onnxrt

DEFAULT_MODEL = Path(__file__).resolve().parent.parent.parent / SHIPPED_MODEL
CHUNK_ROWS = 2048  # rows read, checked and answered at a time: bounds memory, and each chunk is sorted by length
BATCH_SIZE = 32  # sentences per model call unless --batch-size says otherwise
# Shown escaped in the table: what ends a line for str.splitlines() or a terminal (so each row stays one line), the
# other C0/C1 controls (ESC starts terminal sequences) and the bidi controls that reorder what a terminal shows
# (U+202E makes "evil\u202etxt.exe" read "evilexe.txt"). JSON output escapes all non-ASCII as JSON does.
BIDI = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
ESCAPES = str.maketrans({**{chr(c): f"\\u{c:04x}" for c in [*range(32), *range(0x7f, 0xa0)]},
                         **{c: f"\\u{ord(c):04x}" for c in BIDI + "\u2028\u2029"},
                         "\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r", "\0": "\\0"})
# Option ranges. Threads: onnxrt.MAX_THREADS, a fixed cap (why there), the same for a model folder's serving.json.
# Batch: rows per model call; CPU throughput stops growing long before 256 while memory grows with each row
# (attention scores are rows x length^2). --max-length: the model's positions bound it; where its files do not
# say, 65,536 (past any BERT position table) keeps a mistyped number from reaching the tokenizer.
LIMITS = {"threads": (1, onnxrt.MAX_THREADS), "batch_size": (1, 256), "max_length": (None, 2**16)}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m lib.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", help="sentences to classify (else --csv, else piped stdin, one per line)")
    p.add_argument("--csv", help="a UTF-8 CSV file with a header row, or - for a CSV on stdin")
    p.add_argument("--column", default="text", help="CSV column holding the sentences (default: text)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder or .onnx file (default: artifacts/model)")
    p.add_argument("--max-length", type=int, help="tokens the model reads (default: the model's, else 128)")
    p.add_argument("--truncate", action="store_true", help="cut texts longer than --max-length instead of failing")
    p.add_argument("--json", action="store_true", help="one JSON object per line, with the input row number")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"sentences per model call (default: {BATCH_SIZE})")
    p.add_argument("--threads", type=int, help=f"CPU threads for the model and the tokenizer (default: "
                   f"{onnxrt.Settings().threads}, or for the model what its {onnxrt.SETTINGS_FILE} says)")
    return p.parse_args(argv)


def rows_of(args) -> tuple[str, str, object]:
    """(what a row is called, where rows come from, iterator of (row number, text)) for the one source given."""
    if args.csv is not None:
        if args.texts:
            raise FinCompressError("pass sentences as arguments or with --csv, not both")
        return "row", "stdin" if args.csv == "-" else args.csv, serving.csv_rows(args.csv, args.column)
    if args.texts:
        return "text", "the arguments", enumerate(args.texts, 1)
    if sys.stdin is None or sys.stdin.isatty():
        raise FinCompressError("nothing to classify; pass sentences as arguments, --csv FILE, or pipe one per line")
    return "line", "stdin", serving.line_rows(sys.stdin.buffer)


def check_chunk(kind: str, chunk: list, encodings: list, max_length: int) -> None:
    """An empty text, or one longer than the model reads (without --truncate), stops the run before any output."""
    for (n, text), enc in zip(chunk, encodings):
        if not text.strip():
            raise FinCompressError(f"{kind} {n} is empty; pass a non-empty sentence")
        if len(enc.ids) > max_length:
            raise FinCompressError(f"{kind} {n} is {len(enc.ids)} tokens, longer than the {max_length} the model "
                                   "reads; shorten it or pass --truncate")


def chunk_text(chunk: list, probs: np.ndarray, labels: list, as_json: bool) -> str:
    """The output lines for one chunk: JSON objects, or table rows with their text escaped."""
    lines = []
    for (n, text), p in zip(chunk, probs):
        scores = {f"p_{l}": round(float(x), 4) for l, x in zip(labels, p)}
        label = labels[int(p.argmax())]
        lines.append(json.dumps({"row": n, "label": label, **scores, "text": text}) if as_json else
                     "\t".join([label, *map(str, scores.values()), text.translate(ESCAPES)]))
    return "\n".join(lines) + "\n"


def check_limits(args) -> None:
    """Every numeric option inside LIMITS, before any input is read or the model loads."""
    for name, (low, high) in LIMITS.items():
        if getattr(args, name) is not None:
            check_range("--" + name.replace("_", "-"), getattr(args, name), low, high)


def check_args(args, model: "serving.Model") -> int:
    """The max length to apply: --max-length checked against what the model and its tokenizer allow."""
    max_length = args.max_length if args.max_length is not None else model.max_length
    least = model.tokenizer.num_special_tokens_to_add(False) + 1
    if max_length < least:
        raise FinCompressError(f"--max-length {max_length} leaves no room for text after the model's special "
                               f"tokens; pass --max-length {least} or more")
    if model.max_positions and max_length > model.max_positions:
        raise FinCompressError(f"--max-length {max_length} is more than the {model.max_positions} positions "
                               f"{args.model} has; pass --max-length {model.max_positions} or less")
    return max_length


def main(argv=None) -> int:
    args = parse_args(argv)
    check_limits(args)
    if sys.stdout is None:  # started with stdout closed (>&-): say so before any work, not at the first write
        raise FinCompressError("stdout is closed; send the output to a file or a pipe (> labels.txt)")
    # the tokenizer's thread pool reads it at its first batch; stage 05 chose the model's threads beside this default
    os.environ["RAYON_NUM_THREADS"] = str(args.threads or onnxrt.Settings().threads)
    kind, where, rows = rows_of(args)
    chunk = list(itertools.islice(rows, CHUNK_ROWS))  # input problems surface before the model loads
    if not chunk:
        raise FinCompressError(f"{where} has no {kind}s to classify" + (" (only a header)" if kind == "row" else ""))
    model = serving.load(Path(args.model), args.threads)
    max_length = check_args(args, model)
    serving.set_truncation(model.tokenizer, max_length if args.truncate else None)
    header = "" if args.json else "\t".join(["label", *(f"p_{l}" for l in model.labels), "text"]) + "\n"
    while chunk:
        encodings = serving.encode(model, (text for _, text in chunk))
        check_chunk(kind, chunk, encodings, max_length)
        # the header goes out with the first chunk, once it is known good: a failed run prints nothing
        probs = serving.classify(model, encodings, args.batch_size)
        serving.write_out(header + chunk_text(chunk, probs, model.labels, args.json))
        header = ""
        chunk = list(itertools.islice(rows, CHUNK_ROWS))
    return 0
