"""The manifests and compose file agree with the code: real subcommands, real probe paths and
ports, real settings, and every setting a deployment needs is provided."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from _deploy import OVERLAYS, ROOT, by_kind, containers, find, is_pricecast, overlay, workloads
from fastapi import APIRouter

from services.cli import build_parser
from services.common.config import Settings
from services.common.health import CheckResult, health_router

COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"
SECRETS_SCRIPT = ROOT / "k8s" / "scripts" / "create-dev-secrets.sh"

# Settings a cluster deployment must set explicitly: their defaults point at 127.0.0.1, start an
# embedded broker, or bind the API to loopback inside the pod.
MUST_PROVIDE = {
    "database_url",
    "redis_url",
    "kafka_bootstrap_servers",
    "api_host",
    "jwt_private_key_file",
    "jwt_public_keys_dir",
    "state_dir",
}


def parse(args: list[str]) -> argparse.Namespace:
    try:
        return build_parser().parse_args(args)
    except SystemExit as exc:  # argparse exits on an unknown command or option
        raise AssertionError(f"`pricecast {' '.join(args)}` is not a valid command") from exc


def env_name(field: str) -> str:
    info = Settings.model_fields[field]
    alias = info.validation_alias
    if alias is not None:
        choices = getattr(alias, "choices", [alias])
        return str(choices[0])
    return f"PRICECAST_{field.upper()}"


def env_names(field: str) -> set[str]:
    """Every environment name that sets ``field`` (alias choices included)."""
    alias = Settings.model_fields[field].validation_alias
    choices = getattr(alias, "choices", [alias]) if alias is not None else []
    return {env_name(field)} | {str(c) for c in choices if str(c).isupper()}


ENV_TO_FIELD = {name: f for f in Settings.model_fields for name in env_names(f)}


def all_pricecast_commands() -> list[tuple[str, list[str]]]:
    found: list[tuple[str, list[str]]] = []
    for name in OVERLAYS:
        for w in workloads(overlay(name)):
            for c in containers(w):
                if is_pricecast(c):
                    assert "command" not in c, "the image's ENTRYPOINT is `pricecast`"
                    found.append((f"{name}:{w['metadata']['name']}", list(c["args"])))
    compose = yaml.safe_load(COMPOSE.read_text())
    for svc_name, svc in compose["services"].items():
        if svc.get("image", "").startswith("pricecast") and "entrypoint" not in svc:
            found.append((f"compose:{svc_name}", list(svc["command"])))
    cmd = re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.M)
    assert cmd is not None
    found.append(("Dockerfile CMD", yaml.safe_load(cmd.group(1))))
    return found


def test_dockerfile_entrypoint_is_the_pricecast_console_script() -> None:
    assert re.search(r'^ENTRYPOINT \["pricecast"\]$', DOCKERFILE.read_text(), re.M)
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'pricecast = "services.cli:main"' in pyproject


def test_every_command_is_a_real_pricecast_subcommand() -> None:
    commands = all_pricecast_commands()
    seen = {args[0] for _, args in commands}
    assert {"api", "ingest", "predict", "migrate", "train"} <= seen
    for where, args in commands:
        ns = parse(args)
        assert callable(ns.func), where
    pending = [ns for _, a in commands if (ns := parse(a)).command == "train" and ns.pending]
    assert pending, "a CronJob runs `pricecast train --pending`"


def test_docs_commands_are_real_subcommands() -> None:
    """`pricecast ...` lines in docs/deploy.md parse with the real CLI."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    lines = re.findall(r"pricecast ((?:token|clients|models|migrate|train|doctor)\b[^`\n|]*)", text)
    assert lines
    for line in lines:
        parse(shlex.split(line))


def health_paths() -> set[str]:
    async def ok() -> CheckResult:
        return CheckResult("healthy", 0.0)

    router: APIRouter = health_router(
        {"database": ok, "redis": ok, "kafka": ok}, critical={"database"}
    )
    return {getattr(r, "path", "") for r in router.routes}


EXPECTED_PORT = {  # what each service listens on, from Settings
    "api": Settings().api_port,
    "ingest": Settings().ingest_health_port,
    "predict": Settings().predict_health_port,
}


@pytest.mark.parametrize("name", OVERLAYS)
def test_probe_paths_and_ports_exist_in_the_app(name: str) -> None:
    paths = health_paths()
    manifests = overlay(name)
    config = find(manifests, "ConfigMap", "pricecast-config")["data"]
    for d in by_kind(manifests, "Deployment"):
        for c in containers(d):
            if not is_pricecast(c):
                continue
            port = c["ports"][0]
            assert port["containerPort"] == EXPECTED_PORT[c["args"][0]], d["metadata"]["name"]
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                get = c[probe]["httpGet"]
                assert get["path"] in paths, (d["metadata"]["name"], probe, get["path"])
                assert get["port"] in (port["name"], port["containerPort"])
    assert int(config["PRICECAST_API_PORT"]) == EXPECTED_PORT["api"]
    assert int(config["PRICECAST_INGEST_HEALTH_PORT"]) == EXPECTED_PORT["ingest"]
    assert int(config["PRICECAST_PREDICT_HEALTH_PORT"]) == EXPECTED_PORT["predict"]
    services = {s["metadata"]["name"]: s for s in by_kind(manifests, "Service")}
    assert services["pricecast-api"]["spec"]["ports"][0]["port"] == EXPECTED_PORT["api"]


def test_compose_healthchecks_use_real_paths_and_ports() -> None:
    paths = health_paths()
    compose = yaml.safe_load(COMPOSE.read_text())
    for svc in ("api", "ingestion", "prediction"):
        spec = compose["services"][svc]
        port = EXPECTED_PORT[spec["command"][0]]
        test = " ".join(spec["healthcheck"]["test"])
        url = re.search(r"http://127\.0\.0\.1:(\d+)(/[\w/]*)", test)
        assert url is not None, svc
        assert int(url.group(1)) == port and url.group(2) in paths, svc
        assert spec["environment"]["HEALTHCHECK_URL"].endswith(f":{port}/health")


def _provided(manifests: list[dict[str, Any]], container: dict[str, Any]) -> set[str]:
    """Env names a container gets: ConfigMap data, Secret keys (from the dev-secrets script),
    and literal env entries."""
    names = {e["name"] for e in container.get("env", [])}
    for src in container.get("envFrom", []):
        if "configMapRef" in src:
            names |= set(find(manifests, "ConfigMap", src["configMapRef"]["name"])["data"])
        if "secretRef" in src:
            names |= secret_keys(src["secretRef"]["name"])
    return names


def secret_keys(secret: str) -> set[str]:
    """Keys the documented secret-creation script puts in ``secret``."""
    script = SECRETS_SCRIPT.read_text()
    block = re.search(rf"create secret generic {secret}\b(.*?)(?:\n\s*\n|\| kubectl)", script, re.S)
    assert block is not None, f"{SECRETS_SCRIPT.name} does not create Secret {secret}"
    return set(re.findall(r"--from-(?:literal|file)=([A-Za-z_.-]+)=", block.group(1)))


@pytest.mark.parametrize("name", OVERLAYS)
def test_every_setting_is_real_and_every_needed_one_is_provided(name: str) -> None:
    manifests = overlay(name)
    required = {f for f, info in Settings.model_fields.items() if info.is_required()}
    for w in workloads(manifests):
        for c in containers(w):
            if not is_pricecast(c):
                continue
            provided = _provided(manifests, c)
            unknown = {n for n in provided if n.startswith("PRICECAST_") or n in ENV_TO_FIELD}
            unknown -= set(ENV_TO_FIELD)
            assert not unknown, f"{w['metadata']['name']}: not settings: {unknown}"
            fields = {ENV_TO_FIELD[n] for n in provided if n in ENV_TO_FIELD}
            missing = (required | MUST_PROVIDE) - fields
            assert not missing, f"{w['metadata']['name']} lacks {sorted(missing)}"


@pytest.mark.parametrize("name", OVERLAYS)
def test_settings_values_parse(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ConfigMap's values are accepted by the real Settings (types, literals)."""
    data = find(overlay(name), "ConfigMap", "pricecast-config")["data"]
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.kafka_configured
    assert settings.api_host == "0.0.0.0"
    assert settings.state_dir == Path("/tmp/pricecast")


def test_jwt_key_files_are_mounted_where_settings_point() -> None:
    for name in OVERLAYS:
        manifests = overlay(name)
        data = find(manifests, "ConfigMap", "pricecast-config")["data"]
        api = containers(find(manifests, "Deployment", "pricecast-api"))[0]
        mounts = {m["mountPath"] for m in api["volumeMounts"]}
        assert str(Path(data["PRICECAST_JWT_PRIVATE_KEY_FILE"]).parent) in mounts
        assert data["PRICECAST_JWT_PUBLIC_KEYS_DIR"] in mounts
        assert "private.pem" in secret_keys("pricecast-jwt-private")


def test_compose_settings_are_real() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for svc_name, svc in compose["services"].items():
        if not svc.get("image", "").startswith("pricecast"):
            continue
        env = svc.get("environment", {})
        unknown = {n for n in env if n.startswith("PRICECAST_")} - set(ENV_TO_FIELD)
        assert not unknown, f"compose {svc_name}: {unknown}"
        if svc_name in ("api", "ingestion", "prediction", "migrate"):
            assert {"DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS"} <= set(env)
