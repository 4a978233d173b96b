"""`vae-anomaly serve` as an operator runs it: worker processes whose metrics add up in one scrape,
SIGHUP reloads, graceful SIGTERM, the body limit and the logs on a real socket."""

from __future__ import annotations

import json
import shutil
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import API_TOKEN
from tests.service.conftest import ServerProcess, break_weights, pids, set_version, tiny_records, total, wait_for

AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def model_versions(server: ServerProcess) -> dict[str, str]:
    """pid → version, from `vae_anomaly_model_info` (value 1 only)."""
    metrics = server.metrics()
    return {
        dict(labels)["pid"]: dict(labels)["version"]
        for (name, labels), value in metrics.items()
        if name == "vae_anomaly_model_info" and value == 1
    }


def test_two_workers_add_up_in_one_scrape(served_model, start_server):
    server = start_server(served_model, workers=2)
    records = tiny_records(40, seed=5)
    sent_requests = sent_records = warn = 0

    def score(batch: list[dict]) -> dict:
        status, body = server.post("/score", {"records": batch})
        assert status == 200, body
        return body

    # Concurrent requests on fresh connections until both workers have scored some: the kernel
    # decides which worker accepts a connection, so keep going until the metrics show both pids.
    with ThreadPoolExecutor(4) as pool:
        for round_ in range(40):
            batches = [records[(i * 5) % 40 : (i * 5) % 40 + 5] for i in range(8 * round_, 8 * round_ + 8)]
            for body in pool.map(score, batches):
                sent_requests += 1
                sent_records += len(body["results"])
                warn += sum("warn" in r["thresholds_exceeded"] for r in body["results"])
            window = server.metrics()
            live = pids(window, "vae_anomaly_window_records")
            if len(live) == 2 and all(window_records(window, pid) > 0 for pid in live):
                break
    metrics = server.metrics()
    assert len(pids(metrics, "vae_anomaly_window_records")) == 2, "requests never reached both workers"
    assert total(metrics, "vae_anomaly_records_scored_total") == sent_records
    assert total(metrics, "vae_anomaly_score_count") == sent_records
    assert total(metrics, "vae_anomaly_requests_total", endpoint="/score", status="200") == sent_requests
    assert total(metrics, "vae_anomaly_request_duration_seconds_count", endpoint="/score") == sent_requests
    assert total(metrics, "vae_anomaly_anomalies_total", threshold="warn") == warn
    assert total(metrics, "vae_anomaly_window_records") == min(sent_records, 2 * 1000)
    assert set(model_versions(server).values()) == {"test-1"}
    # POST /admin/reload reloads the one worker that answers it, and says so.
    second_dir = served_model.parent / "second"
    shutil.copytree(served_model, second_dir)
    set_version(second_dir, "test-2")
    status, report = server.post("/admin/reload", {"model_dir": str(second_dir)}, AUTH)
    assert status == 200 and report["workers"] == 2, report
    versions = model_versions(server)
    assert versions[str(report["pid"])] == "test-2"
    assert sorted(versions.values()) == ["test-1", "test-2"]
    # SIGTERM to the supervisor: every worker stops gracefully, and serve exits 0.
    server.signal(signal.SIGTERM)
    assert server.wait() == 0, server.log()


def window_records(metrics: dict, pid: str) -> float:
    return total(metrics, "vae_anomaly_window_records", pid=pid)


@pytest.mark.slow  # three rounds of worker start-ups: about 25 s on the 2-core development VM
def test_sighup_replaces_every_worker_and_a_broken_artifact_keeps_the_old_model(served_model, start_server):
    server = start_server(served_model, workers=2)
    assert server.post("/score", {"records": tiny_records(3, seed=6)})[0] == 200
    first_pids = set(model_versions(server))
    set_version(served_model, "test-2")
    server.signal(signal.SIGHUP)
    # uvicorn replaces the workers one at a time: done when both replacements have loaded the model
    # and both retired workers are gone (their live gauges removed at exit).
    wait_for(
        lambda: (
            total(server.metrics(), "vae_anomaly_reloads_total", result="success") == 2
            and not set(model_versions(server)) & first_pids
        ),
        "both workers to be replaced",
    )
    versions = model_versions(server)
    assert len(versions) == 2, versions
    assert set(versions.values()) == {"test-2"}
    metrics = server.metrics()
    assert total(metrics, "vae_anomaly_records_scored_total") == 3  # the retired workers' counts stay
    assert all(json.loads(server.get("/model")[1])["version"] == "test-2" for _ in range(6))

    break_weights(served_model)
    server.signal(signal.SIGHUP)
    wait_for(
        lambda: total(server.metrics(), "vae_anomaly_reloads_total", result="failure") == 1,
        "the failed replacement to be counted",
    )
    assert model_versions(server) == versions  # uvicorn kept the workers that were serving
    assert server.post("/score", {"records": tiny_records(2, seed=7)})[0] == 200
    assert "weights.safetensors" in server.log()  # the ArtifactError message, in the failed worker's log


@pytest.fixture(scope="module")
def single_worker(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """One worker (the container's default), with a small body limit; shared by the tests below."""
    directory = tmp_path_factory.mktemp("single")
    model_dir = directory / "served"
    shutil.copytree(tiny_model_dir, model_dir)
    server = ServerProcess(model_dir, directory / "serve.log", env={"VAE_ANOMALY_MAX_BODY_BYTES": "2048"})
    yield server, model_dir
    server.stop()


def test_sighup_reloads_a_single_worker_in_place(single_worker):
    server, model_dir = single_worker
    pid = server.process.pid
    set_version(model_dir, "test-sighup")
    server.signal(signal.SIGHUP)
    wait_for(lambda: json.loads(server.get("/model")[1])["version"] == "test-sighup", "the in-place reload")
    assert server.process.pid == pid and server.process.poll() is None
    assert model_versions_single(server) == {"test-sighup"}
    assert total(server.metrics(), "vae_anomaly_reloads_total", result="success") >= 1


def model_versions_single(server: ServerProcess) -> set[str]:
    return {
        dict(labels)["version"]
        for (name, labels), value in server.metrics().items()
        if name == "vae_anomaly_model_info" and value == 1
    }


def raw_exchange(port: int, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a request head and body chunks on a socket; return everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed: what a cut-off looks like from here
        received = b""
        while True:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                break
            if not data:
                break
            received += data
    return received


def test_body_limit_on_the_wire(single_worker):
    server, _ = single_worker
    big = json.dumps({"records": tiny_records(60, seed=8)}).encode()
    assert len(big) > 2048
    declared = raw_exchange(
        server.port,
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        + f"Content-Length: {len(big)}\r\n\r\n".encode(),
        [big],
    )
    assert declared.startswith(b"HTTP/1.1 413"), declared[:200]
    assert b'"body_too_large"' in declared and b"VAE_ANOMALY_MAX_BODY_BYTES" in declared
    chunks = [big[i : i + 1000] for i in range(0, len(big), 1000)]
    chunked = [f"{len(c):x}\r\n".encode() + c + b"\r\n" for c in chunks] + [b"0\r\n\r\n"]
    streamed = raw_exchange(
        server.port,
        b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n",
        chunked,
    )
    assert streamed.startswith(b"HTTP/1.1 413"), streamed[:200]
    assert b'"loc":["body"]' in streamed
    small = json.dumps({"records": tiny_records(2, seed=8)}).encode()
    assert server.request("POST", "/score", json.loads(small))[0] == 200


def test_logs_are_json_lines_with_request_ids_and_no_tokens(single_worker):
    server, _ = single_worker
    status, _, response = server.request("GET", "/healthz", headers={"X-Request-ID": "trace-abc.123"})
    assert status == 200 and response.headers["X-Request-ID"] == "trace-abc.123"
    wrong = "wrong-token-do-not-log-9876"
    status, _, _ = server.request("PUT", "/thresholds/ops", {"value": 99.0}, {"Authorization": f"Bearer {wrong}"})
    assert status == 403
    assert server.request("PUT", "/thresholds/ops", {"value": 99.0}, AUTH)[0] == 200
    lines = [json.loads(line) for line in server.log().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message", "request_id"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "vae_anomaly.access"]
    traced = [line for line in access if line["request_id"] == "trace-abc.123"]
    assert traced and traced[0]["path"] == "/healthz" and traced[0]["status"] == 200 and "duration_ms" in traced[0]
    # The access line is written once the response is sent: the last one may trail our read.
    wait_for(lambda: server.log().count('"path": "/thresholds/ops"') == 2, "both access lines")
    access = [json.loads(line) for line in server.log().splitlines() if '"vae_anomaly.access"' in line]
    assert [line["status"] for line in access if line["path"] == "/thresholds/ops"] == [403, 200]
    assert "uvicorn.access" not in {line["logger"] for line in lines}  # ours replaces uvicorn's
    text = server.log()
    assert wrong not in text and API_TOKEN not in text
    assert '"records"' not in text  # payloads are not logged by default


def test_sigterm_finishes_the_request_in_flight_then_exits_0(single_worker):
    """Last in this module: it stops the shared single-worker server (one start-up fewer)."""
    server, _ = single_worker
    body = json.dumps({"records": tiny_records(8, seed=9)}).encode()
    assert len(body) < 2048  # the fixture's body limit
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
        # `Expect: 100-continue`: uvicorn answers "100 Continue" when the handler starts reading the
        # body, so once it arrives the request is certainly in flight inside the app.
        sock.sendall(
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        assert sock.recv(1024).startswith(b"HTTP/1.1 100")
        server.signal(signal.SIGTERM)
        wait_for(lambda: refused(server.port), "the server to stop accepting connections")
        sock.sendall(body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    head, _, payload = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), response[:300]
    assert len(json.loads(payload)["results"]) == 8
    assert server.wait() == 0, server.log()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False
