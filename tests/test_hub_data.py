"""scripts/hub_data.py: the Hub's copies of the data sets become the ../shared/data layout, or nothing is written."""
import json
import zipfile
from pathlib import Path

import pytest

from lib.core.errors import FinCompressError
from lib.data.corpus import parse_fiqa, read_local
from tests.conftest import load_script


def phrasebank_zip(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for level in ("AllAgree", "75Agree", "66Agree", "50Agree"):
            zf.writestr(f"FinancialPhraseBank-v1.0/Sentences_{level}.txt",
                        "Profit rose .@positive\nSales fell .@negative\nThe firm is in Oslo .@neutral\n")
        zf.writestr("FinancialPhraseBank-v1.0/License.txt", "CC BY-NC-SA 3.0")
    return path


@pytest.fixture
def tiny_release(monkeypatch):
    """The synthetic files below are whole releases: 3 sentences per PhraseBank file, FiQA 1 headline and 1 post."""
    from lib.data import corpus
    monkeypatch.setattr(corpus, "EXPECTED", {**{name: 3 for name in corpus.PHRASEBANK_FILES.values()},
                                           **{name: 1 for name in corpus.FIQA_FILES.values()}})


def test_hub_rows_become_the_local_layout(tmp_path, tiny_release):
    hub = load_script("hub_data")
    rows = [{"sentence": "Shell cuts jobs", "target": "Shell", "aspect": "x", "score": 0.5, "type": "headline"},
            {"sentence": "Shell cuts jobs", "target": "BP", "aspect": "y", "score": -0.1, "type": "headline"},
            {"sentence": "$AAPL to the moon", "target": "AAPL", "aspect": "z", "score": 0.8, "type": "post"}]
    tweets = tmp_path / "sent_train.csv"
    tweets.write_text("text,label\n$TSLA up,1\n")
    summary = hub.write_layout(tmp_path / "data", phrasebank_zip(tmp_path / "pb.zip"), rows, tweets, {"r": "1"})
    assert summary["rows"] == {"phrasebank": 3, "fiqa_headline": 1, "fiqa_post": 1}
    # One entry per sentence, its targets' scores averaged as in the original task-1 files.
    headline, bad = parse_fiqa(tmp_path / "data" / "fiqa_task1" / "task1_headline_ABSA_train.json", "fiqa_headline")
    assert bad == 0 and headline[0]["score"] == pytest.approx(0.2)
    assert len(read_local(tmp_path / "data")[0]) == 5
    assert (tmp_path / "data" / "twitter_financial_news" / "sent_train.csv").read_text() == tweets.read_text()
    assert (tmp_path / "data" / "financial_phrasebank" / "License.txt").is_file()


def test_unexpected_hub_shape_writes_nothing(tmp_path):
    hub = load_script("hub_data")
    rows = [{"sentence": "a", "target": "t", "aspect": "x", "score": 0.5, "type": "tweet"}]
    tweets = tmp_path / "t.csv"
    tweets.write_text("text,label\n")
    with pytest.raises(FinCompressError, match="headline or post"):
        hub.write_layout(tmp_path / "data", phrasebank_zip(tmp_path / "pb.zip"), rows, tweets, {})
    assert not (tmp_path / "data").exists()
    assert hub.cache_key({"a": "1", "b": "2"}) == hub.cache_key({"b": "2", "a": "1"}) != hub.cache_key({"a": "1", "b": "3"})


def test_a_short_hub_download_is_an_error_and_writes_nothing(tmp_path, tiny_release):
    hub = load_script("hub_data")
    rows = [{"sentence": "Up", "target": "t", "aspect": "a", "score": 0.4, "type": "post"}]  # no headline at all
    tweets = tmp_path / "t.csv"
    tweets.write_text("text,label\n")
    with pytest.raises(FinCompressError, match="task1_headline_ABSA_train.json has no valid lines"):
        hub.write_layout(tmp_path / "data", phrasebank_zip(tmp_path / "pb.zip"), rows, tweets, {})
    assert not (tmp_path / "data").exists()


def test_fetch_reads_each_data_set_at_the_revision_it_keys_on(tmp_path, monkeypatch, tiny_release):
    import datasets
    import huggingface_hub
    hub = load_script("hub_data")
    files = {hub.PHRASEBANK_ZIP: phrasebank_zip(tmp_path / "pb.zip"), hub.TWEETS_CSV: tmp_path / "sent_train.csv"}
    files[hub.TWEETS_CSV].write_text("text,label\n$TSLA up,1\n")
    calls = []

    class Api:
        def dataset_info(self, repo):
            return type("Info", (), {"sha": f"sha-of-{repo}"})

    def download(repo, filename, repo_type, revision):
        calls.append((repo, revision))
        return str(files[filename])

    def load(repo, revision):
        calls.append((repo, revision))
        return {"train": [{"sentence": "Up", "target": "t", "aspect": "a", "score": 0.4, "type": "post"}],
                "test": [{"sentence": "Down", "target": "t", "aspect": "a", "score": -0.4, "type": "headline"}]}

    monkeypatch.setattr(huggingface_hub, "HfApi", Api)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    monkeypatch.setattr(datasets, "load_dataset", load)
    summary = hub.fetch(tmp_path / "data")
    assert summary["rows"] == {"phrasebank": 3, "fiqa_headline": 1, "fiqa_post": 1}  # every split is used
    assert sorted(calls) == sorted((repo, f"sha-of-{repo}") for repo in (hub.PHRASEBANK, hub.FIQA, hub.TWEETS))
    assert json.loads((tmp_path / "data" / "REVISIONS.json").read_text())[hub.FIQA] == f"sha-of-{hub.FIQA}"
