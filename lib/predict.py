"""Classify financial sentences with a shipped model.

    python -m lib.predict "Operating profit rose 20%" "Sales fell"
    python -m lib.predict --csv headlines.csv --column text --json
    python -m lib.predict --model checkpoints/teacher "..."     # PyTorch checkpoint, pruned or ONNX too
"""
import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from lib import variants
from lib.common import REPO_ROOT, FinCompressError, run_cli
from lib.data import LABELS

DEFAULT_MODEL = REPO_ROOT / "artifacts" / "model"


def read_csv_texts(path: Path, column: str) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise FinCompressError(f"CSV file {path} does not exist")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise FinCompressError(f"{path} is not UTF-8 (bad byte 0x{raw[e.start]:02x} at offset {e.start}); "
                               "re-save it as UTF-8") from None
    rows = list(csv.DictReader(text.splitlines()))
    if not rows or column not in rows[0]:
        found = ", ".join(rows[0]) if rows else "no rows"
        raise FinCompressError(f"{path} has no column {column!r} (found: {found}); pass --column NAME")
    return [r[column] or "" for r in rows]


def check_texts(texts: list[str], tokenizer, max_length: int, truncate: bool) -> None:
    """Empty texts are rejected; texts longer than the model reads are rejected unless --truncate."""
    for i, t in enumerate(texts, 1):
        if not t.strip():
            raise FinCompressError(f"text {i} is empty; pass a non-empty sentence")
        n = len(tokenizer(t, truncation=False)["input_ids"])
        if n > max_length and not truncate:
            raise FinCompressError(f"text {i} is {n} tokens, longer than the {max_length} the model reads; "
                                   "shorten it or pass --truncate")


def classify(predict, tokenizer, texts: list[str], max_length: int = 128, batch_size: int = 32) -> np.ndarray:
    """Class probabilities (negative, neutral, positive) for each text."""
    out = []
    for i in range(0, len(texts), batch_size):
        enc = dict(tokenizer(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length,
                             return_tensors="pt"))
        out.append(torch.softmax(torch.as_tensor(predict(enc)).float(), -1).numpy())
    return np.concatenate(out)


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m lib.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("texts", nargs="*", help="sentences to classify")
    p.add_argument("--csv", help="a UTF-8 CSV file with one sentence per row")
    p.add_argument("--column", default="text", help="CSV column holding the sentences (default: text)")
    p.add_argument("--model", default=str(DEFAULT_MODEL), help="model folder or .onnx file (default: artifacts/model)")
    p.add_argument("--max-length", type=int, default=128, help="tokens the model reads (default: 128)")
    p.add_argument("--truncate", action="store_true", help="cut texts longer than --max-length instead of failing")
    p.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    texts = list(args.texts) + (read_csv_texts(Path(args.csv), args.column) if args.csv else [])
    if not texts:
        raise FinCompressError("nothing to classify; pass sentences as arguments or --csv FILE")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()  # a CLI's stderr is for its own one-line errors, not load reports
    hf_logging.disable_progress_bar()
    if not Path(args.model).exists():
        raise FinCompressError(f"model {args.model} does not exist; run `python run_all.py` (it exports artifacts/model) "
                               "or pass --model PATH")
    variant = variants.detect(Path(args.model))
    try:
        predict, tokenizer = variants.load(variant)
    except (OSError, ValueError, RuntimeError) as e:
        raise FinCompressError(f"cannot load model {args.model} ({type(e).__name__}: {str(e).splitlines()[0][:100]}); "
                               "re-export it with run_all.py or pass another --model") from None
    check_texts(texts, tokenizer, args.max_length, args.truncate)
    probs = classify(predict, tokenizer, texts, args.max_length)
    if not args.json:
        print("label\t" + "\t".join(f"p_{l}" for l in LABELS) + "\ttext")
    for text, p in zip(texts, probs):
        row = {"label": LABELS[int(p.argmax())], **{f"p_{l}": round(float(x), 4) for l, x in zip(LABELS, p)},
               "text": text}
        print(json.dumps(row) if args.json else "\t".join(str(v) for v in row.values()))
    return 0


if __name__ == "__main__":
    run_cli(main, "predict")
