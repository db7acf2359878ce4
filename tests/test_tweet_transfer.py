"""Stage 02's tweet transfer: only the pool's text is read, every row gets the 'no label' -1, in stage 01's mode."""
from pathlib import Path
from types import SimpleNamespace

import pandas as pd

from lib.data.ood import load_tweet_pool
from lib.stages import distillation

POOL = pd.DataFrame({"text": ["$AAPL up https://t.co/x1", "@bob: sales fell"], "label": [2, 0],
                     "label_name": ["positive", "negative"], "source": "tweet_pool"})


def test_the_pool_is_read_as_text_only_and_missing_is_empty(tmp_path):
    assert load_tweet_pool(tmp_path) == []
    POOL.to_csv(tmp_path / "tweet_pool.csv", index=False)
    assert load_tweet_pool(tmp_path) == POOL["text"].tolist()


def stage_stub(data_dir: Path, mode: str):
    result = SimpleNamespace(metrics={"data": {"text_normalization": mode}})
    return SimpleNamespace(paths={"data": data_dir}, result_of=lambda stage: result)


def test_tweet_transfer_rows_carry_no_gold_label_and_stage_01s_normalization(tmp_path):
    POOL.to_csv(tmp_path / "tweet_pool.csv", index=False)  # a pool that does hold labels: they must not leak
    rows = distillation.Stage.tweet_transfer(stage_stub(tmp_path, "placeholders"))
    assert rows["label"].tolist() == [-1, -1]
    assert rows["text"].tolist() == ["$AAPL up http", "@user : sales fell"]
    raw = distillation.Stage.tweet_transfer(stage_stub(tmp_path, "none"))
    assert raw["text"].tolist() == POOL["text"].tolist() and list(raw.columns) == ["text", "label", "source"]
