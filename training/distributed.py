"""Data-parallel training with PyTorch's `DistributedDataParallel`, launched by `torchrun`.

`torchrun --nproc_per_node N -m vae_anomaly.training.cli train …` starts N copies of the CLI with `RANK`,
`LOCAL_RANK`, `WORLD_SIZE` and a rendezvous in their environment; `World.from_environment` joins
that process group (gloo on the CPU, nccl with `cuda:{LOCAL_RANK}` on GPUs). A caller that has
already initialised a group (the tests, with a file store) is joined as it is. Without either,
`World` is the single process and the trainer takes exactly its single-process path, bit for bit.

What the trainer does with a world larger than one (see `training.trainer`):
- the network is wrapped in `DistributedDataParallel` and the loss is computed only through the
  wrapper's `forward()`: DDP synchronises gradients in the backward pass of what its `forward`
  returned, and a loss built from the bare module's methods would train every rank apart without
  any error;
- every rank holds the same rows and draws its shard of each epoch with a `DistributedSampler`
  (one seeded permutation shared by all ranks, padded so every rank runs the same number of steps);
- the batch size is global (split across ranks) and the regulariser warm-up counts global steps;
- the validation objective is summed over the ranks' shards and all-reduced, so every rank sees the
  same value and stops at the same epoch;
- each rank scores its block of the calibration split's scoring chunks and the score terms are
  all-gathered (`World.gather_rows`), so every rank holds the calibration scores one process would
  compute, bit for bit; rank 0 alone writes the artifact (`World.is_writer`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files and prints the report."""
        return self.rank == 0

    @classmethod
    def from_environment(cls, device: str = "auto") -> World:
        """The current process group, joining torchrun's (env://) when its variables are set.

        `device` picks the backend when this call creates the group: nccl for CUDA, gloo otherwise.
        """
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1 or not dist.is_available():
            return cls()
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        backend = "nccl" if device_is_cuda(device) else "gloo"
        dist.init_process_group(backend=backend)
        return cls(dist.get_rank(), dist.get_world_size(), local_rank)

    def device(self, requested: torch.device) -> torch.device:
        """On GPUs, each local rank gets its own device (`cuda:{LOCAL_RANK}`)."""
        if self.distributed and requested.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return requested

    def sum(self, *values: float | torch.Tensor) -> list[float]:
        """Sum scalars over all ranks (float64; one all-reduce). Identity for a single process."""
        if not self.distributed:
            return [float(v) for v in values]
        tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda(self.local_rank)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.cpu().tolist()

    def gather_rows(self, rows: np.ndarray) -> np.ndarray:
        """Every rank's `rows` (n_rank, ...), of one trailing shape, concatenated in rank order on
        every rank; the counts may differ (one all-gather of the counts, one of the rows padded to
        the largest). Values travel as float64 and come back in `rows`' dtype, so float32 and
        float64 arrays are returned bit for bit. Identity for a single process."""
        if not self.distributed:
            return rows
        local = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.float64))
        counts = [int(c) for c in self._all_gather(torch.tensor([local.shape[0]], dtype=torch.int64))]
        padded = torch.zeros((max(counts), *local.shape[1:]), dtype=torch.float64)
        padded[: local.shape[0]] = local
        parts = self._all_gather(padded)
        return np.concatenate([part[:count].numpy() for part, count in zip(parts, counts, strict=True)]).astype(
            rows.dtype, copy=False
        )

    def _all_gather(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """One tensor from each rank, on the CPU (nccl gathers on this rank's GPU)."""
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda(self.local_rank)
        parts = [torch.empty_like(tensor) for _ in range(self.size)]
        dist.all_gather(parts, tensor)
        return [part.cpu() for part in parts]

    def shard(self, n: int) -> tuple[int, int]:
        """This rank's contiguous [start, stop) of n rows (evaluation shards; every row once)."""
        return self.rank * n // self.size, (self.rank + 1) * n // self.size

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


SINGLE = World()
"""The single process: the default wherever a function takes a `World`."""


def device_is_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
