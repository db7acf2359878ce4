"""Training curves: the training loss (mean over each logging interval) and learning rate, per optimizer step."""
import math
from pathlib import Path

import torch

from lib.core.params import check_range
from lib.modeling.distributed import from_rank0

POINTS_PER_EPOCH = 40  # at most this many logged intervals per epoch: a readable curve, a CSV of a few hundred rows


def interval(steps_per_epoch: int, every: int = 0) -> int:
    """Optimizer steps per logged point: `every` if set, else every step for short epochs and at most
    POINTS_PER_EPOCH points per epoch (20 or more once an epoch has 40 steps)."""
    check_range("log_every", every, 0)
    return every or max(1, math.ceil(steps_per_epoch / POINTS_PER_EPOCH))


class StepLog:
    """Collects (step, epoch, loss, lr) rows every `every` optimizer steps; an epoch's last interval may be shorter.
    step counts optimizer steps from 1 across epochs; loss is the interval's mean, lr the one its last step used."""

    def __init__(self, every: int):
        self.every, self.step, self.rows = every, 0, []
        self._closed, self._sum, self._n, self._k, self._lr = [], 0.0, 0, 0, 0.0

    def record(self, loss, size: int, lr: float) -> None:
        """One optimizer step: its batch-mean loss (a tensor, summed on its device: no host sync), batch size, lr."""
        self.step, self._lr = self.step + 1, lr
        self._sum = self._sum + loss.detach().double() * size
        self._n, self._k = self._n + size, self._k + 1
        if self._k == self.every:
            self._close()

    def _close(self) -> None:
        self._closed.append((self.step, self._sum / max(1, self._n), self._lr))
        self._sum, self._n, self._k = 0.0, 0, 0

    def end_epoch(self, epoch: int, group_device=None) -> list[dict]:
        """The epoch's rows, its losses read from the device in one go; under DDP (group_device set) rank 0's."""
        if self._k:
            self._close()
        if not self._closed:
            return []
        losses = torch.stack([v for _, v, _ in self._closed]).tolist()
        if group_device is not None:
            losses = from_rank0(losses, group_device)
        rows = [{"step": s, "epoch": epoch, "loss": loss, "lr": lr} for (s, _, lr), loss in zip(self._closed, losses)]
        self._closed = []
        self.rows += rows
        return rows


def steps_path(log_path: Path) -> Path:
    """Where a training log's per-step rows go: beside it, <name>_steps.csv."""
    return Path(log_path).with_name(f"{Path(log_path).stem}_steps.csv")

