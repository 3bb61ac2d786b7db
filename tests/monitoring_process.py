"""Helpers for tests that run the real Prometheus and Alertmanager (Debian's binaries, installed
by ``make tools``) on free loopback ports, with test copies of the shipped configuration."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from services.common import infra

ROOT = Path(__file__).resolve().parents[1]
RULES_DIR = ROOT / "ops" / "prometheus" / "rules"
ALERTMANAGER_CONFIG = ROOT / "ops" / "alertmanager" / "alertmanager.yml"
WEBHOOK_LOG = ROOT / "ops" / "alertmanager" / "webhook_log.py"
HINT = "run `make tools` (ops/tools/install-tools.sh installs Debian's prometheus packages)"


def binary(*names: str) -> str:
    """The first of ``names`` on PATH; fails (never skips) when none is there."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError(f"none of {names} on PATH: {HINT}")


def wait_until(predicate: Callable[[], Any], limit_s: float, what: str) -> Any:
    """Poll ``predicate`` until it returns something truthy (bounded); return that."""
    deadline = time.monotonic() + limit_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s:g}s waiting for {what}")
        time.sleep(0.1)


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        infra.stop_process(self.proc)

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def _start(name: str, argv: list[str], port: int, log: Path, ready_path: str) -> Server:
    proc = infra.spawn(argv, log)  # SIGTERMed if the test process dies
    server = Server(name, proc, port, log)

    def ready() -> bool:
        assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{server.tail()}"
        try:
            return httpx.get(server.url + ready_path, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(ready, 60, f"{name} to be ready")
    except BaseException:
        server.stop()
        raise
    return server


def start_alertmanager(config: Path, workdir: Path) -> Server:
    """Alertmanager on a free loopback port, without its gossip cluster (no other port)."""
    port = infra.free_port()
    argv = [
        binary("prometheus-alertmanager", "alertmanager"),
        f"--config.file={config}",
        f"--storage.path={workdir / 'alertmanager-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
    ]
    return _start("alertmanager", argv, port, workdir / "alertmanager.log", "/-/ready")


def start_prometheus(config: Path, workdir: Path, *flags: str) -> Server:
    port = infra.free_port()
    argv = [
        binary("prometheus"),
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'prometheus-data'}",
        f"--web.listen-address=127.0.0.1:{port}",
        *flags,
    ]
    return _start("prometheus", argv, port, workdir / "prometheus.log", "/-/ready")


# --- test copies of the shipped configuration ---------------------------------------------


def rules_with_for(source: Path, for_: str) -> dict[str, Any]:
    """The rule file ``source`` with every ``for:`` set to ``for_``; nothing else changes."""
    doc: dict[str, Any] = yaml.safe_load(source.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = for_
    return doc


def alertmanager_config_for_test(webhook_url: str, **timing: str) -> dict[str, Any]:
    """The shipped Alertmanager config with every webhook pointed at ``webhook_url``, the
    templates found in the repository, and the given route timings (``group_wait``,
    ``group_interval``, ...) on every route; routing, grouping, inhibition and the other
    timings stay as shipped."""
    cfg: dict[str, Any] = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    cfg["templates"] = [str(ALERTMANAGER_CONFIG.parent / t) for t in cfg.get("templates", [])]
    for receiver in cfg["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook_url
    stack = [cfg["route"]]
    while stack:
        route = stack.pop()
        route.update({k: v for k, v in timing.items() if k in route or route is cfg["route"]})
        stack.extend(route.get("routes", []))
    return cfg


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- the webhook receiver ----------------------------------------------------------------


@dataclass
class Notification:
    at: float  # time.monotonic() when the line was read
    body: dict[str, Any]

    @property
    def alertname(self) -> str:
        return str(self.body.get("groupLabels", {}).get("alertname", ""))

    @property
    def status(self) -> str:
        return str(self.body.get("status"))


@dataclass
class WebhookLog:
    """ops/alertmanager/webhook_log.py (the compose stack's default receiver) as a process; its
    JSON lines collected with the time each was read."""

    proc: subprocess.Popen[str]
    url: str
    received: list[Notification] = field(default_factory=list)

    @classmethod
    def start(cls) -> WebhookLog:
        proc = subprocess.Popen(
            [sys.executable, str(WEBHOOK_LOG), "--host", "127.0.0.1", "--port", "0"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first.startswith("listening on 127.0.0.1:"), first
        log = cls(proc, f"http://{first.removeprefix('listening on ')}/alerts")
        threading.Thread(target=log._pump, daemon=True).start()
        return log

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.received.append(Notification(time.monotonic(), json.loads(line)))

    def of(self, alertname: str, status: str | None = None) -> list[Notification]:
        return [
            n
            for n in list(self.received)
            if n.alertname == alertname and (status is None or n.status == status)
        ]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def metric_value(base_url: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` (with ``labels``) on ``base_url/metrics``."""
    total = 0.0
    for line in httpx.get(f"{base_url}/metrics", timeout=5).text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        metric, _, rest = series.partition("{")
        if metric != name or not all(f'{k}="{v}"' in rest for k, v in labels.items()):
            continue
        total += float(value)
    return total


# --- Alertmanager's API ------------------------------------------------------------------


@contextmanager
def shipped_alertmanager(workdir: Path) -> Iterator[Server]:
    """Alertmanager with the shipped config, its webhooks pointed at a WebhookLog."""
    webhook = WebhookLog.start()
    try:
        config = write_yaml(workdir / "alertmanager.yml", alertmanager_config_for_test(webhook.url))
        server = start_alertmanager(config, workdir)
        try:
            yield server
        finally:
            server.stop()
    finally:
        webhook.stop()


def post_alerts(
    server: Server, *alerts: dict[str, str], started_ago_s: float = 0.0, runbook: str = ""
) -> None:
    """Post firing alerts (ending in 10 minutes) to Alertmanager's API, as Prometheus does."""
    now = datetime.now(UTC)
    body = [
        {
            "labels": labels,
            "annotations": {"summary": "test", "runbook": runbook},
            "startsAt": (now - timedelta(seconds=started_ago_s)).isoformat(),
            "endsAt": (now + timedelta(minutes=10)).isoformat(),
        }
        for labels in alerts
    ]
    assert httpx.post(f"{server.url}/api/v2/alerts", json=body, timeout=5).status_code == 200


def held_alerts(server: Server) -> list[dict[str, Any]]:
    """Every alert Alertmanager holds, with its status (``inhibitedBy``, ``silencedBy``)."""
    alerts: list[dict[str, Any]] = httpx.get(f"{server.url}/api/v2/alerts", timeout=5).json()
    return alerts
