"""Slow: bench/prometheus_scrape.py end to end (demo model, `vae-anomaly serve`, a real Prometheus with
the alert rules, /score traffic with a known share of anomalies). Run with `pytest -m slow`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.mark.slow
def test_readme_anomaly_rate_query_on_a_real_prometheus(tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian: apt-get install prometheus)")
    from bench.prometheus_scrape import main

    out = tmp_path / "report.json"
    assert main(["--epochs", "30", "--requests", "20", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["failures"] == []
    assert set(report["result"]) == {"warn", "critical"}
    assert report["result_without_group_left"] == []
    assert all(health == "ok" for health in report["rules"].values())
