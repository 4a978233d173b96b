"""Request ids, the access log and its formatters, secrets kept out of logs, and the body size limit."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import sys

import pytest
from fastapi.testclient import TestClient

from tests.conftest import API_TOKEN
from tests.service.test_admin_and_metrics import samples, value
from vae_anomaly.service.app import create_app
from vae_anomaly.service.logs import (
    ACCESS_LOGGER,
    JsonFormatter,
    RequestIdFilter,
    TextFormatter,
    logging_config,
    request_id_var,
    resolve_log_format,
)
from vae_anomaly.service.settings import Settings

GENERATED = re.compile(r"[0-9a-f]{32}")


def access_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == ACCESS_LOGGER]


def test_request_id_is_accepted_or_generated(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123.X:9_z"}).headers["X-Request-ID"] == "abc-123.X:9_z"
    assert GENERATED.fullmatch(client.get("/healthz").headers["X-Request-ID"])
    for bad in ("has space", "x" * 129, "semi;colon", "na\xefve".encode("latin-1"), ""):
        returned = client.get("/healthz", headers={"X-Request-ID": bad}).headers["X-Request-ID"]
        assert GENERATED.fullmatch(returned), (bad, returned)
    first, second = (client.get("/healthz").headers["X-Request-ID"] for _ in range(2))
    assert first != second


def test_access_log_has_one_line_per_request(client, caplog, normal_record):
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.post("/score", json={"records": [normal_record]}, headers={"X-Request-ID": "req-1"})
        client.get("/no/such/route?token=abc")
    score, missing = access_records(caplog)
    assert (score.method, score.path, score.status, score.request_id) == ("POST", "/score", 200, "req-1")
    assert score.duration_ms >= 0
    assert (missing.path, missing.status) == ("/no/such/route", 404)  # the query string is not logged
    line = json.loads(JsonFormatter().format(score))
    assert {k: line[k] for k in ("level", "logger", "request_id", "method", "path", "status")} == {
        "level": "info",
        "logger": ACCESS_LOGGER,
        "request_id": "req-1",
        "method": "POST",
        "path": "/score",
        "status": 200,
    }
    assert line["message"] == "POST /score 200" and "time" in line and "duration_ms" in line
    assert "payload" not in line and not hasattr(score, "payload")


def test_payloads_are_logged_only_when_asked(settings, caplog, normal_record):
    with (
        TestClient(create_app(settings.model_copy(update={"log_payloads": True}))) as client,
        caplog.at_level(logging.INFO, logger=ACCESS_LOGGER),
    ):
        client.post("/score", json={"records": [normal_record]})
    (record,) = access_records(caplog)
    assert json.loads(record.payload) == {"records": [normal_record]}


def test_tokens_never_reach_the_logs(client, caplog, tmp_path):
    wrong = "wrong-secret-4711"
    with caplog.at_level(logging.DEBUG):
        for token in (wrong, API_TOKEN):
            headers = {"Authorization": f"Bearer {token}"}
            client.put("/thresholds/ops", json={"value": 50.0}, headers=headers)
            client.post("/admin/reload", json={"model_dir": str(tmp_path / "missing")}, headers=headers)
    assert access_records(caplog), "the requests were logged"
    assert any(r.levelno == logging.ERROR and r.name == "vae_anomaly.service.reload" for r in caplog.records)
    formatter = JsonFormatter()
    for record in caplog.records:
        text = formatter.format(record) + repr(record.__dict__)
        assert wrong not in text and API_TOKEN not in text, text


def test_log_lines_carry_the_request_id_of_their_request():
    record = logging.LogRecord("vae_anomaly.service.reload", logging.ERROR, __file__, 1, "failed: %s", ("why",), None)
    token = request_id_var.set("req-42")
    try:
        RequestIdFilter().filter(record)
    finally:
        request_id_var.reset(token)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "req-42"
    assert "[req-42] failed: why" in TextFormatter().format(record)
    outside = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    RequestIdFilter().filter(outside)
    assert json.loads(JsonFormatter().format(outside))["request_id"] is None
    assert "[-] hello" in TextFormatter().format(outside)


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_logging_config_silences_uvicorn_access_log(log_format):
    config = logging_config(log_format, "info")
    assert config["loggers"]["uvicorn.access"] == {"handlers": [], "propagate": False}
    formatter = config["formatters"]["default"]["()"]
    assert formatter.endswith("JsonFormatter" if log_format == "json" else "TextFormatter")


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize(("tty", "expected"), [(True, "TextFormatter"), (False, "JsonFormatter")])
def test_auto_log_format_is_text_on_a_terminal_and_json_otherwise(monkeypatch, tty: bool, expected: str):
    assert Settings.model_fields["log_format"].default == "auto"
    monkeypatch.setattr(sys, "stderr", _Stream(tty))
    assert logging_config("auto", "info")["formatters"]["default"]["()"].endswith(expected)
    assert resolve_log_format("json", _Stream(True)) == "json"  # a choice is kept, terminal or not
    assert resolve_log_format("text", _Stream(False)) == "text"


def test_serve_log_format_reaches_the_workers_settings(monkeypatch, tmp_path):
    import vae_anomaly.service.server
    from vae_anomaly.training.cli import main

    monkeypatch.setenv("VAE_ANOMALY_LOG_FORMAT", "json")  # restored after the test
    monkeypatch.setattr(vae_anomaly.service.server, "serve", lambda *args: 0)
    assert main(["serve", str(tmp_path), "--log-format", "text"]) == 0
    assert os.environ["VAE_ANOMALY_LOG_FORMAT"] == "text"


@pytest.fixture
def limited(settings):
    with TestClient(create_app(settings.model_copy(update={"max_body_bytes": 1024}))) as client:
        yield client


def test_declared_body_over_the_limit_is_413(limited, normal_record):
    response = limited.post("/score", json={"records": [normal_record] * 30})
    assert response.status_code == 413
    (item,) = response.json()["detail"]
    assert item["loc"] == ["body"] and item["type"] == "body_too_large"
    assert "exceeds the limit of 1024 bytes (VAE_ANOMALY_MAX_BODY_BYTES)" in item["msg"]
    assert value(samples(limited), "vae_anomaly_requests_total", endpoint="/score", status="413") == 1


def test_streamed_body_over_the_limit_is_cut_off(limited, normal_record):
    chunk = json.dumps(normal_record).encode()

    def stream():
        yield b'{"records": ['
        for _ in range(40):
            yield chunk + b","
        yield chunk + b"]}"

    response = limited.post("/score", content=stream(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["detail"][0]["type"] == "body_too_large"


def test_body_under_the_limit_is_scored(limited, normal_record):
    assert limited.post("/score", json={"records": [normal_record]}).status_code == 200


def test_lines_logged_inside_a_request_carry_its_id(client, tmp_path):
    """The context variable follows the request into handlers (and threadpool threads)."""
    captured: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.addFilter(RequestIdFilter())
    handler.emit = captured.append  # type: ignore[method-assign]
    logger = logging.getLogger("vae_anomaly.service.reload")
    logger.addHandler(handler)
    try:
        client.post(
            "/admin/reload",
            json={"model_dir": str(tmp_path / "missing")},
            headers={"Authorization": f"Bearer {API_TOKEN}", "X-Request-ID": "rid-7"},
        )
    finally:
        logger.removeHandler(handler)
    (record,) = [r for r in captured if r.levelno == logging.ERROR]
    assert record.request_id == "rid-7"


def test_json_lines_carry_the_traceback():
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = json.loads(JsonFormatter().format(record))
    assert "Traceback" in line["exception"] and "RuntimeError: boom" in line["exception"]
