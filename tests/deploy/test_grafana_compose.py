"""deploy/docker-compose.yml and deploy/grafana: the files parse, every path and name they refer to
exists and agrees (ports, mounts, data source uid), the dashboard has the panels an operator needs, and
every PromQL expression in it parses (promtool, when installed)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$job": ".*"}
"""Stand-ins for Grafana's template variables, so the expressions are plain PromQL for promtool."""

REQUIRED_PANELS = {
    "Request rate",
    "Latency quantiles",
    "Anomaly rate per threshold",
    "Score distribution",
    "p-value shares (drift)",
    "Model",
}


@pytest.fixture(scope="module")
def dashboard(deploy_dir: Path) -> dict[str, Any]:
    return json.loads((deploy_dir / "grafana" / "dashboards" / "vae-anomaly.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose(deploy_dir: Path, load_yaml: Callable[[Path], Any]) -> dict[str, Any]:
    return load_yaml(deploy_dir / "docker-compose.yml")


def dashboard_expressions(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query target, Grafana variables replaced by plain values."""
    found = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            assert "$" not in expr, f"panel {panel['title']!r}: unknown Grafana variable in {expr!r}"
            found.append((panel["title"], expr))
    return found


def split_volume(volume: str) -> tuple[str, str]:
    """(source, target) of a compose volume; ${VAR:-default} in the source reads as its default."""
    plain = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", volume)
    source, target = plain.split(":")[:2]
    return source, target


def mount_source(volumes: list[str], target: str) -> str:
    """The source of the volume mounted at `target`."""
    (source,) = [s for s, t in map(split_volume, volumes) if t == target]
    return source


def host_path(deploy_dir: Path, source: str) -> Path | None:
    """The host path of a bind-mount source ('./x' -> deploy/x); None for a named volume."""
    if not source.startswith((".", "/")):
        return None
    return (deploy_dir / source).resolve()


def test_dashboard_has_the_operator_panels(dashboard: dict[str, Any]) -> None:
    titles = {panel["title"] for panel in dashboard["panels"]}
    assert titles >= REQUIRED_PANELS, f"missing panels: {sorted(REQUIRED_PANELS - titles)}"
    assert len(titles) == len(dashboard["panels"]), "two panels share a title"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "two panels share an id"
    latency = next(p for p in dashboard["panels"] if p["title"] == "Latency quantiles")
    assert [t["expr"].split(",")[0] for t in latency["targets"]] == [
        f"histogram_quantile({q}" for q in ("0.5", "0.9", "0.99")
    ]
    scores = next(p for p in dashboard["panels"] if p["title"] == "Score distribution")
    assert scores["type"] == "heatmap" and "vae_anomaly_score_bucket" in scores["targets"][0]["expr"]
    model = next(p for p in dashboard["panels"] if p["title"] == "Model")
    assert "vae_anomaly_model_info" in model["targets"][0]["expr"]


def test_dashboard_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_dashboard_uses_the_provisioned_data_source(
    dashboard: dict[str, Any], deploy_dir: Path, load_yaml: Callable[[Path], Any]
) -> None:
    provisioned = load_yaml(deploy_dir / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]


def test_dashboard_anomaly_rate_matches_labels(dashboard: dict[str, Any]) -> None:
    """The README's point: the labelled numerator needs `ignoring(threshold) group_left`."""
    panel = next(p for p in dashboard["panels"] if p["title"] == "Anomaly rate per threshold")
    assert "ignoring(threshold) group_left" in panel["targets"][0]["expr"]


def test_dashboard_expressions_parse(dashboard: dict[str, Any], promtool: Callable[..., Any], tmp_path: Path) -> None:
    """Every query, as a recording rule in a generated rules file, passes `promtool check rules`."""
    expressions = dashboard_expressions(dashboard)
    assert len(expressions) >= 10
    rules = [{"record": f"dashboard:expr_{i}", "expr": expr} for i, (_, expr) in enumerate(expressions)]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    result = promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_grafana_provisioning_matches_compose_mounts(
    compose: dict[str, Any], deploy_dir: Path, load_yaml: Callable[[Path], Any]
) -> None:
    volumes = compose["services"]["grafana"]["volumes"]
    provisioning = mount_source(volumes, "/etc/grafana/provisioning")
    assert host_path(deploy_dir, provisioning) == deploy_dir / "grafana" / "provisioning"
    provider = load_yaml(deploy_dir / "grafana" / "provisioning" / "dashboards" / "vae-anomaly.yml")
    dashboards_in_container = provider["providers"][0]["options"]["path"]
    source = host_path(deploy_dir, mount_source(volumes, dashboards_in_container))
    assert source is not None and (source / "vae-anomaly.json").is_file()


def test_compose_services_and_paths(compose: dict[str, Any], deploy_dir: Path, root: Path) -> None:
    services = compose["services"]
    assert set(services) == {"vae-anomaly", "prometheus", "grafana"}
    api = services["vae-anomaly"]
    assert (deploy_dir / api["build"]["context"]).resolve() == root
    assert (root / api["build"]["dockerfile"]).is_file()
    assert api["ports"] == ["8000:8000"]
    expose = re.search(r"^EXPOSE (\d+)$", (root / "Dockerfile").read_text(), re.MULTILINE)
    assert expose is not None and expose.group(1) == "8000"
    (model_mount,) = [v for v in api["volumes"] if split_volume(v)[1] == "/model"]
    assert model_mount.endswith(":ro")
    assert host_path(deploy_dir, split_volume(model_mount)[0]) == root / "models" / "demo"
    assert "VAE_ANOMALY_API_TOKEN" in api["environment"]
    prometheus = services["prometheus"]
    config_dir = host_path(deploy_dir, mount_source(prometheus["volumes"], "/etc/prometheus"))
    assert config_dir == deploy_dir / "prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    for service in services.values():
        for volume in service.get("volumes", []):
            source = split_volume(volume)[0]
            path = host_path(deploy_dir, source)
            if path is None:
                assert source in compose["volumes"], f"undeclared named volume in {volume!r}"
            elif path != root / "models" / "demo":  # written by `make demo`, not in the repository
                assert path.exists(), f"compose mounts {volume!r}, which does not exist"


def test_prometheus_scrapes_the_compose_service(
    compose: dict[str, Any], deploy_dir: Path, load_yaml: Callable[[Path], Any]
) -> None:
    config = load_yaml(deploy_dir / "prometheus" / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "vae-anomaly")
    assert job["static_configs"][0]["targets"] == ["vae-anomaly:8000"]
    assert "vae-anomaly" in compose["services"]
    # the job name alerts.yml selects on
    assert 'up{job="vae-anomaly"}' in (deploy_dir / "prometheus" / "alerts.yml").read_text()
