"""deploy/k8s: every manifest parses, and the fields that must agree do: probe paths and ports, the
container port with the Dockerfile and the Service, the non-root user with the image's, the writable
emptyDirs under a read-only root file system, the token from a Secret, scraping, autoscaling.

Not validated against the Kubernetes API schemas here (see docs/CONTAINER.md for how that was done)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

MANIFESTS = (
    "deployment.yaml",
    "service.yaml",
    "hpa.yaml",
    "pdb.yaml",
    "thresholds-configmap.yaml",
    "servicemonitor.yaml",
)


@pytest.fixture(scope="module")
def k8s(deploy_dir: Path) -> dict[str, dict[str, Any]]:
    """kind -> the one manifest of that kind in deploy/k8s."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted((deploy_dir / "k8s").glob("*.yaml")):
        with path.open(encoding="utf-8") as f:
            for document in yaml.safe_load_all(f):
                if document is None:
                    continue
                assert {"apiVersion", "kind"} <= set(document), path.name
                assert document["kind"] not in found, f"two {document['kind']} manifests"
                found[document["kind"]] = document
    return found


@pytest.fixture(scope="module")
def pod(k8s: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return k8s["Deployment"]["spec"]["template"]


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    (only,) = pod["spec"]["containers"]
    return only


def test_every_manifest_parses_and_kustomization_lists_them(deploy_dir: Path, k8s: dict[str, Any]) -> None:
    assert set(k8s) == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "ServiceMonitor",
        "ConfigMap",
        "Kustomization",
    }
    resources = k8s["Kustomization"]["resources"]
    assert sorted(resources) == sorted(set(MANIFESTS) - {"servicemonitor.yaml"})
    for name in MANIFESTS:
        assert (deploy_dir / "k8s" / name).is_file()
    assert k8s["ServiceMonitor"]["apiVersion"] == "monitoring.coreos.com/v1"
    assert k8s["HorizontalPodAutoscaler"]["apiVersion"] == "autoscaling/v2"


def test_probes(container: dict[str, Any]) -> None:
    port_names = {port["name"] for port in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in port_names, probe


def test_ports_agree_with_dockerfile_service_and_scraping(
    root: Path, k8s: dict[str, Any], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    dockerfile = (root / "Dockerfile").read_text()
    expose = re.search(r"^EXPOSE (\d+)$", dockerfile, re.MULTILINE)
    assert expose is not None
    (port,) = container["ports"]
    assert port["containerPort"] == int(expose.group(1))
    command = container["command"]
    assert command[command.index("--port") + 1] == str(port["containerPort"])
    assert command[command.index("--host") + 1] == "0.0.0.0"

    service = k8s["Service"]
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] in (port["name"], port["containerPort"])
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert k8s["Deployment"]["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()

    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(port["containerPort"])
    assert annotations["prometheus.io/path"] == "/metrics"
    monitor = k8s["ServiceMonitor"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert [e["port"] for e in monitor["endpoints"]] == [service_port["name"]]
    assert monitor["endpoints"][0]["path"] == "/metrics"
    # alerts.yml selects job="vae-anomaly"; a ServiceMonitor's job label is the Service's name
    assert service["metadata"]["name"] == "vae-anomaly"


def test_runs_as_the_images_non_root_user(root: Path, pod: dict[str, Any], container: dict[str, Any]) -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (root / "Dockerfile").read_text(), re.MULTILINE)
    assert user is not None
    context = pod["spec"]["securityContext"]
    assert context["runAsNonRoot"] is True
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))
    own = container["securityContext"]
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]


def test_writable_paths_are_empty_dirs_and_model_is_read_only(pod: dict[str, Any], container: dict[str, Any]) -> None:
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    env = {item["name"]: item for item in container["env"]}
    multiproc = env["PROMETHEUS_MULTIPROC_DIR"]["value"]
    assert "emptyDir" in volumes[mounts[multiproc]["name"]]
    model = mounts["/model"]
    assert model["readOnly"] is True
    assert set(volumes[model["name"]]) - {"name"} <= {"persistentVolumeClaim", "emptyDir"}


def test_token_comes_from_a_secret(container: dict[str, Any]) -> None:
    env = {item["name"]: item for item in container["env"]}
    token = env["VAE_ANOMALY_API_TOKEN"]
    assert "value" not in token
    assert set(token["valueFrom"]["secretKeyRef"]) == {"name", "key"}


def test_shutdown_drains_before_the_grace_period_ends(pod: dict[str, Any], container: dict[str, Any]) -> None:
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert pod["spec"]["terminationGracePeriodSeconds"] > int(command[1]) + 10


def test_resources_and_autoscaling(k8s: dict[str, Any], container: dict[str, Any]) -> None:
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and {"cpu", "memory"} <= set(resources["limits"])
    hpa = k8s["HorizontalPodAutoscaler"]["spec"]
    target = hpa["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", k8s["Deployment"]["metadata"]["name"])
    pods, cpu = hpa["metrics"]  # requests in flight per pod, CPU as the fallback
    assert (pods["type"], cpu["type"], cpu["resource"]["name"]) == ("Pods", "Resource", "cpu")
    assert pods["pods"]["metric"]["name"] == "vae_anomaly_in_flight_requests"
    assert 1 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    assert "replicas" not in k8s["Deployment"]["spec"], "the HPA owns the replica count"
    budget = k8s["PodDisruptionBudget"]["spec"]
    assert budget["minAvailable"] < hpa["minReplicas"]


def test_the_hpa_metric_is_exported_and_served_by_the_adapter(
    root: Path, deploy_dir: Path, k8s: dict[str, Any]
) -> None:
    name = k8s["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["pods"]["metric"]["name"]
    assert f'"{name}"' in (root / "service" / "metrics.py").read_text()  # the service exports it
    rules = yaml.safe_load((deploy_dir / "prometheus-adapter" / "rules.yaml").read_text())
    (rule,) = rules["rules"]["custom"]
    assert rule["name"]["as"] == name and name in rule["seriesQuery"]
    assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_every_pod_reads_the_thresholds_configmap(k8s: dict[str, Any], pod: dict[str, Any], container: dict[str, Any]):
    env = {item["name"]: item.get("value") for item in container["env"]}
    path = Path(env["VAE_ANOMALY_THRESHOLDS_FILE"])
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    mount = mounts[str(path.parent)]
    assert mount["readOnly"] is True
    volumes = {volume["name"]: volume for volume in pod["spec"]["volumes"]}
    configmap = k8s["ConfigMap"]
    assert volumes[mount["name"]]["configMap"]["name"] == configmap["metadata"]["name"]
    assert path.name in configmap["data"]
    json.loads(configmap["data"][path.name])  # valid JSON


def test_torch_threads_follow_the_serve_rule_for_the_cpu_limit(
    container: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch sees the node's cores, not the pod's CPU limit, so the manifest sets the threads; they must
    be what `serve` would choose on a machine with the limit's cores (one worker, 2 CPUs: 1 thread,
    the other CPU for the worker's event loop)."""
    from vae_anomaly.service import server
    from vae_anomaly.service.settings import Settings

    env = {item["name"]: item.get("value") for item in container["env"]}
    monkeypatch.setattr(server, "available_cores", lambda: int(container["resources"]["limits"]["cpu"]))
    monkeypatch.delenv("VAE_ANOMALY_TORCH_THREADS", raising=False)
    workers = int(env.get("VAE_ANOMALY_WORKERS") or 1)
    assert int(env["VAE_ANOMALY_TORCH_THREADS"]) == server.threads_per_worker(Settings(workers=workers))
