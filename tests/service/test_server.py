"""What `serve` hands to uvicorn: workers from the flag or VAE_ANOMALY_WORKERS, a fresh metrics
directory for several workers, our logging without uvicorn's access log."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import vae_anomaly.service.server
from vae_anomaly.service.multiprocess import prepare_directory, register_worker, sweep_dead_workers

SERVE_VARIABLES = (
    *("VAE_ANOMALY_MODEL_DIR", "VAE_ANOMALY_DEVICE", "VAE_ANOMALY_WORKERS", "PROMETHEUS_MULTIPROC_DIR"),
    *("VAE_ANOMALY_TORCH_THREADS", "VAE_ANOMALY_HTTP_STACK", *vae_anomaly.service.server.THREAD_VARIABLES),
)
"""What `serve` reads or sets in the environment (for its workers): cleared around each test."""


@pytest.fixture
def captured(monkeypatch) -> dict:
    calls: dict = {}

    def fake_run(app, **kwargs):
        calls.update(kwargs, app=app, metrics_dir=os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        if calls["metrics_dir"]:
            calls["files_at_start"] = sorted(p.name for p in Path(calls["metrics_dir"]).iterdir())

    monkeypatch.setattr(vae_anomaly.service.server.uvicorn, "run", fake_run)
    # These tests are about what reaches uvicorn; the artifact check before it: test_serve_refusals.py
    monkeypatch.setattr(vae_anomaly.service.server, "verify_artifact", lambda settings: True)
    for name in SERVE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield calls
    for name in SERVE_VARIABLES:
        os.environ.pop(name, None)


def test_one_worker_by_default_without_multiprocess_metrics(captured, tmp_path):
    assert vae_anomaly.service.server.serve(tmp_path, "127.0.0.1", 8000) == 0
    assert captured["workers"] == 1 and captured["metrics_dir"] is None
    assert captured["app"] == "vae_anomaly.service.app:create_app" and captured["factory"] is True
    assert captured["access_log"] is False
    assert captured["log_config"]["formatters"]["default"]["()"].endswith("JsonFormatter")
    assert captured["timeout_worker_healthcheck"] == 30


def test_workers_from_the_environment_get_a_fresh_metrics_directory(captured, tmp_path, monkeypatch):
    monkeypatch.setenv("VAE_ANOMALY_WORKERS", "3")
    assert vae_anomaly.service.server.serve(tmp_path, "0.0.0.0", 8000) == 0
    assert captured["workers"] == 3
    assert captured["files_at_start"] == []
    assert not Path(captured["metrics_dir"]).exists()  # serve made it, serve removes it


def test_an_operator_metrics_directory_is_emptied_and_kept(captured, tmp_path, monkeypatch):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_123.db").write_bytes(b"stale")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    vae_anomaly.service.server.serve(tmp_path, "127.0.0.1", 8000, workers=2)
    assert captured["workers"] == 2 and captured["metrics_dir"] == str(metrics_dir)
    assert captured["files_at_start"] == []
    assert metrics_dir.is_dir()


def test_worker_markers_and_dead_worker_sweep(tmp_path):
    prepare_directory(tmp_path)
    assert register_worker(tmp_path, 101) == 1
    assert register_worker(tmp_path, 102) == 2
    dead_pid = 2**22 + 12345  # above Linux's default pid_max: no such process
    (tmp_path / f"gauge_liveall_{dead_pid}.db").write_bytes(b"")
    (tmp_path / f"gauge_liveall_{os.getpid()}.db").write_bytes(b"")
    (tmp_path / f"counter_{dead_pid}.db").write_bytes(b"")
    assert sweep_dead_workers(tmp_path) == [dead_pid]
    assert not (tmp_path / f"gauge_liveall_{dead_pid}.db").exists()
    assert (tmp_path / f"counter_{dead_pid}.db").exists()  # its counts stay in the totals
    assert (tmp_path / f"gauge_liveall_{os.getpid()}.db").exists()


def test_serve_restores_the_sigterm_handler(captured, tmp_path):
    import signal

    before = signal.getsignal(signal.SIGTERM)
    vae_anomaly.service.server.serve(tmp_path, "127.0.0.1", 8000)
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize(
    ("cores", "workers", "threads"), [(2, 1, 1), (2, 2, 1), (16, 3, 4), (2, 4, 1), (8, 1, 7), (16, 4, 3)]
)
def test_workers_get_the_cores_divided_among_them(captured, tmp_path, monkeypatch, cores, workers, threads):
    """Before: every worker's torch and OpenMP pools took all cores (2 workers on 2 cores served 4×
    less than one); now each worker gets cores ÷ workers threads less one for its event loop, at
    least one."""
    monkeypatch.setattr(vae_anomaly.service.server, "available_cores", lambda: cores)
    assert vae_anomaly.service.server.serve(tmp_path, "127.0.0.1", 8000, workers=workers) == 0
    assert os.environ["VAE_ANOMALY_TORCH_THREADS"] == str(threads)
    assert all(os.environ[name] == str(threads) for name in vae_anomaly.service.server.THREAD_VARIABLES)


def test_torch_threads_setting_overrides_the_division(captured, tmp_path, monkeypatch):
    monkeypatch.setattr(vae_anomaly.service.server, "available_cores", lambda: 8)
    monkeypatch.setenv("VAE_ANOMALY_TORCH_THREADS", "3")
    assert vae_anomaly.service.server.serve(tmp_path, "127.0.0.1", 8000, workers=2) == 0
    assert os.environ["VAE_ANOMALY_TORCH_THREADS"] == "3" and os.environ["OMP_NUM_THREADS"] == "3"


def test_the_lifespan_applies_the_threads_and_the_switch_interval(settings):
    """The worker side of the two settings: torch's intra-op threads and Python's GIL switch interval."""
    import sys

    import torch
    from fastapi.testclient import TestClient

    from vae_anomaly.service.app import create_app

    before = torch.get_num_threads(), sys.getswitchinterval()
    update = {"torch_threads": 3, "switch_interval_seconds": 0.002}
    try:
        with TestClient(create_app(settings.model_copy(update=update))) as client:
            compute = client.app.state.service.compute_thread  # type: ignore[attr-defined]
            assert compute.submit(torch.get_num_threads).result() == 3  # OpenMP's count is per thread
            assert sys.getswitchinterval() == pytest.approx(0.002)
    finally:
        torch.set_num_threads(before[0])
        sys.setswitchinterval(before[1])


def test_httptools_and_uvloop_by_default_h11_when_asked(captured, tmp_path, monkeypatch):
    """Before: uvicorn ran h11 and asyncio (its pure-Python stack) unless httptools happened to be
    installed; now the `uvicorn[standard]` stack is a dependency and the default, h11 a setting."""
    from uvicorn.importer import import_from_string

    from vae_anomaly.service.protocol import H11ReadTimeoutProtocol, HttpToolsReadTimeoutProtocol

    assert vae_anomaly.service.server.serve(tmp_path, "127.0.0.1", 8000) == 0
    assert (captured["loop"], import_from_string(captured["http"])) == ("uvloop", HttpToolsReadTimeoutProtocol)
    monkeypatch.setenv("VAE_ANOMALY_HTTP_STACK", "h11")
    assert vae_anomaly.service.server.serve(tmp_path, "127.0.0.1", 8000) == 0
    assert (captured["loop"], import_from_string(captured["http"])) == ("asyncio", H11ReadTimeoutProtocol)
