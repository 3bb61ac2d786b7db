"""ops/alertmanager/alertmanager.yml: valid for ``amtool check-config``, routes by severity,
groups by alert and symbol, inhibits only real alerts, and keeps every secret in a file."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from _deploy import ROOT, tool

CONFIG = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
TEMPLATES = ROOT / "ops" / "alertmanager" / "templates"
RULES = ROOT / "ops" / "prometheus" / "rules"
SECRETS_DIR = "/etc/alertmanager/secrets/"
# Receiver fields that carry a secret: Alertmanager also accepts each as a *_file.
SECRET_FIELDS = {"api_url", "auth_password", "auth_secret", "service_key", "routing_key"}


def config() -> dict[str, Any]:
    doc = yaml.safe_load(CONFIG.read_text())
    assert isinstance(doc, dict)
    return doc


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("amtool"), *args], capture_output=True, text=True, check=False, cwd=ROOT
    )


def alerts() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule
        for path in sorted(RULES.glob("*.yaml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "alert" in rule
    }


def test_amtool_check_config() -> None:
    proc = amtool("check-config", str(CONFIG))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS" in proc.stdout and " - 1 templates" in proc.stdout, proc.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=PricecastDependencyDown", "severity=critical"], "critical"),
        (["alertname=PricecastTicksStale", "severity=warning", "symbol=BTC-USD"], "warning"),
        (["alertname=Watchdog"], "default"),
    ],
)
def test_routes_by_severity(labels: list[str], receiver: str) -> None:
    proc = amtool(
        "config",
        "routes",
        "test",
        f"--config.file={CONFIG}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_severity_of_the_rules_has_its_route() -> None:
    severities = {rule["labels"]["severity"] for rule in alerts().values()}
    routed = {
        m.split("=", 1)[1].strip('"')
        for route in config()["route"]["routes"]
        for m in route["matchers"]
        if m.startswith("severity=")
    }
    assert severities - {"info"} <= routed, severities - routed


def test_grouping_and_cooldown() -> None:
    route = config()["route"]
    assert route["group_by"] == ["alertname", "symbol"]
    for r in [route, *route["routes"]]:
        for key in ("group_wait", "group_interval", "repeat_interval"):
            assert re.fullmatch(r"\d+[smh]", str(r.get(key, route[key]))), (r["receiver"], key)


def test_inhibition_names_real_alerts_and_silences_lag_while_the_broker_is_down() -> None:
    names = set(alerts())
    rules = config()["inhibit_rules"]
    for rule in rules:
        for side in ("source_matchers", "target_matchers"):
            for m in rule[side]:
                found = re.fullmatch(r'alertname(=~?)"(.+)"', m)
                if found is None:
                    continue
                op, value = found.groups()
                pattern = value if op == "=~" else re.escape(value)
                assert any(re.fullmatch(pattern, n) for n in names), (side, m)
    broker = [r for r in rules if 'dependency="kafka"' in r["source_matchers"]]
    assert broker and any("PricecastConsumerLag" in m for m in broker[0]["target_matchers"])


def _walk(node: Any, path: str = "") -> list[tuple[str, Any]]:
    if isinstance(node, dict):
        return [
            kv for k, v in node.items() for kv in [(f"{path}.{k}", v), *_walk(v, f"{path}.{k}")]
        ]
    if isinstance(node, list):
        return [kv for i, v in enumerate(node) for kv in _walk(v, f"{path}[{i}]")]
    return []


def test_secrets_come_from_files_never_from_the_config() -> None:
    cfg = config()
    fields = _walk(cfg["receivers"]) + _walk(cfg.get("global", {}))
    for path, value in fields:
        key = path.rsplit(".", 1)[-1]
        assert key not in SECRET_FIELDS | {"credentials", "password"}, f"{path} is a literal"
        if key.endswith("_file"):
            assert str(value).startswith(SECRETS_DIR), path
    receivers = {r["name"]: r for r in cfg["receivers"]}
    assert {"default", "critical", "warning", "slack", "email"} <= set(receivers)
    assert receivers["slack"]["slack_configs"][0]["api_url_file"]
    assert receivers["email"]["email_configs"][0]["auth_password_file"]


@pytest.mark.parametrize(
    "name",
    [
        "pricecast.slack.title",
        "pricecast.slack.text",
        "pricecast.email.subject",
        "pricecast.email.html",
    ],
)
def test_notification_templates_render(name: str) -> None:
    proc = amtool(
        "template",
        "render",
        f"--template.glob={TEMPLATES}/*.tmpl",
        f'--template.text={{{{ template "{name}" . }}}}',
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip(), name
