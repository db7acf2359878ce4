"""Financial PhraseBank + FiQA-2018 task 1: parse, label, de-duplicate, split (batching: lib.data.batching)."""
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from lib.core.errors import FinCompressError
from lib.core.files import atomic_dir, write_json
from lib.core.textnorm import normalize_frame, normalize_texts
from lib.core.variants import LABELS
from lib.data.ood import counts as _counts, too_few, write_ood

LABEL2ID = {name: i for i, name in enumerate(LABELS)}
PHRASEBANK_FILES = {"AllAgree": "Sentences_AllAgree.txt", "75Agree": "Sentences_75Agree.txt",
                    "66Agree": "Sentences_66Agree.txt", "50Agree": "Sentences_50Agree.txt"}
FIQA_FILES = {"fiqa_headline": "task1_headline_ABSA_train.json", "fiqa_post": "task1_post_ABSA_train.json"}
SPLITS = ("train", "val", "test")
# Records in each released file (../shared/data/README.md); a file missing more than 1% of them is damaged.
EXPECTED = {"Sentences_AllAgree.txt": 2264, "Sentences_75Agree.txt": 3453, "Sentences_66Agree.txt": 4217,
            "Sentences_50Agree.txt": 4846, FIQA_FILES["fiqa_headline"]: 436, FIQA_FILES["fiqa_post"]: 675}
PHRASEBANK_HUB, FIQA_HUB = "takala/financial_phrasebank", "TheFinAI/fiqa-sentiment-classification"
# The Hub's PhraseBank came with a loading script, which datasets >= 4 does not run; its release zip is read instead.
PHRASEBANK_ZIP = "data/FinancialPhraseBank-v1.0.zip"
FIQA_FILE_OF_TYPE = {"headline": FIQA_FILES["fiqa_headline"], "post": FIQA_FILES["fiqa_post"]}


def normalize(text: str) -> str:
    """Key used for de-duplication: case-folded, whitespace collapsed."""
    return " ".join(text.strip().casefold().split())


def score_to_label(score: float, threshold: float = 0.1) -> int:
    """negative < -t <= neutral <= t < positive, as the study design specifies."""
    if score < -threshold:
        return LABEL2ID["negative"]
    if score > threshold:
        return LABEL2ID["positive"]
    return LABEL2ID["neutral"]


def _decode(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        # The less strict PhraseBank files are Latin-1; keep their mojibake as released.
        return raw.decode("latin-1")


def parse_phrasebank(path: Path) -> tuple[list[dict], int]:
    """Rows from a `sentence@label` file (split on the last @) and the number of malformed lines."""
    return phrasebank_rows(Path(path).read_bytes())


def phrasebank_rows(raw: bytes) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for line in _decode(raw).splitlines():
        if not line.strip():
            continue
        text, sep, label = line.rpartition("@")
        label = label.strip().lower()
        if not sep or not text.strip() or label not in LABEL2ID:
            bad += 1
            continue
        rows.append({"text": text.strip(), "label": LABEL2ID[label], "source": "phrasebank"})
    return rows, bad


def parse_fiqa(path: Path, source: str, threshold: float = 0.1) -> tuple[list[dict], int]:
    """Rows from a FiQA task-1 JSON file; a sentence's label is its mean target score, thresholded."""
    try:
        data = json.loads(_decode(Path(path).read_bytes()))
    except json.JSONDecodeError as e:
        raise FinCompressError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); restore the original FiQA file")
    if not isinstance(data, dict):
        raise FinCompressError(f"{path} should hold a JSON object keyed by id; restore the original FiQA file")
    return fiqa_rows(data, source, threshold)


def fiqa_rows(data: dict, source: str, threshold: float = 0.1) -> tuple[list[dict], int]:
    rows, bad = [], 0
    for entry in data.values():
        try:
            text = entry["sentence"].strip()
            scores = [float(t["sentiment_score"]) for t in entry["info"]]
        except (KeyError, TypeError, ValueError, AttributeError):
            bad += 1
            continue
        if not text or not scores or any(not -1.0 <= s <= 1.0 for s in scores):
            bad += 1
            continue
        mean = sum(scores) / len(scores)
        rows.append({"text": text, "label": score_to_label(mean, threshold), "source": source, "score": mean})
    return rows, bad


def deduplicate(rows: list[dict]) -> tuple[list[dict], dict]:
    """Keep one copy of each normalised text; drop texts seen with conflicting labels."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(normalize(r["text"]), []).append(r)
    kept, dup_rows, conflict_texts, conflict_rows = [], 0, 0, 0
    for group in groups.values():
        if len({r["label"] for r in group}) > 1:
            conflict_texts += 1
            conflict_rows += len(group)
            continue
        kept.append(group[0])
        dup_rows += len(group) - 1
    return kept, {"duplicates_removed": dup_rows, "conflicting_texts_dropped": conflict_texts,
                  "conflicting_rows_dropped": conflict_rows}


def collect(parsed: dict[str, tuple], allow_partial: bool) -> tuple[list[dict], dict, list[str]]:
    """parsed: source -> (where, file name, rows, malformed). Rows, malformed counts, and a note per known file
    missing over 1% of its records (an error unless the user allows partial data)."""
    rows, malformed, partial = [], {}, []
    for src, (where, name, got, bad) in parsed.items():
        if not got:
            raise FinCompressError(f"{where} has no valid lines ({bad} malformed); expected the original file format, "
                                   "see ../shared/data/README.md")
        expected = EXPECTED.get(name)
        if expected and max(expected - len(got), bad) > 0.01 * expected:
            partial.append(f"{where}: {len(got):,} of the {expected:,} expected records read ({bad:,} malformed, "
                           f"{max(expected - len(got), 0):,} missing)")
            if not allow_partial:
                raise FinCompressError(f"{partial[-1]}; restore the original file (see ../shared/data/README.md) or "
                                       "pass --set 01.allow_partial_data=True to train on what is there")
        rows += got
        malformed[src] = bad
    return rows, malformed, partial


def read_local(data_dir: Path, agreement: str = "AllAgree", threshold: float = 0.1,
               allow_partial: bool = False) -> tuple[list[dict], dict, list[str]]:
    """Parse the ../shared/data layout: rows, per-file malformed counts, and notes on files allowed to be partial."""
    data_dir = Path(data_dir)
    if agreement not in PHRASEBANK_FILES:
        raise FinCompressError(f"unknown PhraseBank agreement level {agreement!r}; use one of {list(PHRASEBANK_FILES)}")
    files = {"phrasebank": data_dir / "financial_phrasebank" / PHRASEBANK_FILES[agreement]}
    files.update({src: data_dir / "fiqa_task1" / name for src, name in FIQA_FILES.items()})
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise FinCompressError(f"data dir {data_dir} lacks {', '.join(missing)}; point --data-dir at a folder laid out like ../shared/data")
    parsed = {}
    for src, path in files.items():
        got, bad = parse_phrasebank(path) if src == "phrasebank" else parse_fiqa(path, src, threshold)
        parsed[src] = (str(path), path.name, got, bad)
    return collect(parsed, allow_partial)


def phrasebank_members(zip_path: Path) -> dict[str, bytes]:
    """The sentence files, licence and datasheet of the PhraseBank release zip, by file name."""
    with zipfile.ZipFile(zip_path) as zf:
        keep = {*PHRASEBANK_FILES.values(), "License.txt", "README.txt"}
        found = {Path(n).name: zf.read(n) for n in zf.namelist() if Path(n).name in keep}
    missing = sorted(set(PHRASEBANK_FILES.values()) - set(found))
    if missing:
        raise FinCompressError(f"{zip_path} lacks {', '.join(missing)}; the Hub copy of {PHRASEBANK_HUB} has changed shape")
    return found


def fiqa_task1(rows: list[dict]) -> dict[str, dict]:
    """Hub rows (one per sentence and target) back into task 1's JSON: one entry per sentence, its targets in `info`."""
    files: dict[str, dict] = {name: {} for name in FIQA_FILE_OF_TYPE.values()}
    by_text: dict[tuple, dict] = {}
    for r in rows:
        if r.get("type") not in FIQA_FILE_OF_TYPE:
            raise FinCompressError(f"FiQA row of type {r.get('type')!r}; expected headline or post ({FIQA_HUB} changed shape)")
        key = (r["type"], r["sentence"].strip())
        if key not in by_text:
            entries = files[FIQA_FILE_OF_TYPE[r["type"]]]
            by_text[key] = entries[str(len(entries))] = {"sentence": r["sentence"], "info": []}
        by_text[key]["info"].append({"target": r.get("target"), "aspects": r.get("aspect"),
                                     "sentiment_score": str(r["score"])})
    return files


def hub_downloads(revisions: dict | None = None) -> tuple[Path, list[dict]]:
    """The PhraseBank release zip and every FiQA task-1 row (train/valid/test together are task 1's training set)."""
    from datasets import load_dataset
    from huggingface_hub import hf_hub_download
    revs = revisions or {}
    zip_path = hf_hub_download(PHRASEBANK_HUB, PHRASEBANK_ZIP, repo_type="dataset", revision=revs.get(PHRASEBANK_HUB))
    fiqa = load_dataset(FIQA_HUB, revision=revs.get(FIQA_HUB))
    return Path(zip_path), [r for split in fiqa.values() for r in split]


def read_hub(agreement: str = "AllAgree", threshold: float = 0.1,
             allow_partial: bool = False) -> tuple[list[dict], dict, list[str]]:
    """Same data from the Hugging Face Hub, read as the local files are: the release zip, FiQA grouped per sentence."""
    zip_path, fiqa = hub_downloads()
    name, entries = PHRASEBANK_FILES[agreement], fiqa_task1(fiqa)
    parsed = {"phrasebank": (f"{PHRASEBANK_HUB} {name}", name, *phrasebank_rows(phrasebank_members(zip_path)[name]))}
    for src, file in FIQA_FILES.items():
        parsed[src] = (f"{FIQA_HUB} {file}", file, *fiqa_rows(entries[file], src, threshold))
    return collect(parsed, allow_partial)


def load_rows(data_dir: str | None, agreement: str = "AllAgree", threshold: float = 0.1,
              allow_partial: bool = False) -> tuple[list[dict], dict, list[str], str]:
    """Local dir (argument, then FINCOMPRESS_DATA_DIR), else the Hub; one error naming both if neither works."""
    data_dir = data_dir or os.environ.get("FINCOMPRESS_DATA_DIR")
    if data_dir:
        if not Path(data_dir).is_dir():
            raise FinCompressError(f"data dir {data_dir} does not exist; pass --data-dir PATH (layout of ../shared/data)")
        return (*read_local(Path(data_dir), agreement, threshold, allow_partial), str(Path(data_dir).resolve()))
    try:
        return (*read_hub(agreement, threshold, allow_partial), "huggingface-hub")
    except FinCompressError:
        raise
    except Exception as e:  # any network/hub failure ends in the same advice
        raise FinCompressError("no data: pass --data-dir PATH (or set FINCOMPRESS_DATA_DIR) to a copy laid out like "
                               f"../shared/data, or run online so the Hub data sets can be fetched ({type(e).__name__})") from None


def transfer_sentences(data_dir: str | None, kept: pd.DataFrame, agreement: str) -> list[str]:
    """PhraseBank sentences below the chosen agreement level, none of them in our splits: unlabeled
    in-domain text that distillation can have the teacher label (a transfer set, as in Hinton et al.)."""
    if agreement == "50Agree":
        return []
    if data_dir:
        path = Path(data_dir) / "financial_phrasebank" / PHRASEBANK_FILES["50Agree"]
        if not path.is_file():  # optional: distillation then uses the labeled sentences alone
            print(f"no {path}: no transfer set for distillation")
            return []
        texts = [r["text"] for r in parse_phrasebank(path)[0]]
    else:
        texts = [r["text"] for r in phrasebank_rows(phrasebank_members(hub_downloads()[0])[PHRASEBANK_FILES["50Agree"]])[0]]
    seen, out = {normalize(t) for t in kept["text"]}, []
    for t in texts:
        key = normalize(t)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def stratified_split(df: pd.DataFrame, seed: int, val_frac: float = 0.15, test_frac: float = 0.15) -> dict:
    """70/15/15 by default, stratified on the label, deterministic for a seed."""
    train, rest = train_test_split(df, test_size=val_frac + test_frac, stratify=df["label"], random_state=seed)
    val, test = train_test_split(rest, test_size=test_frac / (val_frac + test_frac), stratify=rest["label"],
                                 random_state=seed)
    return {"train": train.reset_index(drop=True), "val": val.reset_index(drop=True), "test": test.reset_index(drop=True)}


def plan_splits(rows: list[dict], origin: str, seed: int, agreement: str, max_rows: int = 0) -> tuple:
    """(kept rows, splits, transfer sentences, de-duplication counts) as prepare_data writes them; writes nothing."""
    kept, dedup = deduplicate(rows)
    df = pd.DataFrame(kept)[["text", "label", "source"]]
    try:
        if max_rows and max_rows < len(df):  # smoke runs: a stratified subsample keeps every class in every split
            df, _ = train_test_split(df, train_size=max_rows, stratify=df["label"], random_state=seed)
        splits = stratified_split(df, seed)
    except ValueError as e:  # sklearn: a class with too few sentences to stratify
        raise too_few(max_rows, "sentences", e) from None
    # De-duplicated against every parsed row, not only the kept ones: a dropped conflicting text stays out too.
    transfer = transfer_sentences(None if origin == "huggingface-hub" else origin, pd.DataFrame(rows), agreement)
    return df, splits, transfer[:max_rows] if max_rows else transfer, dedup


def prepare_data(out_dir: Path, data_dir: str | None = None, seed: int = 42, agreement: str = "AllAgree",
                 threshold: float = 0.1, max_rows: int = 0, allow_partial: bool = False, normalization: str = "none") -> dict:
    """Build the splits, write them as CSV (atomically, texts in the textnorm mode `normalization`) and return a
    summary of what was done. Files are checked whole on the full parse; smoke runs (max_rows) sample afterwards."""
    rows, malformed, partial, origin = load_rows(data_dir, agreement, threshold, allow_partial)
    df, splits, transfer, dedup = plan_splits(rows, origin, seed, agreement, max_rows)
    with atomic_dir(Path(out_dir)) as tmp:
        for name, part in splits.items():
            normalize_frame(part, normalization).assign(label_name=part["label"].map(LABELS.__getitem__)).to_csv(tmp / f"{name}.csv", index=False)
        pd.DataFrame({"text": normalize_texts(transfer, normalization), "source": "phrasebank_below_" + agreement.lower()}).to_csv(
            tmp / "transfer.csv", index=False)
        summary = {"origin": origin, "agreement": agreement, "threshold": threshold, "rows_parsed": len(rows),
                   "malformed_lines": malformed, "partial_data": partial, **dedup, "rows_kept": len(df),
                   "split_sizes": {k: len(v) for k, v in splits.items()}, "transfer_sentences": len(transfer),
                   "text_normalization": normalization,
                   "class_counts": {k: _counts(v) for k, v in splits.items()},
                   "source_counts": {s: _counts(df[df["source"] == s]) for s in sorted(df["source"].unique())},
                   "ood": write_ood(tmp, origin, [r["text"] for r in rows] + transfer, seed, max_rows, normalization)}
        write_json(tmp / "summary.json", summary)
    return summary


def load_transfer(data_dir: Path) -> pd.DataFrame:
    """The unlabeled transfer sentences (label -1); empty when stage 01 wrote none."""
    path = Path(data_dir) / "transfer.csv"
    df = pd.read_csv(path, keep_default_na=False) if path.is_file() else pd.DataFrame(columns=["text", "source"])
    return df.assign(label=-1)[["text", "label", "source"]]


def load_splits(data_dir: Path) -> dict:
    """The CSV splits written by prepare_data."""
    data_dir = Path(data_dir)
    missing = [s for s in SPLITS if not (data_dir / f"{s}.csv").is_file()]
    if missing:
        raise FinCompressError(f"{data_dir} has no {', '.join(missing)} split; run stage 01 (python run_all.py --only 01) first")
    return {s: pd.read_csv(data_dir / f"{s}.csv", keep_default_na=False) for s in SPLITS}
