"""The study's Hugging Face Hub inputs for CI: a cache key made of their current revisions, and the three
data sets written out in the ../shared/data layout, so a runner without ../shared reads the same files.

    python scripts/hub_data.py key [--teacher ProsusAI/finbert]   # prints key=<hex> (for $GITHUB_OUTPUT)
    python scripts/hub_data.py fetch DIR                          # DIR/financial_phrasebank, fiqa_task1, ...
"""
import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runs from any working directory

from lib.core.cli import run_cli  # noqa: E402
from lib.core.errors import FinCompressError  # noqa: E402
from lib.core.files import atomic_dir, write_json  # noqa: E402
from lib.data.corpus import FIQA_HUB as FIQA, PHRASEBANK_HUB as PHRASEBANK, PHRASEBANK_ZIP  # noqa: E402,F401
from lib.data.corpus import fiqa_task1, hub_downloads, phrasebank_members, read_local  # noqa: E402

TWEETS = "zeroshot/twitter-financial-news-sentiment"
TWEETS_CSV = "sent_train.csv"


def hub_revisions(teacher: str | None = None) -> dict:
    """Current commit of each Hub repository the run reads (the teacher too when it is a Hub id)."""
    from huggingface_hub import HfApi
    api = HfApi()
    try:
        revs = {repo: api.dataset_info(repo).sha for repo in (PHRASEBANK, FIQA, TWEETS)}
        if teacher and "/" in teacher and not Path(teacher).exists():
            revs[teacher] = api.model_info(teacher).sha
    except Exception as e:  # offline, rate-limited, renamed: the same advice
        raise FinCompressError(f"cannot read revisions from the Hugging Face Hub ({type(e).__name__}); "
                               "run online, or use a local copy of the data with --data-dir") from None
    return revs


def cache_key(revs: dict) -> str:
    return hashlib.sha256(json.dumps(revs, sort_keys=True).encode()).hexdigest()[:20]


def write_layout(dest: Path, zip_path: Path, fiqa_rows: list[dict], tweets_csv: Path, revs: dict) -> dict:
    """Write the ../shared/data layout atomically; it replaces `dest` only if lib.data.corpus reads it back whole."""
    with atomic_dir(Path(dest)) as tmp:
        (tmp / "financial_phrasebank").mkdir()
        for name, data in phrasebank_members(zip_path).items():
            (tmp / "financial_phrasebank" / name).write_bytes(data)
        (tmp / "fiqa_task1").mkdir()
        for name, obj in fiqa_task1(fiqa_rows).items():
            (tmp / "fiqa_task1" / name).write_text(json.dumps(obj, indent=1), encoding="utf-8")
        (tmp / "twitter_financial_news").mkdir()
        shutil.copyfile(tweets_csv, tmp / "twitter_financial_news" / TWEETS_CSV)
        write_json(tmp / "REVISIONS.json", revs)
        rows, malformed, _ = read_local(tmp)  # whole files only: a short download is an error, nothing is replaced
        counts = {src: sum(r["source"] == src for r in rows) for src in ("phrasebank", "fiqa_headline", "fiqa_post")}
    return {"rows": counts, "malformed": malformed}


def fetch(dest: Path) -> dict:
    """Download the three data sets at their current revisions and write them to `dest`."""
    from huggingface_hub import hf_hub_download
    revs = hub_revisions()
    try:
        zip_path, rows = hub_downloads(revs)
        tweets = hf_hub_download(TWEETS, TWEETS_CSV, repo_type="dataset", revision=revs[TWEETS])
    except Exception as e:
        raise FinCompressError(f"download from the Hugging Face Hub failed ({type(e).__name__}: {e})".splitlines()[0]) from None
    return write_layout(dest, zip_path, rows, Path(tweets), revs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    key = sub.add_parser("key", help="print key=<hex> from the current revisions of the data sets (and teacher)")
    key.add_argument("--teacher", help="a Hub model id to include, e.g. ProsusAI/finbert")
    get = sub.add_parser("fetch", help="write the data sets to DIR in the ../shared/data layout")
    get.add_argument("dir", type=Path)
    args = p.parse_args(argv)
    if args.command == "key":
        revs = hub_revisions(args.teacher)
        print(json.dumps(revs, sort_keys=True), file=sys.stderr)
        print(f"key={cache_key(revs)}")
    else:
        summary = fetch(args.dir)
        print(f"hub_data: wrote {args.dir}: {summary['rows']} rows, malformed lines {summary['malformed']}")
    return 0


if __name__ == "__main__":
    run_cli(main, "hub_data")
