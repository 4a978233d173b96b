"""A real `vae-anomaly serve` in a subprocess, for what a TestClient cannot show: several worker
processes, signals, exit statuses, the bytes on the wire. Waits are bounded by deadlines, never
asserted on."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_TOKEN, make_tiny_columns
from vae_anomaly.model.artifact import write_manifest

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_SECONDS = 90.0  # generous: worker start-up on a busy 2-core machine; only ever a failure bound


def tiny_records(n: int, seed: int) -> list[dict]:
    """Normal records drawn like the tiny model's training data (NaN / None become null)."""
    columns = make_tiny_columns(n, seed=seed)
    records = []
    for i in range(n):
        record = {}
        for name, values in columns.items():
            value = values[i]
            if isinstance(value, float | np.floating):
                record[name] = None if np.isnan(value) else float(value)
            elif isinstance(value, np.bool_ | bool):
                record[name] = bool(value)
            else:
                record[name] = value
        records.append(record)
    return records


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition: Callable[[], Any], what: str, deadline: float = DEADLINE_SECONDS) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` after `deadline` s."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with contextlib.suppress(OSError, http.client.HTTPException):
            result = condition()
            if result:
                return result
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def set_version(model_dir: Path, version: str) -> None:
    """Give an artifact another version: the manifest is not part of the weights' checksum, and
    `write_manifest` re-seals the manifest's own."""
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["version"] = version
    write_manifest(model_dir, manifest)


def break_weights(model_dir: Path) -> None:
    path = model_dir / "weights.safetensors"
    path.write_bytes(path.read_bytes()[:-10])


class ServerProcess:
    """`python -m vae_anomaly.training.cli serve MODEL --port P [--workers N]`, stderr captured to a file."""

    def __init__(self, model_dir: Path, log_path: Path, workers: int | None = None, env: dict[str, str] | None = None):
        self.port = free_port()
        self.log_path = log_path
        command = [sys.executable, "-m", "vae_anomaly.training.cli", "serve", str(model_dir), "--port", str(self.port)]
        if workers is not None:
            command += ["--workers", str(workers)]
        environment = {k: v for k, v in os.environ.items() if not k.startswith(("VAE_ANOMALY_", "PROMETHEUS_"))}
        environment |= {
            "VAE_ANOMALY_API_TOKEN": API_TOKEN,
            "VAE_ANOMALY_DEVICE": "cpu",
            "VAE_ANOMALY_TORCH_THREADS": "1",
            **(env or {}),
        }
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.get("/readyz")[0] == 200 or self._exited(), "the server to be ready")
        if workers and workers > 1:  # /readyz answers from the first worker up; wait for all of them
            wait_for(lambda: len(pids(self.metrics(), "vae_anomaly_model_info")) == workers, "every worker")
        assert self.process.poll() is None, self.log()

    def _exited(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.log()}")
        return False

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, http.client.HTTPResponse]:
        """One request on a fresh connection (so the kernel may hand it to any worker)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            data = json.dumps(body).encode() if body is not None else None
            all_headers = {"Content-Type": "application/json", **(headers or {})}
            connection.request(method, path, body=data, headers=all_headers)
            response = connection.getresponse()
            return response.status, response.read(), response
        finally:
            connection.close()

    def get(self, path: str) -> tuple[int, bytes]:
        status, body, _ = self.request("GET", path)
        return status, body

    def post(self, path: str, body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        status, raw, _ = self.request("POST", path, body, headers)
        return status, json.loads(raw) if raw else None

    def metrics(self) -> dict[tuple[str, tuple], float]:
        status, body = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self) -> int:
        return self.process.wait(timeout=DEADLINE_SECONDS)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=DEADLINE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def total(metrics: dict, name: str, **labels: str) -> float:
    """Sum of `name` over every sample whose labels include `labels` (e.g. over all pids)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in metrics.items() if n == name and wanted <= set(ls))


def pids(metrics: dict, name: str) -> set[str]:
    return {dict(ls)["pid"] for (n, ls), _ in metrics.items() if n == name and "pid" in dict(ls)}


@pytest.fixture
def served_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny artifact, free to be changed under a running server."""
    target = tmp_path / "served"
    shutil.copytree(tiny_model_dir, target)
    return target


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    started: list[ServerProcess] = []

    def start(model_dir: Path, workers: int | None = None, **env: str) -> ServerProcess:
        server = ServerProcess(model_dir, tmp_path / f"serve-{len(started)}.log", workers, env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
