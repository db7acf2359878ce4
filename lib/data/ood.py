"""Out-of-domain evaluation: the financial tweets split once into an unlabeled transfer pool, OOD-val and OOD-test.

The tweets (../shared/data/twitter_financial_news, evaluation only) are a different style and label convention
from the training data. Their gold labels never leave ood_val/ood_test; the pool is written as text only, so any
training that reads it cannot see a gold label.
"""
import re
from collections import Counter
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from lib.core.errors import FinCompressError
from lib.core.textnorm import normalize_frame
from lib.core.variants import LABELS

TWEETS = Path("twitter_financial_news") / "sent_train.csv"
# Tweet labels 0 bearish, 1 bullish, 2 neutral -> ours 0 negative, 1 neutral, 2 positive.
TWEET_LABEL_MAP = {0: 0, 1: 2, 2: 1}
FRACTIONS = {"tweet_pool": 0.4, "ood_val": 0.3, "ood_test": 0.3}
OOD_SETS = ("ood_val", "ood_test")
URL_RE = re.compile(r"https?://\S+|www\.\S+")


def dedup_key(text: str) -> str:
    """Near-duplicate key: URLs and the truncation ellipsis removed, case-folded, whitespace collapsed."""
    return " ".join(URL_RE.sub(" ", str(text)).replace("\u2026", " ").casefold().split())


def read_tweets(path: Path) -> pd.DataFrame:
    """The tweets with our label ids; pandas parses the quoted newlines inside texts. A damaged file is one line."""
    try:
        raw = pd.read_csv(path, keep_default_na=False)
        texts, labels = raw["text"].astype(str).str.strip(), pd.to_numeric(raw["label"], errors="coerce")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, KeyError) as e:
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]}"
        raise FinCompressError(f"{path} cannot be read as the tweets CSV with text and label columns ({why}); "
                               "restore the original file") from None
    ours = labels.map(TWEET_LABEL_MAP)
    if ours.isna().any():
        i = int(ours.isna().to_numpy().argmax())
        raise FinCompressError(f"{path} has label '{raw['label'].iloc[i]}' in data row {i + 1}; tweet labels are 0, 1 "
                               "or 2: restore the original file")
    return raw.assign(text=texts, label=ours.astype(int))


def too_few(max_rows: int, what: str, error: Exception) -> FinCompressError:
    """sklearn's stratification error as advice: a class with too few members for a split."""
    why = f"a class has too few {what} for a stratified split ({str(error).split('.')[0]})"
    if max_rows:
        return FinCompressError(f"parameter max_rows={max_rows}: {why}; pass 0 for every sentence or a larger sample "
                                "such as the smoke runs' 240")
    return FinCompressError(f"{why}; restore the data files (see ../shared/data/README.md)")


def clean(raw: pd.DataFrame, indomain_texts) -> tuple[pd.DataFrame, dict]:
    """One copy per key; keys seen with conflicting labels, empty keys and keys of any in-domain text dropped."""
    raw = raw.assign(key=raw["text"].map(dedup_key))
    groups = raw.groupby("key")["label"].nunique()
    conflicting = set(groups[groups > 1].index)
    kept = raw[~raw["key"].isin(conflicting)].drop_duplicates("key")
    overlap = kept["key"].isin({dedup_key(t) for t in indomain_texts})
    kept = kept[~overlap & (kept["key"] != "")].reset_index(drop=True)
    return kept, {"rows_read": len(raw), "duplicate_rows_removed": int(len(raw) - raw["key"].nunique()),
                  "conflicting_keys_dropped": len(conflicting),
                  "conflicting_rows_dropped": int(raw["key"].isin(conflicting).sum()),
                  "indomain_overlap_dropped": int(overlap.sum()), "rows_kept": len(kept)}


def split(kept: pd.DataFrame, seed: int, max_rows: int = 0) -> dict[str, pd.DataFrame]:
    """Pool 40 / OOD-val 30 / OOD-test 30, stratified on the label and seeded; smoke runs subsample first."""
    try:
        if max_rows and max_rows < len(kept):
            kept, _ = train_test_split(kept, train_size=max_rows, stratify=kept["label"], random_state=seed)
        pool, rest = train_test_split(kept, train_size=FRACTIONS["tweet_pool"], stratify=kept["label"],
                                      random_state=seed)
        val_test = FRACTIONS["ood_val"] + FRACTIONS["ood_test"]
        val, test = train_test_split(rest, test_size=FRACTIONS["ood_test"] / val_test, stratify=rest["label"],
                                     random_state=seed)
    except ValueError as e:
        raise too_few(max_rows, "tweets", e) from None
    return {"tweet_pool": pool, "ood_val": val, "ood_test": test}


def counts(df: pd.DataFrame) -> dict:
    """Sentences per class name (every class listed, 0 when absent); stage 01 counts its splits with it too."""
    c = Counter(df["label"])
    return {LABELS[i]: int(c.get(i, 0)) for i in range(len(LABELS))}


def plan(path: Path, indomain_texts, seed: int, max_rows: int = 0) -> tuple[dict, dict]:
    """The tweets file read, cleaned and split as write_ood writes it, and its summary; writes nothing."""
    kept, summary = clean(read_tweets(path), indomain_texts)
    return split(kept, seed, max_rows), summary


def write_ood(out: Path, origin: str, indomain_texts, seed: int, max_rows: int = 0, normalization: str = "none") -> dict:
    """Write ood_val.csv, ood_test.csv (text,label,label_name) and tweet_pool.csv (text only) into `out`;
    returns the summary, or {"absent": reason} when the tweets are not in the data folder. Texts are written in
    the textnorm mode every split uses (de-duplication reads the raw text)."""
    path = Path(origin) / TWEETS
    if not path.is_file():
        note = f"no {path}: no out-of-domain evaluation (stages score in-domain sets only)"
        print(note)
        return {"absent": note}
    parts, summary = plan(path, indomain_texts, seed, max_rows)
    parts = {k: normalize_frame(v, normalization) for k, v in parts.items()}
    pd.DataFrame({"text": parts["tweet_pool"]["text"]}).to_csv(out / "tweet_pool.csv", index=False)
    for name in OOD_SETS:
        part = parts[name]
        part[["text", "label"]].assign(label_name=part["label"].map(LABELS.__getitem__)).to_csv(
            out / f"{name}.csv", index=False)
    return {"source": str(path), "seed": seed, "fractions": FRACTIONS, **summary,
            "sizes": {k: len(v) for k, v in parts.items()}, "class_counts": {k: counts(v) for k, v in parts.items()}}


def load_ood_sets(data_dir: Path) -> dict[str, pd.DataFrame]:
    """{"ood_val": df, "ood_test": df} as stage 01 wrote them; {} when it wrote none."""
    paths = {s: Path(data_dir) / f"{s}.csv" for s in OOD_SETS}
    if not all(p.is_file() for p in paths.values()):
        return {}
    return {s: pd.read_csv(p, keep_default_na=False) for s, p in paths.items()}


def load_tweet_pool(data_dir: Path) -> list[str]:
    """The unlabeled tweet transfer texts (disjoint from the OOD sets); [] when stage 01 wrote none."""
    path = Path(data_dir) / "tweet_pool.csv"
    return pd.read_csv(path, keep_default_na=False)["text"].astype(str).tolist() if path.is_file() else []


def summary_text(s: dict) -> str:
    """One paragraph for stage 01's data section."""
    if not s or "absent" in s:
        return (s or {}).get("absent", "No out-of-domain evaluation.")
    sizes = ", ".join(f"{k} {v} {s['class_counts'][k]}" for k, v in s["sizes"].items())
    return (f"Out of domain: **{s['rows_read']}** financial tweets read, **{s['rows_kept']}** kept "
            f"({s['duplicate_rows_removed']} duplicates, {s['conflicting_rows_dropped']} rows with conflicting labels, "
            f"{s['indomain_overlap_dropped']} equal to an in-domain text dropped). Split stratified, seed {s['seed']}: "
            f"{sizes}. The pool is written without labels (unlabeled transfer text); OOD-val and OOD-test are "
            "for evaluation only.")
