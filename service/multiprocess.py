"""prometheus-client's multiprocess mode, for `serve --workers N` with N > 1.

Each worker writes its metric values into memory-mapped files in one shared directory
(`PROMETHEUS_MULTIPROC_DIR`, set before any worker starts); a scrape, answered by whichever worker
gets it, merges every file. Counters and histograms sum over all workers that ever ran, dead ones
included, so a restart loses no counts; "live" gauges carry a `pid` label and vanish with their
worker once `mark_process_dead` removes its files. Workers call it when they shut down, and a scrape
sweeps the files of workers that died without shutting down (killed, crashed).

The directory also holds one empty `worker-<pid>` marker per worker that started, so a worker can
tell whether it is one of the first N or a replacement (uvicorn's SIGHUP restart, or a crash).
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

logger = logging.getLogger(__name__)

LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")
WORKER_MARKER = "worker-{pid}"


def prepare_directory(path: Path) -> None:
    """Create `path`, or empty it: files left by an earlier run would be merged into this run's
    totals (their counters) and gauges (their pids)."""
    path.mkdir(parents=True, exist_ok=True)
    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def register_worker(path: Path, pid: int) -> int:
    """Leave this worker's marker and return how many workers have started in this directory,
    this one included. More than the configured number means this worker replaces another."""
    (path / WORKER_MARKER.format(pid=pid)).touch()
    return sum(1 for _ in path.glob(WORKER_MARKER.format(pid="*")))


def mark_dead(path: Path, pid: int) -> None:
    """Drop the live gauges of a worker that exits (its counters stay in the totals)."""
    mark_process_dead(pid, str(path))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def sweep_dead_workers(path: Path) -> list[int]:
    """mark_process_dead for each pid whose live-gauge files remain but whose process is gone
    (workers on one host share a pid namespace, which multiprocess mode assumes anyway)."""
    dead = set()
    for entry in path.iterdir():
        match = LIVE_GAUGE_FILE.match(entry.name)
        if match and int(match.group(1)) != os.getpid() and not _alive(int(match.group(1))):
            dead.add(int(match.group(1)))
    for pid in sorted(dead):
        mark_dead(path, pid)
        logger.info("removed the live gauges of worker %d, which is no longer running", pid)
    return sorted(dead)


class _WithoutRetired:
    """Drops NaN samples of the named gauge families. Multiprocess mode cannot delete a label set
    from a worker's file, so a label set that no longer applies (the previous model's info labels, a
    threshold the new model lacks) is set to NaN there and left out of the exposition here."""

    def __init__(self, inner: MultiProcessCollector, retirable: frozenset[str]):
        self.inner = inner
        self.retirable = retirable

    def collect(self) -> Iterable[Metric]:
        for metric in self.inner.collect():
            if metric.name in self.retirable:
                metric.samples = [s for s in metric.samples if not math.isnan(s.value)]
            yield metric


def exposition(path: Path, retirable: frozenset[str]) -> bytes:
    """The Prometheus text exposition of every worker's metrics."""
    sweep_dead_workers(path)
    registry = CollectorRegistry()
    registry.register(_WithoutRetired(MultiProcessCollector(None, str(path)), retirable))  # type: ignore[arg-type]
    return generate_latest(registry)
