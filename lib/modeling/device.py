"""The process's torch setup, chosen once: the seed, the device, the run metadata with both, and torch's noise kept
out of reports."""
import io
import os
import platform
import random
import warnings
from contextlib import contextmanager, redirect_stdout

import numpy as np
import torch

from lib.core.errors import FinCompressError
from lib.core.runinfo import cpu_flags, cpu_name, git_commit, package_versions
from lib.modeling.distributed import dist_env


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def resolve_device(gpu: bool) -> torch.device:
    """The one place the device is chosen: --gpu means CUDA (this rank's GPU under a launcher), else CPU."""
    if not gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FinCompressError("--gpu was given but no CUDA device is visible; drop --gpu to run on the CPU")
    _, local_rank, world = dist_env()
    if world > 1:
        if local_rank >= torch.cuda.device_count():
            raise FinCompressError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) visible; "
                                   "launch at most one process per GPU (torchrun --nproc_per_node)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cuda")


def run_info(seed: int, device: torch.device, params: dict | None = None) -> dict:
    """Everything needed to say where and how a number was produced."""
    hw = {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cpu_count": os.cpu_count(),
          "torch_threads": torch.get_num_threads(), "platform": platform.platform()}
    if device.type == "cuda":
        hw["gpu"] = torch.cuda.get_device_name(device)
    return {"seed": seed, "device": str(device), "git_commit": git_commit(), "versions": package_versions(),
            "hardware": hw, "params": params or {}}



@contextmanager
def quiet():
    """torch.ao.quantization and the legacy quantized-tensor API warn that they are deprecated (still the
    only eager INT8 CPU path in torch 2.13); the ONNX exporter prints progress. Neither helps a report."""
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield
