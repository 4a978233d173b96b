"""A real Prometheus scrapes a running service under traffic; the README's anomaly-rate query must
return the share of records over each threshold that the traffic had, and the alert rules must load.

    python -m bench.prometheus_scrape                         # trains a demo model in a temp dir first
    python -m bench.prometheus_scrape --model-dir /tmp/x/models/demo --out /tmp/scrape.json

Steps: train the demo model (`vae-anomaly demo --no-serve`) unless `--model-dir` names one; start
`vae-anomaly serve` on a free loopback port; start Prometheus (Debian's `prometheus` package, 1 s
scrape and rule interval) with deploy/prometheus/alerts.yml; wait for a first scrape (every counter
at 0); send `--requests` identical /score requests, each `--normal` normal and `--anomalous`
anomalous demo rows, and learn from the first response how many of them exceed each threshold; wait
for a scrape after the last request; then query

    rate(vae_anomaly_anomalies_total[5m]) / ignoring(threshold) group_left rate(vae_anomaly_records_scored_total[5m])

Every request has the same mix and the scrapes before and after the traffic see quiet counters, so
the query must equal the per-threshold share of the batch (up to float round-off). Also checked: the
same division without `ignoring(threshold) group_left` returns nothing, up{job="vae-anomaly"} is 1,
every alert rule is loaded and evaluates without error. Every expression of the Grafana dashboard is
queried too, and the number of series each returns is reported (metrics the service does not export
yet return none). Traffic goes to 127.0.0.1 only and is bounded by `--requests`.
Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.serving import stop

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "vae-anomaly.json"
README_QUERY = (
    "rate(vae_anomaly_anomalies_total[5m]) / ignoring(threshold) group_left rate(vae_anomaly_records_scored_total[5m])"
)
UNMATCHED_QUERY = "rate(vae_anomaly_anomalies_total[5m]) / rate(vae_anomaly_records_scored_total[5m])"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1s", "$__range": "5m", "$job": ".*"}
TOLERANCE = 1e-9


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_json(url: str, body: Any = None, timeout: float = 30.0) -> Any:
    """GET (or POST `body` as JSON) and parse the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(what: str, check: Any, timeout: float, interval: float = 0.25) -> Any:
    """Call `check()` until it returns something truthy (then return it); RuntimeError after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except OSError as exc:  # connection refused while starting, HTTP errors
            last_error = exc
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last_error})")


@contextmanager
def running(command: list[str], log: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start `command` with stdout and stderr to `log`; terminate it (then kill) on the way out."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield process
        finally:
            stop(process)


def train_demo_model(workdir: Path, epochs: int | None) -> Path:
    """`vae-anomaly demo --no-serve` into `workdir`; returns the model directory."""
    command = [sys.executable, "-m", "vae_anomaly.training.cli", "demo", "--dir", str(workdir), "--no-serve"]
    if epochs is not None:
        command += ["--epochs", str(epochs)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
    return workdir / "models" / "demo"


def demo_batch(n_normal: int, n_anomalous: int, seed: int) -> list[dict[str, Any]]:
    """`n_normal` normal and `n_anomalous` anomalous rows of a fresh demo data set, as JSON records."""
    from vae_anomaly.training.demo_data import LABEL, make_demo_frame

    frame = make_demo_frame(n_normal=max(200, 2 * n_normal), anomaly_share=0.05, seed=seed)
    normal = frame[frame[LABEL] == 0].head(n_normal)
    anomalous = frame[frame[LABEL] == 1].head(n_anomalous)
    if len(normal) < n_normal or len(anomalous) < n_anomalous:
        raise ValueError(f"the demo frame has too few rows for {n_normal} normal and {n_anomalous} anomalous")
    records: list[dict[str, Any]] = json.loads(normal.drop(columns=[LABEL]).to_json(orient="records"))
    records += json.loads(anomalous.drop(columns=[LABEL]).to_json(orient="records"))
    return records


def prometheus_config(service_port: int, interval: str) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": "vae-anomaly", "static_configs": [{"targets": [f"127.0.0.1:{service_port}"]}]},
        ],
    }


class Prometheus:
    """The HTTP API of a Prometheus on 127.0.0.1."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query at the current time; the result vector."""
        answer = http_json(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        if answer.get("status") != "success":
            raise RuntimeError(f"query {expr!r} failed: {answer}")
        return list(answer["data"]["result"])

    def scalar(self, expr: str) -> float | None:
        """The value of a one-element result, None when empty."""
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def rules(self) -> list[dict[str, Any]]:
        answer = http_json(f"{self.base}/api/v1/rules")
        return [rule for group in answer["data"]["groups"] for rule in group["rules"]]


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) of each dashboard target, Grafana variables replaced by plain values."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            found.append((panel["title"], expr))
    return found


def run_check(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Everything in the module docstring; returns the measurements and a list of failures."""
    prometheus_exe = shutil.which("prometheus")
    if prometheus_exe is None:
        raise RuntimeError("prometheus is not installed (Debian: apt-get install prometheus)")
    model_dir = args.model_dir or train_demo_model(workdir, args.epochs)
    service_port, prometheus_port = free_port(), free_port()
    service_url = f"http://127.0.0.1:{service_port}"
    config = workdir / "prometheus.yml"
    config.write_text(json.dumps(prometheus_config(service_port, args.interval)), encoding="utf-8")  # JSON is YAML
    env = {**os.environ, "VAE_ANOMALY_TORCH_THREADS": "1"}
    serve = [sys.executable, "-m", "vae_anomaly.training.cli", "serve", str(model_dir), "--port", str(service_port)]
    prometheus_command = [
        prometheus_exe,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
    ]
    failures: list[str] = []
    report: dict[str, Any] = {"model_dir": str(model_dir), "query": README_QUERY, "failures": failures}
    batch = demo_batch(args.normal, args.anomalous, args.seed)
    with running(serve, workdir / "serve.log", env=env):
        wait_for("the service's /readyz", lambda: http_json(f"{service_url}/readyz", timeout=2), timeout=120)
        thresholds = sorted(http_json(f"{service_url}/thresholds")["thresholds"])
        with running(prometheus_command, workdir / "prometheus.log"):
            prometheus = Prometheus(prometheus_port)
            # A first scrape before any traffic: every counter's first sample is 0.
            wait_for("a first scrape", lambda: prometheus.query('up{job="vae-anomaly"} == 1'), timeout=60)
            first = http_json(f"{service_url}/score", {"records": batch})
            exceeded = {name: sum(name in r["thresholds_exceeded"] for r in first["results"]) for name in thresholds}
            for _ in range(args.requests - 1):
                http_json(f"{service_url}/score", {"records": batch})
                time.sleep(args.pause)
            sent = args.requests * len(batch)
            # Wait until a scrape has seen all the traffic, then one more interval (so the last sample is quiet).
            wait_for(
                "a scrape after the traffic",
                lambda: prometheus.scalar("vae_anomaly_records_scored_total") == sent,
                timeout=60,
            )
            time.sleep(2 * float(args.interval.rstrip("s")))
            expected = {name: exceeded[name] / len(batch) for name in thresholds}
            got = {r["metric"]["threshold"]: float(r["value"][1]) for r in prometheus.query(README_QUERY)}
            unmatched = prometheus.query(UNMATCHED_QUERY)
            report.update(
                records_per_request=len(batch),
                normal_per_request=args.normal,
                anomalous_per_request=args.anomalous,
                requests=args.requests,
                records_sent=sent,
                exceeded_per_request=exceeded,
                expected=expected,
                result=got,
                result_without_group_left=unmatched,
            )
            if set(got) != set(expected):
                failures.append(f"anomaly-rate query returned thresholds {sorted(got)}, expected {sorted(expected)}")
            for name, value in expected.items():
                if name in got and abs(got[name] - value) > TOLERANCE:
                    failures.append(f"anomaly rate of {name}: Prometheus says {got[name]}, the traffic had {value}")
            if unmatched:
                failures.append(f"the division without ignoring(threshold) group_left returned {unmatched}")

            wait_for("a rule evaluation", lambda: all(r.get("lastEvaluation") for r in prometheus.rules()), 30)
            rules = prometheus.rules()
            report["rules"] = {r["name"]: r["health"] for r in rules}
            if len(rules) != 5 or any(r["health"] != "ok" for r in rules):
                failures.append(f"alert rules: {[(r['name'], r['health'], r.get('lastError')) for r in rules]}")
            firing = prometheus.query('ALERTS{alertstate="firing"}')
            report["alerts_firing"] = [r["metric"]["alertname"] for r in firing]

            panels: dict[str, int] = {}
            for title, expr in dashboard_expressions():
                panels[f"{title}: {expr}"] = len(prometheus.query(expr))
            report["dashboard_series"] = panels
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, help="a trained demo model (default: train one in a temp dir)")
    parser.add_argument("--epochs", type=int, default=None, help="demo training epochs (default: the demo's)")
    parser.add_argument("--normal", type=int, default=45, help="normal demo rows per request")
    parser.add_argument("--anomalous", type=int, default=5, help="anomalous demo rows per request")
    parser.add_argument("--requests", type=int, default=60, help="identical /score requests to send")
    parser.add_argument("--pause", type=float, default=0.05, help="seconds between requests")
    parser.add_argument("--seed", type=int, default=11, help="seed of the demo rows sent")
    parser.add_argument("--interval", default="1s", help="Prometheus scrape and rule interval")
    parser.add_argument("--out", type=Path, help="write the report as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, TSDB) and print its path")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="prometheus-scrape."))
    try:
        report = run_check(args, workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    if report["failures"]:
        print("FAIL: " + "; ".join(report["failures"]))
        return 1
    rates = ", ".join(f"{name} {value:g}" for name, value in sorted(report["result"].items()))
    print(f"PASS anomaly rate per threshold from Prometheus: {rates} (expected {report['expected']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
