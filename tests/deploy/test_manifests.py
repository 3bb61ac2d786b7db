"""Every overlay renders with kubectl kustomize, validates against the Kubernetes schemas
(offline, strict) and meets Pod Security "restricted" plus the project's own rules."""

from __future__ import annotations

import re

import pytest
import yaml
from _deploy import (
    K8S,
    OVERLAYS,
    ROOT,
    by_kind,
    containers,
    find,
    is_pricecast,
    overlay,
    pod_spec,
    render,
    skip_annotations,
    workloads,
)
from kubernetes_validate import utils as kv

# Oldest Kubernetes release the manifests must run on (CronJob timeZone is GA since 1.27) and the
# newest the validator knows.
K8S_VERSIONS = ("1.29.0", kv.latest_version())


@pytest.mark.parametrize("target", ["base", *(f"overlays/{o}" for o in OVERLAYS)])
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_renders_and_validates_against_schemas(target: str, version: str) -> None:
    manifests = render(target)
    assert len(manifests) > 10
    errors = []
    for m in manifests:
        try:
            kv.validate(m, version, strict=True)
        except kv.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            errors.append(f"{m['kind']}/{m['metadata']['name']}: {path}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_overlays_exist_for_every_directory() -> None:
    assert sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir()) == sorted(OVERLAYS)


@pytest.mark.parametrize("name", OVERLAYS)
def test_everything_lives_in_the_restricted_namespace(name: str) -> None:
    manifests = overlay(name)
    ns = find(manifests, "Namespace", "pricecast")
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "audit", "warn"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
    for m in manifests:
        if m["kind"] != "Namespace":
            assert m["metadata"].get("namespace") == "pricecast", m["metadata"]["name"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_pods_meet_pod_security_restricted(name: str) -> None:
    for w in workloads(overlay(name)):
        spec = pod_spec(w)
        where = f"{w['kind']}/{w['metadata']['name']}"
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert psc["seccompProfile"]["type"] == "RuntimeDefault", where
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
        for vol in spec.get("volumes", []):
            assert "hostPath" not in vol, where
        for c in containers(w):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert not sc.get("capabilities", {}).get("add"), where
            assert not sc.get("privileged"), where
            assert "ports" not in c or all("hostPort" not in p for p in c["ports"]), where
            # Read-only root everywhere, unless the resource justifies the exception in place.
            if sc["readOnlyRootFilesystem"] is not True:
                assert len(skip_annotations(w).get("CKV_K8S_22", "")) > 40, where


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_container_has_requests_and_limits(name: str) -> None:
    for w in workloads(overlay(name)):
        for c in containers(w):
            res = c["resources"]
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(res[part]), f"{w['metadata']['name']} {part}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_pricecast_pods_are_locked_down(name: str) -> None:
    manifests = overlay(name)
    accounts = {sa["metadata"]["name"]: sa for sa in by_kind(manifests, "ServiceAccount")}
    for w in workloads(manifests):
        if not any(is_pricecast(c) for c in containers(w)):
            continue
        spec = pod_spec(w)
        where = w["metadata"]["name"]
        assert spec["automountServiceAccountToken"] is False, where
        assert accounts[spec["serviceAccountName"]]["automountServiceAccountToken"] is False
        assert spec["securityContext"]["runAsUser"] >= 10000, where
        tmp = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for c in containers(w):
            assert c["securityContext"]["readOnlyRootFilesystem"] is True, where
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            assert mounts.get("/tmp") in tmp, f"{where}: /tmp must be an emptyDir"


@pytest.mark.parametrize("name", OVERLAYS)
def test_long_running_pricecast_containers_have_all_three_probes(name: str) -> None:
    for d in by_kind(overlay(name), "Deployment"):
        for c in containers(d):
            if not is_pricecast(c):
                continue
            assert c["livenessProbe"]["httpGet"]["path"] == "/health"
            assert c["readinessProbe"]["httpGet"]["path"] == "/health/ready"
            assert c["startupProbe"]["httpGet"]["path"] == "/health"


@pytest.mark.parametrize("name", OVERLAYS)
def test_api_autoscales_and_has_a_disruption_budget(name: str) -> None:
    manifests = overlay(name)
    api = find(manifests, "Deployment", "pricecast-api")
    hpa = find(manifests, "HorizontalPodAutoscaler", "pricecast-api")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "pricecast-api",
    }
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pdb = find(manifests, "PodDisruptionBudget", "pricecast-api")
    assert pdb["spec"]["selector"]["matchLabels"] == api["spec"]["selector"]["matchLabels"]
    # A budget that could never be met would block every node drain.
    assert pdb["spec"]["minAvailable"] < hpa["spec"]["minReplicas"] or (
        pdb["spec"]["minAvailable"] == 1 and hpa["spec"]["minReplicas"] == 1
    )


@pytest.mark.parametrize("name", OVERLAYS)
def test_retraining_cronjobs(name: str) -> None:
    manifests = overlay(name)
    nightly = find(manifests, "CronJob", "pricecast-train")
    pending = find(manifests, "CronJob", "pricecast-train-pending")
    assert re.fullmatch(r"\d+ \d+ \* \* \*", nightly["spec"]["schedule"])
    assert pending["spec"]["schedule"] == "*/10 * * * *"
    assert containers(nightly)[0]["args"] == ["train"]
    assert containers(pending)[0]["args"] == ["train", "--pending"]
    for cj in (nightly, pending):
        assert cj["spec"]["concurrencyPolicy"] == "Forbid"
        job = cj["spec"]["jobTemplate"]["spec"]
        assert job["backoffLimit"] >= 1
        assert job["activeDeadlineSeconds"] > 0
    migrate = find(manifests, "Job", "pricecast-migrate")
    assert containers(migrate)[0]["args"] == ["migrate"]
    assert migrate["spec"]["activeDeadlineSeconds"] > 0


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policies_default_deny_then_allow_needed_flows(name: str) -> None:
    manifests = overlay(name)
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(manifests, "NetworkPolicy")}
    deny = policies["default-deny-all"]
    assert deny["podSelector"] == {}
    assert set(deny["policyTypes"]) == {"Ingress", "Egress"}
    assert "ingress" not in deny and "egress" not in deny
    dns = policies["allow-dns"]
    assert dns["podSelector"] == {}
    assert {(p["protocol"], p["port"]) for p in dns["egress"][0]["ports"]} == {
        ("UDP", 53),
        ("TCP", 53),
    }
    # Every workload is selected by at least one allow policy besides deny-all and DNS.
    allow = [p for n, p in policies.items() if n not in ("default-deny-all", "allow-dns")]
    for w in workloads(manifests):
        labels = (
            w["spec"]["template"]["metadata"]["labels"]
            if w["kind"] != "CronJob"
            else (w["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"])
        )
        assert any(_selects(p["podSelector"], labels) for p in allow), w["metadata"]["name"]


def _selects(selector: dict[str, object], labels: dict[str, str]) -> bool:
    match = selector.get("matchLabels", {})
    assert isinstance(match, dict)
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expr in selector.get("matchExpressions", []):  # type: ignore[attr-defined]
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


@pytest.mark.parametrize("target", ["base", "overlays/prod"])
def test_no_secret_is_written_in_manifests(target: str) -> None:
    """Secrets are referenced, never rendered: they are created out of band (docs/deploy.md)."""
    manifests = render(target)
    assert not by_kind(manifests, "Secret")
    for w in workloads(manifests):
        for c in containers(w):
            for env in c.get("env", []):
                assert "value" not in env or not re.search(
                    r"(PASSWORD|SECRET|TOKEN|KEY)$", env["name"]
                ), env["name"]


def test_prod_points_at_external_services_and_scales_up() -> None:
    dev, prod = overlay("dev"), overlay("prod")
    assert not by_kind(prod, "StatefulSet")
    assert {s["metadata"]["name"] for s in by_kind(dev, "StatefulSet")} == {"timescaledb", "kafka"}
    prod_cfg = find(prod, "ConfigMap", "pricecast-config")["data"]
    assert "kafka:9092" not in prod_cfg["KAFKA_BOOTSTRAP_SERVERS"]
    assert int(prod_cfg["PRICECAST_KAFKA_REPLICATION_FACTOR"]) >= 3
    for name in ("pricecast-writer", "pricecast-prediction"):
        replicas = find(prod, "Deployment", name)["spec"]["replicas"]
        assert 1 < replicas <= int(prod_cfg["PRICECAST_KAFKA_PARTITIONS"]), name
        assert replicas > find(dev, "Deployment", name)["spec"]["replicas"]
    assert (
        find(prod, "HorizontalPodAutoscaler", "pricecast-api")["spec"]["minReplicas"]
        > find(dev, "HorizontalPodAutoscaler", "pricecast-api")["spec"]["minReplicas"]
    )


def test_price_sources_never_run_twice() -> None:
    for name in OVERLAYS:
        sources = find(overlay(name), "Deployment", "pricecast-ingestion")
        assert sources["spec"]["replicas"] == 1
        assert sources["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("name", OVERLAYS)
def test_pricecast_pods_are_scraped_by_prometheus(name: str) -> None:
    for d in by_kind(overlay(name), "Deployment"):
        c = containers(d)[0]
        if not is_pricecast(c):
            continue
        notes = d["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert int(notes["prometheus.io/port"]) == c["ports"][0]["containerPort"]
        assert notes["prometheus.io/path"] == "/metrics"


def test_dev_monitoring_mounts_rules_and_dashboard() -> None:
    manifests = overlay("dev")
    config_maps = {cm["metadata"]["name"] for cm in by_kind(manifests, "ConfigMap")}
    for deploy in ("prometheus", "grafana"):
        spec = pod_spec(find(manifests, "Deployment", deploy))
        for vol in spec["volumes"]:
            if "configMap" in vol:
                assert vol["configMap"]["name"] in config_maps, (deploy, vol)
    assert "pricecast.yaml" in find(manifests, "ConfigMap", "pricecast-prometheus-rules")["data"]
    assert "pricecast.json" in find(manifests, "ConfigMap", "pricecast-grafana-dashboards")["data"]


def test_dev_monitoring_runs_alertmanager_with_the_shipped_config() -> None:
    manifests = overlay("dev")
    deploy = find(manifests, "Deployment", "alertmanager")
    spec = pod_spec(deploy)
    (container,) = spec["containers"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--cluster.listen-address=" in container["args"], "one replica: no gossip port"
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config_file = next(a for a in container["args"] if a.startswith("--config.file="))
    assert config_file == f"--config.file={mounts['config']}/alertmanager.yml"
    cm = find(manifests, "ConfigMap", volumes["config"]["configMap"]["name"])
    assert (
        cm["data"]["alertmanager.yml"] == (ROOT / "ops/alertmanager/alertmanager.yml").read_text()
    )
    assert {i["path"] for i in volumes["config"]["configMap"]["items"]} == {
        "alertmanager.yml",
        "templates/pricecast.tmpl",
    }
    # Receiver secrets: files from an optional Secret, never rendered.
    secret = volumes["secrets"]["secret"]
    assert secret["secretName"] == "pricecast-alertmanager" and secret["optional"] is True
    assert mounts["secrets"] == "/etc/alertmanager/secrets"
    assert not by_kind(manifests, "Secret")
    # Prometheus sends to the Service, and the network policies let it (and doctor) through.
    service = find(manifests, "Service", "alertmanager")
    prom = yaml.safe_load(
        find(manifests, "ConfigMap", _prometheus_config(manifests))["data"]["prometheus.yml"]
    )
    targets = [
        t
        for a in prom["alerting"]["alertmanagers"]
        for sc in a["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == [f"alertmanager:{service['spec']['ports'][0]['port']}"]
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(manifests, "NetworkPolicy")}
    allowed_from = [
        f["podSelector"]["matchLabels"] for f in policies["alertmanager"]["ingress"][0]["from"]
    ]
    assert {"app.kubernetes.io/name": "prometheus"} in allowed_from
    assert {"pricecast.io/dependency-client": "true"} in allowed_from


def test_dev_monitoring_runs_the_default_webhook_receiver() -> None:
    manifests = overlay("dev")
    spec = pod_spec(find(manifests, "Deployment", "alert-webhook"))
    (container,) = spec["containers"]
    script = ROOT / "ops" / "alertmanager" / "webhook_log.py"
    assert container["command"][:2] == ["python", f"/opt/alert-webhook/{script.name}"]
    volume = next(v for v in spec["volumes"] if v["name"] == "script")
    cm = find(manifests, "ConfigMap", volume["configMap"]["name"])
    assert cm["data"][script.name] == script.read_text()
    port = container["command"][container["command"].index("--port") + 1]
    service = find(manifests, "Service", "alert-webhook")
    assert str(service["spec"]["ports"][0]["port"]) == port
    config = yaml.safe_load((ROOT / "ops/alertmanager/alertmanager.yml").read_text())
    urls = {h["url"] for r in config["receivers"] for h in r.get("webhook_configs", [])}
    assert urls == {f"http://alert-webhook:{port}/alerts"}


def _prometheus_config(manifests: list[dict[str, object]]) -> str:
    spec = pod_spec(find(manifests, "Deployment", "prometheus"))
    return next(str(v["configMap"]["name"]) for v in spec["volumes"] if v["name"] == "config")
