"""deploy/prometheus: the alert rules load, each alert has promtool unit tests that show it firing and
not firing, the unit tests pass, prometheus.yml is valid, and the rules only use metric names the
service exports."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from vae_anomaly.service.metrics import ServiceMetrics

METRIC_NAME = re.compile(r"\bvae_anomaly_[a-z0-9_]+\b")


def exported_metric_names() -> set[str]:
    """Sample names (`..._total`, `..._bucket`, ...) that the service's /metrics would show."""
    metrics = ServiceMetrics()
    model = metrics.bind_model(
        np.linspace(0.0, 10.0, 101), {"warn": 8.0, "critical": 9.5}, "id", "v1", "tabular", "cpu"
    )
    model.observe_scores(np.array([1.0, 9.0]), np.array([[False, False], [True, False]]), ("warn", "critical"))
    metrics.requests.labels(endpoint="/score", status="200").inc()
    metrics.duration.labels(endpoint="/score").observe(0.01)
    metrics.record_reload(success=True)
    text = generate_latest(metrics.registry).decode()
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def alert_rules(rules: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_firing_and_quiet_unit_tests(deploy_dir: Path, load_yaml: Callable[[Path], Any]) -> None:
    rules = load_yaml(deploy_dir / "prometheus" / "alerts.yml")
    tests = load_yaml(deploy_dir / "prometheus" / "alerts.test.yml")
    assert tests["rule_files"] == ["alerts.yml"]
    names = [rule["alert"] for rule in alert_rules(rules)]
    assert len(names) == len(set(names)), f"duplicate alert names: {names}"
    assert {"VaeAnomalyDown", "VaeAnomalyHighAnomalyRate", "VaeAnomalyInputDrift"} <= set(names)
    assert {"VaeAnomalyHighLatency", "VaeAnomalyReloadFailed"} <= set(names)
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert set(names) - firing == set(), "alerts without a unit test where they fire"
    assert set(names) - quiet == set(), "alerts without a unit test where they stay quiet"
    assert (firing | quiet) - set(names) == set(), "unit tests of alerts that do not exist"


def test_every_alert_has_severity_and_text(deploy_dir: Path, load_yaml: Callable[[Path], Any]) -> None:
    for rule in alert_rules(load_yaml(deploy_dir / "prometheus" / "alerts.yml")):
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_rules_and_dashboard_use_exported_metric_names(deploy_dir: Path, load_yaml: Callable[[Path], Any]) -> None:
    rules = load_yaml(deploy_dir / "prometheus" / "alerts.yml")
    expressions = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    dashboard = json.loads((deploy_dir / "grafana" / "dashboards" / "vae-anomaly.json").read_text(encoding="utf-8"))
    expressions += [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in expressions for name in METRIC_NAME.findall(expr)}
    unknown = used - exported_metric_names()
    assert unknown == set(), f"metric names that the service does not export: {sorted(unknown)}"


def test_promtool_check_rules(deploy_dir: Path, promtool: Callable[..., Any]) -> None:
    result = promtool("check", "rules", str(deploy_dir / "prometheus" / "alerts.yml"))
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass(deploy_dir: Path, promtool: Callable[..., Any]) -> None:
    result = promtool("test", "rules", "alerts.test.yml", cwd=deploy_dir / "prometheus")
    assert "SUCCESS" in result.stdout


def test_promtool_check_prometheus_config(deploy_dir: Path, promtool: Callable[..., Any]) -> None:
    """The compose stack's prometheus.yml is valid and finds its rule file."""
    result = promtool("check", "config", str(deploy_dir / "prometheus" / "prometheus.yml"))
    assert "1 rule files found" in result.stdout
