"""The serving process behind `vae-anomaly serve`: workers, metrics directory, logging, signals.

- One worker (the default): uvicorn runs the app in this process. SIGHUP reloads the model in place
  (service/reload.py); SIGTERM stops accepting, lets requests in flight finish, and exits 0.
- N workers: uvicorn's supervisor runs N worker processes on one socket. prometheus-client's
  multiprocess mode gets a directory emptied here before any worker starts, so /metrics (answered
  by any worker) adds up every worker. SIGHUP makes uvicorn (>= 0.51) replace the workers one at a
  time, each replacement up and verified before the worker it replaces is stopped gracefully;
  SIGTERM stops every worker gracefully and the supervisor exits 0.

`training/cli.py` calls `serve` through an import string, so `training` never imports `service`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import uvicorn

from vae_anomaly.service.logs import logging_config
from vae_anomaly.service.protocol import PROTOCOLS, httptools_available
from vae_anomaly.service.settings import Settings

logger = logging.getLogger(__name__)

APP = "vae_anomaly.service.app:create_app"


def multiprocess_directory(settings: Settings) -> Path:
    """`PROMETHEUS_MULTIPROC_DIR` when the operator set one (e.g. a tmpfs volume), else a fresh
    temporary directory (removed again when `serve` returns); emptied either way
    (service/multiprocess.py explains why)."""
    from vae_anomaly.service.multiprocess import prepare_directory

    path = settings.prometheus_multiproc_dir or Path(tempfile.mkdtemp(prefix="vae-anomaly-metrics-"))
    prepare_directory(path)
    return path


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    """uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler that
    was there before it started. With the default handler that kills the process (status 143, which
    orchestrators report as a failure); this one lets `serve` return 0 instead."""


def verify_artifact(settings: Settings) -> bool:
    """Load and warm up the artifact once before uvicorn starts; on failure print one line to stderr.

    A worker whose lifespan fails makes uvicorn exit 3 with the reason buried in a traceback, and
    with `--workers N` the supervisor exits 0 once its workers are gone: an orchestrator would read
    a broken artifact as a clean stop. Checked here, every worker count fails the same way: one
    line naming the file and the fault, exit status 2. SIGTERM keeps its default action meanwhile,
    so a stop during a slow load ends the process at once. Costs one more load at start-up."""
    from vae_anomaly.model.errors import ModelError
    from vae_anomaly.service.reload import load_verified

    try:
        detector = load_verified(settings.model_dir, settings.device)
    except ModelError as exc:
        print(f"vae-anomaly serve: cannot serve {settings.model_dir}: {exc}", file=sys.stderr, flush=True)
        return False
    del detector  # the workers load their own
    return True


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, which a container's cpuset narrows)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(settings: Settings) -> int:
    """`VAE_ANOMALY_TORCH_THREADS`, else the cores ÷ workers less one for the worker's event loop,
    at least 1.

    Every worker process has its own torch intra-op (OpenMP) pool, by default one thread per core:
    N workers then run N × cores spinning threads. On the 2-core VM, `--workers 2` served 4× fewer
    requests than one worker that way (342 against 1,351 req/s at 16 connections, issue 15). And a
    worker's event loop parses requests while its compute thread scores: an intra-op pool as wide as
    the worker's share of cores takes the loop's core. One worker on the loaded 2-core VM served
    single records at 155 req/s with 1 thread against 72 with 2 (c=1; 421 against 317 at c=16)."""
    if settings.torch_threads is not None:
        return settings.torch_threads
    return max(1, available_cores() // settings.workers - 1)


def server_stack(settings: Settings) -> tuple[str, str]:
    """uvicorn's (http, loop) for `VAE_ANOMALY_HTTP_STACK`: httptools + uvloop, or h11 + asyncio.
    "auto" takes httptools + uvloop when both are installed (they are dependencies; a minimal
    environment without them still serves, on the pure-Python stack)."""
    stack = settings.http_stack
    if stack == "auto":
        stack = "httptools" if httptools_available() and importlib.util.find_spec("uvloop") is not None else "h11"
    return (PROTOCOLS["httptools"], "uvloop") if stack == "httptools" else (PROTOCOLS["h11"], "asyncio")


def serve(model_dir: Path, host: str, port: int, workers: int | None = None, device: str | None = None) -> int:
    """Run the server until SIGTERM or SIGINT; returns the exit status. Arguments left at None come
    from the settings (`VAE_ANOMALY_WORKERS`, `VAE_ANOMALY_DEVICE`)."""
    # The workers build their own Settings from the environment: put the command line there.
    os.environ["VAE_ANOMALY_MODEL_DIR"] = str(model_dir)
    if device:
        os.environ["VAE_ANOMALY_DEVICE"] = device
    if workers is not None:
        os.environ["VAE_ANOMALY_WORKERS"] = str(workers)
    settings = Settings()
    # The workers apply it (the app's lifespan); OpenMP and BLAS pools outside torch read the variables.
    threads = threads_per_worker(settings)
    os.environ["VAE_ANOMALY_TORCH_THREADS"] = str(threads)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    settings = Settings()
    http, loop = server_stack(settings)
    if not verify_artifact(settings):
        return 2
    created: Path | None = None
    if settings.workers > 1:
        metrics_dir = multiprocess_directory(settings)
        created = metrics_dir if settings.prometheus_multiproc_dir is None else None
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    else:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one process: its own registry is the truth
    previous = signal.signal(signal.SIGTERM, _exit_quietly)
    try:
        uvicorn.run(
            APP,
            factory=True,
            host=host,
            port=port,
            workers=settings.workers,
            timeout_worker_healthcheck=settings.worker_healthcheck_seconds,
            timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
            limit_concurrency=settings.limit_concurrency,
            http=http,
            loop=loop,
            log_config=logging_config(settings.log_format, settings.log_level),
            log_level=settings.log_level,
            access_log=False,
        )
    finally:
        signal.signal(signal.SIGTERM, previous)
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
    return 0
