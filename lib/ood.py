"""The out-of-domain tweets stage 01 sets aside: here only the unlabeled pool distillation may read."""
from pathlib import Path

import pandas as pd


def load_tweet_pool(data_dir) -> list[str]:
    """Texts of data/tweet_pool.csv (it has no labels; only its text column is read); [] when absent."""
    path = Path(data_dir) / "tweet_pool.csv"
    if not path.is_file():
        return []
    return pd.read_csv(path, usecols=["text"], keep_default_na=False)["text"].astype(str).tolist()
