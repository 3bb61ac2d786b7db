"""Static checks of the Dockerfile, .dockerignore and the compose stack (no Docker engine here)."""

from __future__ import annotations

import re
from typing import Any

import yaml
from _deploy import ROOT

DOCKERFILE = ROOT / "docker" / "Dockerfile"
COMPOSE = ROOT / "docker" / "compose.yaml"
BUILD_TOOLS = ("build-essential", "gcc", "g++", "make ", "libpq-dev", "python3-dev", "cmake")


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for ins in instructions():
        if ins[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(ins)
    return result


def test_base_images_are_pinned_and_python_311_slim() -> None:
    froms = [args.split()[0] for word, args in instructions() if word == "FROM"]
    # The dashboard's assets are built in a Node stage (pinned too); the image is Python's.
    node = [i for i in froms if i.startswith("node:")]
    for image in node:
        assert "@sha256:" in image or re.fullmatch(r"node:\d+\.\d+\.\d+-\w+-slim", image), image
    froms = [i for i in froms if i not in node]
    assert len(froms) >= 2, "multi-stage build"
    for image in froms:
        pinned = "@sha256:" in image or re.fullmatch(r"python:3\.11\.\d+-slim-\w+", image)
        assert pinned, f"{image} is not pinned to a digest or an exact patch release"
        assert image.startswith("python:3.11") and "slim" in image


def test_final_stage_has_no_build_tools_and_runs_as_non_root() -> None:
    final = stages()[-1]
    body = " ".join(args for _, args in final)
    for tool_name in BUILD_TOOLS:
        assert tool_name not in body, f"final stage mentions {tool_name.strip()}"
    assert not any(word == "RUN" and "apt-get install" in args for word, args in final)
    users = [args for word, args in final if word == "USER"]
    assert users and not users[-1].startswith(("root", "0")), users
    uid = int(users[-1].split(":")[0])
    assert uid >= 10000
    copies = [args for word, args in final if word == "COPY"]
    assert all(c.startswith("--from=builder") for c in copies), copies
    assert any(word == "HEALTHCHECK" for word, _ in final)


def test_cpu_torch_pinned_like_the_project() -> None:
    body = DOCKERFILE.read_text()
    assert '"torch==2.13.0"' in body and "whl/cpu" in body
    assert 'torch==2.13.0"' in (ROOT / "pyproject.toml").read_text()


def test_image_installs_the_locked_set_with_hashes() -> None:
    body = DOCKERFILE.read_text()
    assert "pip install --require-hashes -r requirements/runtime.txt" in body
    assert "pip install --no-deps -e ." in body
    assert "!requirements/runtime.txt" in (ROOT / ".dockerignore").read_text().splitlines()


def test_dockerignore_keeps_context_small_and_secret_free() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "**", "deny by default"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, args in [ins for stage in stages() for ins in stage]:
        if word == "COPY" and not args.startswith("--from"):
            copied |= set(args.split()[:-1])
    assert copied <= allowed, copied - allowed
    assert not {".venv", ".git", ".pricecast", ".env"} & allowed


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def test_compose_has_the_full_stack() -> None:
    services = compose()["services"]
    wanted = {"timescaledb", "kafka", "redis", "migrate", "api", "ingestion", "prediction"}
    assert wanted | {"prometheus", "alertmanager", "alert-webhook", "grafana"} <= set(services)
    assert services["timescaledb"]["image"].startswith("timescale/timescaledb:")
    kafka_env = services["kafka"]["environment"]
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller", "KRaft, no ZooKeeper"
    assert not any("zookeeper" in s for s in services)


def test_compose_images_pinned_and_long_running_services_have_healthchecks() -> None:
    for name, svc in compose()["services"].items():
        image = svc["image"]
        assert ":" in image and not image.endswith(":latest"), name
        if svc.get("restart", "no") != "no":
            test = svc["healthcheck"]["test"]
            assert test and test[0] in ("CMD", "CMD-SHELL"), name


def test_compose_ordering_migrate_before_services() -> None:
    services = compose()["services"]
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["timescaledb"]["condition"] == "service_healthy"
    for name in ("api", "ingestion", "prediction"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["kafka"]["condition"] == "service_healthy"


def test_compose_ports_on_loopback_and_app_containers_hardened() -> None:
    for name, svc in compose()["services"].items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} publicly"
        if svc["image"].startswith("pricecast"):
            assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"], name
            assert "no-new-privileges:true" in svc["security_opt"], name


def test_compose_mounts_shared_monitoring_files() -> None:
    services = compose()["services"]
    prom = " ".join(services["prometheus"]["volumes"])
    graf = " ".join(services["grafana"]["volumes"])
    assert "../ops/prometheus/rules:" in prom and "../ops/prometheus/prometheus.yml:" in prom
    assert "../ops/grafana/dashboards:" in graf and "../ops/grafana/provisioning:" in graf
    for rel in ("ops/prometheus/prometheus.yml", "ops/grafana/dashboards/pricecast.json"):
        assert (ROOT / rel).is_file()
    config = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert {"api:8000", "ingestion:9101", "prediction:9102"} <= targets
    assert config["rule_files"] == ["/etc/prometheus/rules/*.yaml"]


def test_compose_alertmanager_uses_the_shared_config_and_secret_files() -> None:
    services = compose()["services"]
    am = services["alertmanager"]
    volumes = {v.split(":")[1]: v.split(":")[0] for v in am["volumes"]}
    assert volumes["/etc/alertmanager/alertmanager.yml"] == "../ops/alertmanager/alertmanager.yml"
    assert volumes["/etc/alertmanager/templates"] == "../ops/alertmanager/templates"
    assert volumes["/etc/alertmanager/secrets"].startswith("./")  # files, git-ignored
    assert "docker/alertmanager-secrets/" in (ROOT / ".gitignore").read_text()
    assert "--config.file=/etc/alertmanager/alertmanager.yml" in am["command"]
    assert "--cluster.listen-address=" in am["command"], "one instance: no gossip port"
    assert not any(k in str(am.get("environment", {})) for k in ("api_url", "PASSWORD"))
    # Prometheus sends its alerts there; the services' doctor reads them from there.
    config = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    targets = [
        t
        for am_cfg in config["alerting"]["alertmanagers"]
        for sc in am_cfg["static_configs"]
        for t in sc["targets"]
    ]
    assert targets == ["alertmanager:9093"]
    port = am["ports"][0].rsplit(":", 1)[1]
    assert port == "9093"
    env = services["api"]["environment"]
    assert env["PRICECAST_ALERTMANAGER_URL"] == "http://alertmanager:9093"


def test_compose_default_webhook_receiver_is_the_shipped_one() -> None:
    services = compose()["services"]
    hook = services["alert-webhook"]
    assert hook["entrypoint"][:2] == ["python", "/opt/alert-webhook/webhook_log.py"]
    assert (
        "../ops/alertmanager/webhook_log.py:/opt/alert-webhook/webhook_log.py:ro"
        in (hook["volumes"])
    )
    port = hook["entrypoint"][hook["entrypoint"].index("--port") + 1]
    config = yaml.safe_load((ROOT / "ops/alertmanager/alertmanager.yml").read_text())
    urls = {h["url"] for r in config["receivers"] for h in r.get("webhook_configs", [])}
    assert urls == {f"http://alert-webhook:{port}/alerts"}
    assert hook["read_only"] is True and hook["cap_drop"] == ["ALL"]
