"""How the training loop reads its training split: `TrainRows`, held in memory (`InMemoryRows`) or
streamed from a file (`training.streaming.StreamedRows`), and the mean objective over a split.

The loop (`training.trainer`) asks only for an epoch's mini-batches, the number of steps an epoch
takes (the regulariser warm-up counts steps) and the mean objective over the rows; so one loop
trains on a table that fits in memory and on one that does not, on one rank or several.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import torch

from vae_anomaly.model.families.base import FamilyNetwork
from vae_anomaly.training.distributed import SINGLE, World


class TrainRows(Protocol):
    """The training split, as the loop reads it."""

    device: torch.device

    def __len__(self) -> int:
        """Rows in the split (all ranks together)."""
        ...

    def steps_per_epoch(self, local_batch: int, world: World) -> int:
        """Mini-batches of up to `local_batch` rows each rank takes per epoch (equal on every rank)."""
        ...

    def epoch(self, epoch: int, local_batch: int, generator: torch.Generator, world: World) -> Iterator[Any]:
        """This rank's mini-batches of one epoch, on `device`."""
        ...

    def mean_objective(self, network: FamilyNetwork, noise: torch.Tensor, size: int, world: World) -> float:
        """The family's objective averaged over every row of the split (same value on every rank)."""
        ...


def mean_elbo(network: FamilyNetwork, batch: Any, noise: torch.Tensor, size: int, world: World = SINGLE) -> float:
    """The family's validation objective (the ELBO for VAEs) averaged over the batch, nats per row.

    With several ranks each evaluates its contiguous shard and the sums are all-reduced, so every
    rank gets the same value (and early stopping stops every rank at the same epoch)."""
    network.eval()
    n = len(batch)
    if world.distributed:
        batch = batch.slice(*world.shard(n))
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(batch), size):
            total += float(network.objective(batch.slice(start, start + size), noise).sum())
    (total,) = world.sum(total)
    return total / max(n, 1)


def validation_objective(
    network: FamilyNetwork, batch: Any, noise: torch.Tensor, size: int, trim: float, world: World = SINGLE
) -> float:
    """What early stopping follows: `mean_elbo`, or with `trim` > 0 the mean over the validation
    rows without the worst `trim` share of them.

    Why: normal data sets hold rare rows with a value far from the rest (a column with kurtosis
    1,000); one such validation row can carry a negative ELBO of 80,000 nats while the others sit
    near 20, and then the mean follows that one row: it is best at the end of the warm-up, when the
    decoder variances are still wide, and training stops there with the bulk of the data barely
    fitted. The trimmed mean follows the bulk. Every rank evaluates every row (the validation split
    is small), so all ranks trim the same rows and stop at the same epoch."""
    if trim <= 0:
        return mean_elbo(network, batch, noise, size, world)
    network.eval()
    parts = []
    with torch.inference_mode():
        for start in range(0, len(batch), size):
            parts.append(network.objective(batch.slice(start, start + size), noise).double())
    if not parts:
        return 0.0
    values = torch.sort(torch.cat(parts)).values  # ascending: the worst rows first
    return float(values[math.floor(trim * len(values)) :].mean())


def epoch_order(n: int, epoch: int, generator: torch.Generator, seed: int, world: World) -> torch.Tensor:
    """This rank's rows of an epoch, in order. One process: a permutation from the training
    generator (unchanged since before DDP). Several: `DistributedSampler`'s shard of one seeded
    permutation shared by all ranks, padded so every rank has ceil(n / world) rows."""
    if not world.distributed:
        return torch.randperm(n, generator=generator)
    from torch.utils.data import DistributedSampler

    rows: Any = range(n)  # a Sized index set is all the sampler reads
    sampler: DistributedSampler[int] = DistributedSampler(
        rows, num_replicas=world.size, rank=world.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


class InMemoryRows:
    """A training split held as one batch of a kind (`x_in`, `select`, `slice`) on the device."""

    def __init__(self, batch: Any, seed: int):
        self.batch = batch
        self.seed = seed
        self.device: torch.device = batch.x_in.device

    def __len__(self) -> int:
        return len(self.batch)

    def steps_per_epoch(self, local_batch: int, world: World) -> int:
        return math.ceil(math.ceil(len(self.batch) / world.size) / local_batch)

    def epoch(self, epoch: int, local_batch: int, generator: torch.Generator, world: World) -> Iterator[Any]:
        order = epoch_order(len(self.batch), epoch, generator, self.seed, world).to(self.device)
        for start in range(0, len(order), local_batch):
            yield self.batch.select(order[start : start + local_batch])

    def mean_objective(self, network: FamilyNetwork, noise: torch.Tensor, size: int, world: World) -> float:
        return mean_elbo(network, self.batch, noise, size, world)
