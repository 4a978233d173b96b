"""How many intra-op CPU threads a model's work should use, chosen by the size of that work.

Why: a tiny MLP step is a few hundred microseconds of arithmetic spread over dozens of small
kernels; splitting each kernel over threads costs more in hand-offs than it saves, and on a loaded
machine a thread that waits for a busy core stalls the whole step. Measured on the shared 2-core VM
(load average about 6, torch 2.13.0+cpu, 2 December 2026): the demo-sized VAE (21 columns, batch 48)
took 10 ms per Adam step on one thread and 159 ms on two; the largest default tabular VAE (width
256, batch 512) 159 ms against 657 ms. So work below `FLOPS_PER_THREAD` per forward pass runs on
one thread, and each further thread needs that much more work. The choice depends only on the
model and the batch (never on the machine's load), so a seeded run picks the same threads every time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

FLOPS_PER_THREAD = 1e9
"""Forward-pass floating-point operations per step that justify one more intra-op thread. Every
default tabular model stays below it (the largest, width 256 at batch 512, is about 1.5e8)."""


def forward_flops(forward: Callable[[], Any]) -> int:
    """Floating-point operations of one call of `forward`, counted by torch's FLOP counter (matrix
    products and convolutions, the work that threads can split)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        forward()
    return int(counter.get_total_flops())


def available_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_for(flops: int, cores: int | None = None) -> int:
    """Intra-op threads for work of `flops` per forward pass: one per `FLOPS_PER_THREAD`, at least
    one, at most the available cores."""
    limit = cores if cores is not None else available_cores()
    return int(max(1, min(limit, flops // FLOPS_PER_THREAD)))


@contextmanager
def torch_threads(threads: int) -> Iterator[int]:
    """Run the block with `threads` intra-op threads, then restore the previous setting (so a
    benchmark that trains and then runs other torch code leaves them as it found them)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield threads
    finally:
        torch.set_num_threads(before)
