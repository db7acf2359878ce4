"""lib/data/ood.py: the tweet split's rules (dedup, conflicts, in-domain overlap, stratified, seeded, disjoint, no pool labels)."""
import shutil

import pandas as pd

from lib.data import corpus, ood


def tweets(n_per_class=40):
    """Synthetic tweets in the released label convention (0 bearish, 1 bullish, 2 neutral)."""
    return pd.DataFrame([{"text": f"$T{i} tweet {lab} number {i}", "label": lab}
                         for lab in (0, 1, 2) for i in range(n_per_class * (3 if lab == 2 else 1))])


def test_dedup_key_ignores_urls_ellipsis_case_and_spaces():
    assert ood.dedup_key("Stock UP  https://t.co/x\u2026") == ood.dedup_key("stock up") == "stock up"


def test_clean_drops_duplicates_conflicts_and_indomain_text():
    raw = pd.DataFrame({"text": ["A up http://x", "a up", "B", "b", "C in domain", "D"], "label": [2, 2, 0, 2, 1, 1]})
    kept, s = ood.clean(raw, ["c  IN domain"])
    assert kept["text"].tolist() == ["A up http://x", "D"]
    assert (s["duplicate_rows_removed"], s["conflicting_keys_dropped"], s["indomain_overlap_dropped"]) == (2, 1, 1)


def test_split_is_stratified_seeded_and_disjoint():
    raw = tweets().assign(label=lambda d: d["label"].map(ood.TWEET_LABEL_MAP))
    kept, _ = ood.clean(raw, [])
    parts = ood.split(kept, seed=3)
    again = ood.split(kept, seed=3)
    assert all(parts[k]["text"].tolist() == again[k]["text"].tolist() for k in parts)
    assert ood.split(kept, seed=4)["ood_val"]["text"].tolist() != parts["ood_val"]["text"].tolist()
    keys = [set(p["text"]) for p in parts.values()]
    assert not (keys[0] & keys[1] or keys[0] & keys[2] or keys[1] & keys[2])
    assert sum(len(p) for p in parts.values()) == len(kept)
    for p in parts.values():  # stratified: each part keeps the 1:3:1 class mix
        shares = p["label"].value_counts(normalize=True)
        assert abs(shares[1] - 0.6) < 0.05 and abs(shares[0] - 0.2) < 0.05


def test_write_ood_pool_has_no_labels_and_loaders_read_back(tmp_path):
    src = tmp_path / "src" / ood.TWEETS
    src.parent.mkdir(parents=True)
    tweets().to_csv(src, index=False)
    out = tmp_path / "out"
    out.mkdir()
    s = ood.write_ood(out, str(tmp_path / "src"), [], seed=1, max_rows=100)
    assert sum(s["sizes"].values()) == 100
    assert list(pd.read_csv(out / "tweet_pool.csv").columns) == ["text"]
    sets = ood.load_ood_sets(out)
    assert set(sets) == {"ood_val", "ood_test"} and list(sets["ood_val"].columns) == ["text", "label", "label_name"]
    # bearish -> negative, bullish -> positive, whatever the split
    both = pd.concat(sets.values())
    assert set(both[both["text"].str.contains("tweet 1 ")]["label_name"]) == {"positive"}
    assert len(ood.load_tweet_pool(out)) == s["sizes"]["tweet_pool"]
    (out / "ood_test.csv").unlink()
    assert ood.load_ood_sets(out) == {}


def test_missing_tweets_folder_is_one_note_and_no_files(tmp_path, capsys):
    s = ood.write_ood(tmp_path, str(tmp_path), [], seed=1)
    assert "absent" in s and capsys.readouterr().out.count("\n") == 1
    assert ood.load_ood_sets(tmp_path) == {} and ood.load_tweet_pool(tmp_path) == []


def test_prepare_data_writes_the_reference_split(tmp_path, data_dir):
    s = corpus.prepare_data(tmp_path / "d", str(data_dir), seed=42)["ood"]
    assert s["rows_read"] == 9543 and s["rows_kept"] == 9430
    assert s["sizes"] == {"tweet_pool": 3772, "ood_val": 2829, "ood_test": 2829}
    sets = ood.load_ood_sets(tmp_path / "d")
    splits = corpus.load_splits(tmp_path / "d")
    indomain = set(pd.concat(splits.values())["text"].map(ood.dedup_key))
    pool = {ood.dedup_key(t) for t in ood.load_tweet_pool(tmp_path / "d")}
    for df in sets.values():
        assert not set(df["text"].map(ood.dedup_key)) & (indomain | pool)


def test_prepare_data_without_tweets_leaves_ood_absent(tmp_path, data_dir):
    local = tmp_path / "data"
    shutil.copytree(data_dir, local, ignore=shutil.ignore_patterns("twitter_financial_news"))
    s = corpus.prepare_data(tmp_path / "d", str(local), seed=42, max_rows=120)
    assert "absent" in s["ood"] and ood.load_ood_sets(tmp_path / "d") == {}
