"""The gauges the HorizontalPodAutoscaler scales on: requests in flight (scrapes and probes not
counted) and records queued for the micro-batcher."""

from __future__ import annotations

import asyncio
import threading

from fastapi.testclient import TestClient

from tests.service.conftest import tiny_records
from vae_anomaly.model.detector import Detector
from vae_anomaly.service.app import create_app
from vae_anomaly.service.batching import MicroBatcher
from vae_anomaly.service.metrics import ServiceMetrics
from vae_anomaly.service.settings import Settings


def _value(client: TestClient, metric: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(metric + " "):
            return float(line.split()[1])
    raise AssertionError(f"{metric} not exposed")


def test_in_flight_counts_requests_being_handled(settings: Settings, normal_record, monkeypatch):
    with TestClient(create_app(settings.model_copy(update={"micro_batch": False}))) as client:
        _check_in_flight(client, normal_record, monkeypatch)


def _check_in_flight(client: TestClient, normal_record, monkeypatch) -> None:
    assert _value(client, "vae_anomaly_in_flight_requests") == 0.0  # the scrape does not count itself
    state = client.app.state.service  # type: ignore[attr-defined]
    seen: list[float] = []
    original = state.compute

    async def compute(function):
        seen.append(state.metrics.in_flight._value.get())  # while /score is being handled
        return await original(function)

    monkeypatch.setattr(state, "compute", compute)
    body = {"records": [normal_record] * 5}  # micro-batching off: scored on the compute thread
    assert client.post("/score", json=body).status_code == 200
    assert client.get("/healthz").status_code == 200 and client.get("/readyz").status_code == 200
    assert seen == [1.0]
    assert _value(client, "vae_anomaly_in_flight_requests") == 0.0
    assert _value(client, "vae_anomaly_micro_batch_queued_records") == 0.0


def test_the_batcher_reports_its_queue_depth(tiny_model_dir):
    detector = Detector.load(tiny_model_dir, "cpu")
    columns = detector.kind.columns_from_records(tiny_records(3, seed=1))
    depths: list[int] = []
    lock = threading.Lock()

    def record(depth: int) -> None:
        with lock:
            depths.append(depth)

    async def run() -> None:
        metrics = ServiceMetrics().bind_model(
            detector.thresholds.calibration, {"warn": 1.0}, "id", "v", "tabular", "cpu"
        )
        batcher = MicroBatcher(max_records=64, max_wait_seconds=0.5, on_depth=record)
        batcher.start()
        await asyncio.gather(*(batcher.score(detector, metrics, columns, 0) for _ in range(3)))
        await batcher.close()

    asyncio.run(run())
    assert depths[:3] == [3, 6, 9]  # three requests of 3 records queued before the batch is taken
    assert depths[-1] == 0
