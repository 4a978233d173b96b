"""The `/score` hot path of issue 15: answered before FastAPI's router (service/score_path.py) with
the route's own bodies, statuses and headers; request ids without the OS's randomness; access-log
lines written off the event loop; request metrics published in bulk."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from vae_anomaly.service.app import create_app
from vae_anomaly.service.logs import (
    BackgroundStreamHandler,
    JsonFormatter,
    RequestIdFilter,
    generated_request_id,
    request_id_var,
)
from vae_anomaly.service.metrics import ServiceMetrics
from vae_anomaly.service.score_path import ScorePath
from vae_anomaly.service.settings import Settings

BODIES = [
    {"records": [{"a": 10.0, "b": 30.1, "count": 3, "color": "red", "flag": False}]},
    {"records": [{"a": 10.0, "b": -45.0, "count": 3, "color": "purple", "flag": None}] * 3, "explain": 5},
    {"records": [{"a": 10.0, "b": None, "count": 3, "color": None, "flag": True}] * 20, "ids": list(range(20))},
    {"columns": ["a", "b", "count", "color", "flag"], "data": [[9.5, 28.0, 2, "blue", True]], "explain": 0},
    {"records": [{"a": "abc", "b": 1, "count": 1, "color": "red", "flag": True}]},
    {"records": [{"a": 1, "b": 1, "count": 1, "color": "red"}]},
    {"records": []},
    {"records": [{}] * 51},
    {"rows": []},
    {"images": ["AAAA"]},
    [1, 2],
]
RAW_BODIES = [b"{not json", b"", b'{"records": [{"a": NaN}]}', b"\xff\xfe"]


@pytest.fixture
def both(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    """The service with the fast path and with `/score` through FastAPI's route."""
    with (
        TestClient(create_app(settings)) as fast,
        TestClient(create_app(settings.model_copy(update={"score_fast_path": False}))) as routed,
    ):
        yield fast, routed


def test_the_fast_path_answers_score(both):
    fast, routed = both
    assert any(m.cls is ScorePath for m in fast.app.user_middleware)  # type: ignore[attr-defined]
    assert not any(m.cls is ScorePath for m in routed.app.user_middleware)  # type: ignore[attr-defined]


@pytest.mark.parametrize("body", [json.dumps(b).encode() for b in BODIES] + RAW_BODIES)
def test_fast_path_and_route_answer_alike(both, body: bytes):
    """Same status, body and content type for good and bad bodies, with and without the fast path."""
    fast, routed = both
    a, b = (client.post("/score", content=body) for client in (fast, routed))
    assert a.status_code == b.status_code, (a.text, b.text)
    assert a.content == b.content
    assert a.headers["content-type"] == b.headers["content-type"] == "application/json"
    assert a.headers["content-length"] == str(len(a.content))


def test_fast_path_keeps_the_middlewares(both, caplog):
    """Request id, access log and request metrics apply to the fast path as to any route."""
    fast, _ = both
    with caplog.at_level(logging.INFO, logger="vae_anomaly.access"):
        response = fast.post("/score", json=BODIES[0], headers={"X-Request-ID": "fast-1"})
    assert response.status_code == 200 and response.headers["X-Request-ID"] == "fast-1"
    assert [(r.path, r.status, r.request_id) for r in caplog.records if r.name == "vae_anomaly.access"] == [
        ("/score", 200, "fast-1")
    ]
    metrics = fast.get("/metrics").text
    assert 'vae_anomaly_requests_total{endpoint="/score",status="200"} 1.0' in metrics
    assert 'vae_anomaly_request_duration_seconds_count{endpoint="/score"} 1.0' in metrics


def test_other_methods_and_paths_go_to_the_app(both):
    fast, _ = both
    assert fast.get("/score").status_code == 405
    assert fast.post("/score/", json=BODIES[0], follow_redirects=False).status_code == 307  # the router's redirect


def test_generated_request_ids_are_unique_hex():
    ids = [generated_request_id() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len({i[:16] for i in ids}) == 1  # one random prefix per process, then a counter


def test_background_handler_writes_in_order_with_the_request_id():
    """Records are formatted and written by the handler's thread, in the order logged, each with the
    id of the request that logged it (the filter runs in the logging thread)."""
    stream = io.StringIO()
    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("tests.background")
    logger.propagate = False
    logger.addHandler(handler)
    writers: set[str] = set()
    real_emit = handler.target.emit

    def emit(record: logging.LogRecord) -> None:
        writers.add(threading.current_thread().name)
        real_emit(record)

    handler.target.emit = emit  # type: ignore[method-assign]
    try:
        for i in range(200):
            token = request_id_var.set(f"req-{i}")
            logger.warning("line %d", i)
            request_id_var.reset(token)
        handler.flush()
        lines = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(line["message"], line["request_id"]) for line in lines] == [
            (f"line {i}", f"req-{i}") for i in range(200)
        ]
        assert threading.current_thread().name not in writers
        logger.warning("after the flush")
    finally:
        logger.removeHandler(handler)
        handler.close()  # writes what is still queued
    assert stream.getvalue().splitlines()[-1].endswith('"request_id": null}')


def test_requests_are_published_in_bulk():
    metrics = ServiceMetrics()
    for seconds in (0.001, 0.002, 0.2):
        metrics.count_request("/score", "200", seconds)
    metrics.count_request("/score", "422", 0.001)
    assert metrics.requests.labels(endpoint="/score", status="200")._value.get() == 0  # not yet
    text = metrics.exposition().decode()  # a scrape publishes what was noted
    assert 'vae_anomaly_requests_total{endpoint="/score",status="200"} 3.0' in text
    assert 'vae_anomaly_requests_total{endpoint="/score",status="422"} 1.0' in text
    assert 'vae_anomaly_request_duration_seconds_count{endpoint="/score"} 4.0' in text
    assert 'vae_anomaly_request_duration_seconds_bucket{endpoint="/score",le="0.001"} 2.0' in text
    assert 'vae_anomaly_request_duration_seconds_bucket{endpoint="/score",le="0.25"} 4.0' in text
