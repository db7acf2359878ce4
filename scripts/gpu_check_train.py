"""gpu_check steps that train: a short bf16 run of teacher and student on the real data, and a 2-rank DDP check."""
import json
import os
import sys
import time

from gpu_common import BUNDLE, CPU_MODE, WORK, CheckFailed, device, free_ports, left_s, run_logged
from lib.core.model_source import FINBERT

DDP_DIR = WORK / "ddp"
BS, ML = (16, 48) if CPU_MODE else (64, 128)  # --gpu's training batch (evaluation at twice it); the notebooks' max_length


def real_splits():
    """Stage 01's split of the carried copy of the real data (all of it; a sample in the CPU rehearsal)."""
    from lib.data.corpus import load_splits, prepare_data
    folder = WORK / "data"
    if not (folder / "train.csv").is_file():
        prepare_data(folder, str(BUNDLE / "data"), seed=42, max_rows=400 if CPU_MODE else 0)
    return load_splits(folder)


def warm_up(model, loader, dev, loss_fn, steps: int = 3) -> None:
    """Untimed forward and backward passes, no update: the first CUDA kernels, cuBLAS handles and autocast caches
    are built here (16 s for 20 steps on the first H100 check), not inside the timed epoch."""
    import torch
    from lib.data.batching import autocast, to_device
    model.to(dev).train()
    for _, batch in zip(range(steps), loader):
        with autocast(dev, dev.type == "cuda"):
            loss, _ = loss_fn(model, to_device(batch, dev))
        loss.backward()
    model.zero_grad(set_to_none=True)
    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed_fit(model, rows, val_loader, dev, tok, **kw) -> dict:
    """One epoch of lib.modeling.train.fit on `rows`: train sentences/s (the val pass timed apart and left out), peak memory."""
    import torch
    from lib.data.batching import make_loader
    from lib.measure import bench
    from lib.modeling import train
    loader = make_loader(rows, tok, BS, ML, shuffle=True, seed=42)
    warm_up(model, loader, dev, kw.get("loss_fn", train.cross_entropy_loss))
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(dev)
    start = time.perf_counter()
    result = train.fit(model, loader, val_loader, dev, epochs=1, patience=1, amp=dev.type == "cuda", **kw)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    train.evaluate(model, val_loader, dev, amp=dev.type == "cuda")
    train_s = fit_s - (time.perf_counter() - start)
    peak = (f"peak GPU memory {torch.cuda.max_memory_allocated(dev) / 2**30:.1f} GiB" if dev.type == "cuda"
            else f"peak RSS {bench.peak_rss_mb() / 1024:.1f} GiB")
    row = result["history"][0]
    if not row["train_loss"] == row["train_loss"]:  # NaN
        raise CheckFailed(f"training loss is {row['train_loss']}")
    return {"sps": len(rows) / train_s, "peak": peak, "loss": row["train_loss"], "val_f1": row["val_f1"]}


def step_train() -> str:
    """Teacher (FinBERT offline, SDPA, bf16) then a 6-layer KD student, one epoch each on real sentences."""
    import torch
    from lib.data.batching import make_loader
    from lib.modeling import losses, train
    from lib.modeling.device import set_seed
    from lib.techniques import distill
    dev = device()
    splits = real_splits()
    rows = splits["train"].head(96 if CPU_MODE else 1280)
    set_seed(42)
    teacher, tok = train.load_classifier(FINBERT, train.attention_for(dev))
    val = make_loader(splits["val"], tok, 2 * BS, ML)
    t = timed_fit(teacher, rows, val, dev, tok, lr=3e-5, desc="teacher")
    student, mapping = distill.build_student(teacher, 0)
    logits = train.logits_over(teacher, make_loader(rows, tok, 2 * BS, ML), dev, amp=dev.type == "cuda")["logits"].to(dev)
    teacher.cpu()  # the student's peak memory is its own
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    s = timed_fit(student, rows, val, dev, tok, lr=1e-4, loss_fn=losses.precomputed_kd_loss(logits, 0.5, 2.0),
                  desc="student")
    attn = teacher.config._attn_implementation
    return (f"{len(rows)} real train sentences, {'bf16' if dev.type == 'cuda' else 'fp32'}, {attn} attention; "
            f"teacher {teacher.config.num_hidden_layers} layers: {t['sps']:.0f} sent/s, {t['peak']}, loss "
            f"{t['loss']:.3f}; student layers {mapping}: {s['sps']:.0f} sent/s, {s['peak']}, loss {s['loss']:.3f}")


def step_ddp() -> str:
    """Two ranks (NCCL on 2+ GPUs, else gloo sharing one GPU; gloo on CPU in the rehearsal) train and prune with
    lib.modeling.train.fit and lib.techniques.prune.prune_step; both must end with identical weights and pruned shapes."""
    import shutil
    import torch
    from safetensors.torch import load_file
    real_splits()  # written once here, before the ranks read it
    shutil.rmtree(DDP_DIR, ignore_errors=True)
    DDP_DIR.mkdir(parents=True)
    port = free_ports(8)  # torchrun's store, then one per process group (fit, the pruning broadcast)
    env = {**os.environ, "FINCOMPRESS_DDP_PORT": str(port + 1)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", "scripts/gpu_check.py", "ddp-worker"]
    rc = run_logged(cmd, WORK / "logs" / "ddp_ranks.log", min(left_s() - 5, 240), env)
    if rc:
        raise CheckFailed(f"torchrun exit {rc}{' (timed out)' if rc == 124 else ''}; log {WORK / 'logs' / 'ddp_ranks.log'}")
    info = [json.loads((DDP_DIR / f"rank{r}.json").read_text()) for r in range(2)]
    a, b = (load_file(DDP_DIR / f"rank{r}.safetensors") for r in range(2))
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    if info[0]["world"] != 2 or a.keys() != b.keys() or differ or info[0]["spec"] != info[1]["spec"]:
        raise CheckFailed(f"ranks differ: {len(differ)} tensors, specs equal {info[0]['spec'] == info[1]['spec']}")
    return (f"world 2 via {info[0]['backend']}; {info[0]['steps']} steps per rank; {len(a)} tensors identical after "
            f"training and pruning ({info[0]['heads_left']} heads left)")


def ddp_worker() -> None:
    """One rank of step_ddp: the project's fit (DDP) and prune_step (rank 0's choice broadcast) on real data."""
    import torch
    from safetensors.torch import save_file
    from lib.data.batching import make_loader
    from lib.data.corpus import load_splits
    from lib.modeling import train
    from lib.modeling.device import set_seed
    from lib.modeling.distributed import dist_env
    from lib.techniques import prune
    rank, local, world = dist_env()
    # As run_all's join_launcher does: each group is hosted on its own port by rank 0, not by torchrun's agent.
    os.environ.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    dev, backend = torch.device("cpu"), "gloo on CPU"
    if not CPU_MODE and torch.cuda.device_count() >= world:
        dev, backend = torch.device("cuda", local), "NCCL"  # what lib.modeling.distributed.data_parallel picks on CUDA
        torch.cuda.set_device(dev)
    elif not CPU_MODE:  # NCCL refuses two ranks on one GPU: the same DDP code over gloo, CUDA tensors
        dev, backend = torch.device("cuda", 0), "gloo sharing one GPU"
        real_init = torch.distributed.init_process_group
        torch.distributed.init_process_group = lambda _backend=None, **kw: real_init("gloo", **kw)
    set_seed(42)
    model, tok = train.load_classifier(FINBERT, train.attention_for(dev))
    splits = load_splits(WORK / "data")
    loader = make_loader(splits["train"].head(256), tok, 16 if CPU_MODE else 32, 64, shuffle=True, seed=42)
    val = make_loader(splits["val"].head(64), tok, 64, 64)
    amp = dev.type == "cuda"
    result = train.fit(model, loader, val, dev, epochs=1, lr=3e-5, patience=1, amp=amp, desc=f"rank {rank}")
    heads = len(prune.layers(model)) * model.config.num_attention_heads
    prune.prune_step(model, prune.taylor_importance(loader, dev, 2, amp), heads // 4, 0)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, DDP_DIR / f"rank{rank}.safetensors")
    (DDP_DIR / f"rank{rank}.json").write_text(json.dumps({
        "backend": backend, "world": result["world_size"], "steps": -(-len(loader) // world),
        "spec": prune.get_spec(model), "heads_left": sum(prune.unit_counts(model)["heads"])}))
