"""lib/parallel.py: rank-0-only work and rank 0's values under two CPU processes (gloo), as torchrun lays them out."""
import pytest

from lib import parallel
from tests.conftest import launch_ranks

RANK0_ONLY = """
import json, os, time
from pathlib import Path
from lib.parallel import rank0_only, rank0_value
rank, out = int(os.environ["RANK"]), Path(os.environ["OUT"])

def cpu_work(x):
    (out / f"ran_on_rank{rank}").touch()
    time.sleep(2)  # the other rank must wait for this, not run ahead
    return {"x": x, "rank": rank, "done_at": time.time()}

def broken():
    raise ValueError("boom")

got = rank0_only(cpu_work, 5)
received_at = time.time()
try:
    rank0_only(broken)
    error = None
except Exception as e:
    error = f"{type(e).__name__}: {e}"
json.dump({"got": got, "received_at": received_at, "error": error, "value": rank0_value({"rank": rank})},
          open(out / f"rank{rank}.json", "w"))
"""


def test_rank0_only_runs_once_and_every_rank_gets_its_result(tmp_path):
    r0, r1 = launch_ranks(RANK0_ONLY, tmp_path)
    assert (tmp_path / "ran_on_rank0").exists() and not (tmp_path / "ran_on_rank1").exists()
    assert r0["got"] == r1["got"] and r1["got"]["rank"] == 0 and r1["got"]["x"] == 5
    assert r1["received_at"] >= r1["got"]["done_at"]  # rank 1 waited for rank 0's work
    assert r0["error"] == "ValueError: boom"  # rank 0 keeps its own exception
    assert r1["error"].startswith("FinCompressError: rank 0 failed") and "ValueError: boom" in r1["error"]
    assert r0["value"] == r1["value"] == {"rank": 0}


def test_single_process_runs_the_work_itself(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert parallel.rank0_only(lambda x, y=0: x + y, 2, y=3) == 5
    assert parallel.rank0_value([1, 2]) == [1, 2]
    with pytest.raises(ValueError):
        parallel.rank0_only(lambda: int("x"))
