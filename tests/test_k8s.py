"""deploy/k8s and deploy/grafana: valid manifests, and the choices the platform relies on.

Manifests are checked offline against the Kubernetes schemas with `kubernetes-validate`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30"


def documents() -> list[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for _, d in documents() if d["kind"] == kind}


def test_every_manifest_in_the_kustomization_exists() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize(
    ("name", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_manifest_is_valid_kubernetes(name: str, doc: dict[str, Any]) -> None:
    # The image is set by kustomize's `images:`; the schema only wants a string.
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def containers() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for _, doc in documents():
        spec = doc.get("spec", {})
        pod = spec.get("template", {}).get("spec") or spec.get("jobTemplate", {}).get("spec", {})
        for c in pod.get("containers", []):
            out.append((doc["metadata"]["name"], c))
    return out


def test_every_process_runs_a_real_cli_command() -> None:
    from tests.test_deploy import check_cli_args

    for _, container in containers():
        check_cli_args(container["args"])


def test_every_container_reads_config_and_secret() -> None:
    for name, container in containers():
        refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
        assert refs == {"fabcity"}, name
    assert by_kind("Secret") == {}, "a placeholder Secret is applied with the manifests"
    example = yaml.safe_load((K8S / "examples" / "secret.yaml").read_text())
    assert example["kind"] == "Secret" and example["metadata"]["name"] == "fabcity"
    assert {"FABCITY_DATABASE_URL", "FABCITY_MQTT_USERNAME", "FABCITY_MQTT_PASSWORD"} <= set(
        example["stringData"]
    )


def test_settings_in_the_config_map_exist() -> None:
    from fabcity.core.settings import Settings

    known = {f"FABCITY_{name.upper()}" for name in Settings.model_fields}
    config = by_kind("ConfigMap")["fabcity"]["data"]
    example = yaml.safe_load((K8S / "examples" / "secret.yaml").read_text())["stringData"]
    for values in (config, example):
        assert set(values) <= known, set(values) - known


def test_bridges_share_one_group_with_stable_client_ids_and_a_window_above_the_batch() -> None:
    bridge = by_kind("StatefulSet")["fabcity-bridge"]
    assert bridge["spec"]["replicas"] >= 2
    env = bridge["spec"]["template"]["spec"]["containers"][0]["env"]
    client_id = next(e for e in env if e["name"] == "FABCITY_MQTT_CLIENT_ID")
    assert client_id["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    config = by_kind("ConfigMap")["fabcity"]["data"]
    assert config["FABCITY_MQTT_SHARE_GROUP"]
    assert int(config["FABCITY_MQTT_RECEIVE_MAXIMUM"]) > int(config["FABCITY_BRIDGE_BATCH_SIZE"])


def bridge_env(name: str) -> dict[str, Any]:
    env = by_kind("StatefulSet")[name]["spec"]["template"]["spec"]["containers"][0]["env"]
    return {e["name"]: e.get("value") for e in env}


def test_exactly_one_bridge_reads_the_device_adapters() -> None:
    """Adapters keep per-device state: two pods reading the device topics race on it."""
    from fabcity.core.settings import Settings

    sets = by_kind("StatefulSet")
    readers = sum(
        d["spec"]["replicas"]
        for name, d in sets.items()
        if bridge_env(name).get(
            "FABCITY_BRIDGE_ADAPTERS", str(Settings.model_fields["bridge_adapters"].default).lower()
        )
        == "true"
    )
    assert readers == 1
    assert bridge_env("fabcity-bridge")["FABCITY_BRIDGE_ADAPTERS"] == "false"
    assert bridge_env("fabcity-bridge-adapters")["FABCITY_BRIDGE_ADAPTERS"] == "true"
    # Each pod its own MQTT session: the two sets' client ids (their pod names) never meet.
    for name in sets:
        assert "FABCITY_MQTT_CLIENT_ID" in bridge_env(name)


def test_the_ingress_sends_each_route_to_the_role_that_serves_it() -> None:
    from tests.test_deploy import role_routes

    (ingress,) = by_kind("Ingress").values()
    (rule,) = ingress["spec"]["rules"]
    services = {s["metadata"]["name"] for s in by_kind("Service").values()}
    paths = [
        (p["path"], p["backend"]["service"]["name"], p["pathType"]) for p in rule["http"]["paths"]
    ]
    assert all(kind == "Prefix" for _, _, kind in paths)
    assert {name for _, name, _ in paths} <= services

    def routed(path: str) -> str:
        # Kubernetes Prefix matching is by path element: /v1/events matches /v1/events/x, not
        # /v1/eventsx; the longest prefix wins.
        fits = [
            (p, name)
            for p, name, _ in paths
            if p == "/" or path == p or path.startswith(p.rstrip("/") + "/")
        ]
        return max(fits, key=lambda pn: len(pn[0]))[1]

    ingest, query = role_routes("ingest") - role_routes("query"), role_routes("query")
    for method, path in ingest:
        assert routed(path) == "fabcity-ingest-api", (method, path)
    for method, path in query:
        assert routed(path) == "fabcity-query-api", (method, path)
    for name in ("fabcity-ingest-api", "fabcity-query-api"):
        (container,) = by_kind("Deployment")[name]["spec"]["template"]["spec"]["containers"]
        args = container["args"]
        assert args[args.index("--forwarded-allow-ips") + 1] == "*"


def test_one_beat_a_migrate_job_and_autoscaled_apis() -> None:
    assert by_kind("Deployment")["fabcity-beat"]["spec"]["replicas"] == 1
    job = by_kind("Job")["fabcity-migrate"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    scaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in by_kind("HorizontalPodAutoscaler").values()
    }
    assert {"fabcity-ingest-api", "fabcity-query-api"} <= scaled


def test_grafana_dashboard_charts_metrics_the_processes_export() -> None:
    from prometheus_client import REGISTRY

    from services.http import events  # noqa: F401  (registers their metrics
    from services.mqtt import bridge  # noqa: F401
    from workers import jobs  # noqa: F401

    exported = set()
    for family in REGISTRY.collect():
        exported.update({family.name, f"{family.name}_total"})  # a labelled counter: no samples yet
        exported.update(s.name for s in family.samples)
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "fabcity.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {m for e in exprs for m in re.findall(r"\b(fabcity_[a-z_]+)", e)}
    assert used, "the dashboard charts nothing"
    assert used <= exported, used - exported
