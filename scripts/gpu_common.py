"""What the gpu_check steps share (scripts/gpu_check.py and scripts/gpu_check_train.py import it; neither imports
the other, so there is one CheckFailed class whichever file runs as __main__): the environment gpu_check.sh sets,
the deadline, the device, logged children, free ports."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CPU_MODE = os.environ.get("GPU_CHECK_CPU") == "1"
WORK = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpu_check"))
BUNDLE = Path(os.environ.get("GPU_CHECK_BUNDLE", REPO / ".gpu_bundle"))


class CheckFailed(Exception):
    """A check that did not hold; its message is the summary line's figures."""


def left_s() -> float:
    return float(os.environ.get("GPU_CHECK_DEADLINE", time.time() + 3600)) - time.time()


def device():
    import torch
    if CPU_MODE:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise CheckFailed("no CUDA device visible (GPU_CHECK_CPU=1 rehearses the check on the CPU)")
    return torch.device("cuda", 0)


def run_logged(cmd: list[str], log: Path, timeout: float, env: dict | None = None) -> int:
    """A child in its own session, output to `log`; stopped at the timeout (rc 124).

    SIGTERM first: torchrun starts its workers in sessions of their own and stops them only when asked
    (a killed torchrun leaves them waiting on their ports); notebook kernels exit with their parent."""
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            return proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            return 124


def free_ports(n: int) -> int:
    """The first of n consecutive free ports below the ephemeral range (where gloo's own sockets land)."""
    import random
    import socket
    for _ in range(100):
        base = random.randint(20000, 29000)
        try:
            for port in range(base, base + n):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise CheckFailed(f"no {n} consecutive free ports between 20000 and 29000")
