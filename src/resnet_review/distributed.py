"""Data-parallel training under ``torchrun``: the process group and each rank's share of a batch.

:class:`World` reads the environment ``torchrun`` sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); without it there is no world and :func:`~resnet_review.engine.fit` trains as a
single process, unchanged. Under it, the engine wraps each model in
:class:`~torch.nn.parallel.DistributedDataParallel` (NCCL on GPUs, gloo on the CPU) and every rank
draws the same permutation of the in-memory training set per epoch and takes every
``world_size``-th example of each global batch, so the ranks' shares together are the batch one
process would train on and DDP's averaged gradient is that batch's gradient. Batch norm: on CUDA
the layers become :class:`~torch.nn.SyncBatchNorm`, so the statistics are the global batch's; on
the CPU (gloo) PyTorch has no SyncBatchNorm and each rank normalises with its share's
statistics, so a model with batch norm trains close to, not exactly like, one process.

:mod:`resnet_review.train_model` trains one model of a profile this way from the shell.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# how long a rank waits in a collective for the others (a rank that died, a node that hangs)
# before it fails instead of waiting forever; torchrun tears the job down sooner when a rank exits
TIMEOUT_ENV = "RESNET_REVIEW_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class World:
    """The processes of one data-parallel job and this process's place in it."""

    rank: int
    size: int
    local_rank: int

    @classmethod
    def from_env(cls) -> World | None:
        """The job ``torchrun`` started this process in, with its process group joined (once);
        None outside ``torchrun``."""
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return None
        world = cls(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        if not dist.is_initialized():
            cuda = torch.cuda.is_available()
            if cuda:
                torch.cuda.set_device(world.local_rank)  # "cuda" below means this rank's GPU
            timeout = timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)))
            dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
        return world

    @property
    def leader(self) -> bool:
        """Rank 0, the one that writes checkpoints, metrics and logs."""
        return self.rank == 0

    def rank_batch(self, batch_size: int) -> int:
        """Each rank's share of a global batch; the shares must be equal for DDP's mean of the
        ranks' gradients to be the global batch's gradient."""
        if batch_size % self.size:
            raise ValueError(f"batch_size {batch_size} does not split evenly over {self.size} processes; "
                             f"use a multiple of {self.size}")
        return batch_size // self.size

    def shard(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's examples of a global batch: every ``size``-th, from its rank on."""
        return index[self.rank::self.size]

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` summed over the ranks (a new tensor)."""
        total = value.detach().clone()
        dist.all_reduce(total)
        return total

    def leaders(self, value):
        """Rank 0's ``value`` (any picklable object) on every rank: decisions that hang on a clock
        or on metrics only rank 0 computes are taken once, so all ranks take the same branch."""
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def check_same(self, what: str, value) -> None:
        """Raise on every rank when ranks disagree on ``value`` (e.g. the epoch each resumed from)."""
        values = [None] * self.size
        dist.all_gather_object(values, value)
        if len(set(map(repr, values))) > 1:
            raise RuntimeError(f"the processes disagree on {what}: {values} (by rank)")
