"""Data-parallel training under torchrun or accelerate launch: joining a group for one run, sharding, rank 0's values,
rank-0-only work."""
import datetime
import os
from contextlib import contextmanager

import torch

from lib.core.errors import FinCompressError
from lib.data.batching import LengthGroupedSampler

# The other ranks wait this long for rank 0's CPU-only work (stage 03 on a BERT-base teacher takes minutes).
RANK0_TIMEOUT_S = 4 * 3600


def dist_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) as set by torchrun or accelerate launch; (0, 0, 1) when run plainly."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("LOCAL_RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


_GROUPS = [0]  # process groups this process has made: each one gets its own port


@contextmanager
def data_parallel(device: torch.device, timeout_s: float = 1800):
    """Join the launcher's ranks for one training run (yields False when not launched data-parallel).

    The group is torn down afterwards because transformers' save_pretrained writes nothing on
    ranks > 0 while a group exists, and every rank keeps its own copy of the outputs.
    """
    import torch.distributed as dist
    rank, _, world = dist_env()
    if world == 1:
        yield False
        return
    port = os.environ.get("FINCOMPRESS_DDP_PORT")  # set by run_all: one port range per stage
    # A fresh port per group: rank 0's kernel hosts the store, and a reused one could hold stale keys.
    init = f"tcp://{os.environ.get('MASTER_ADDR', '127.0.0.1')}:{int(port) + _GROUPS[0]}" if port else "env://"
    _GROUPS[0] += 1
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=timeout_s))
    try:
        yield True
    finally:
        dist.destroy_process_group()


def shard_loader(loader):
    """Same dataset, batch size and collate, split across data-parallel ranks."""
    rank, _, world = dist_env()
    if isinstance(loader.sampler, LengthGroupedSampler):
        s = loader.sampler
        sampler = LengthGroupedSampler(s.lengths, s.batch_size, s.seed, rank=rank, world=world, mega=s.mega)
    else:
        sampler = torch.utils.data.distributed.DistributedSampler(loader.dataset, shuffle=False)
    return torch.utils.data.DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                                       collate_fn=loader.collate_fn, pin_memory=loader.pin_memory)


def from_rank0(values: list[float], device) -> list[float]:
    """Rank 0's copy of a few scalars, on every rank (inside an open group)."""
    t = torch.tensor(values, dtype=torch.float64, device=device)
    torch.distributed.broadcast(t, src=0)
    return t.tolist()


def rank0_value(value):
    """Rank 0's copy of any picklable value, on every rank; the value itself when not launched data-parallel.

    Joins its own (gloo) group, so it works between training runs, where no group is open.
    """
    if dist_env()[2] == 1:
        return value
    box = [value]
    with data_parallel(torch.device("cpu"), timeout_s=RANK0_TIMEOUT_S):
        torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def rank0_only(fn, *args, **kwargs):
    """fn(*args, **kwargs) on rank 0 alone, its result handed to every rank; the others wait meanwhile.

    For CPU-only work and CPU timing under a launcher: run on every rank it costs N times the CPU, and
    latencies taken while N ranks load the CPU at once are not batch-1 latencies. fn runs outside any
    group (it may save checkpoints or join its own); a failure on rank 0 stops every rank with one line.
    """
    rank, _, world = dist_env()
    if world == 1:
        return fn(*args, **kwargs)
    outcome, error = None, None
    if rank == 0:
        try:
            outcome = ("ok", fn(*args, **kwargs))
        except Exception as e:  # the other ranks must hear of it, or they wait until the timeout
            outcome, error = ("error", f"{type(e).__name__}: {e}"), e
    status, result = rank0_value(outcome)
    if error is not None:
        raise error
    if status == "error":
        raise FinCompressError(f"rank 0 failed in work that only rank 0 does ({result}); see rank 0's output")
    return result
