"""The stale-data alert end to end, on the real parts: the ingestion writer and the synthetic
feed as their own processes (the session's broker, a database of their own), Debian's Prometheus
scraping the writer's /metrics with the shipped rules, Debian's Alertmanager with the shipped
routing, and ops/alertmanager/webhook_log.py as the receiver. Everything on loopback, free ports.

Fast by configuration, not by editing what ships:
* the writer runs with ``PRICECAST_STALE_AFTER_S=5``: the rule compares each process's tick
  ages with that process's own setting (``pricecast_stale_after_seconds``);
* Prometheus loads a copy of ops/prometheus/rules/*.yaml in which only ``for:`` is rewritten
  (to 2 s), generated from the real files at test time, and scrapes and evaluates every second;
* Alertmanager loads the shipped config with the webhook URL pointed at the test's receiver and
  ``group_wait``/``group_interval`` shortened; routing, grouping, inhibition and
  ``repeat_interval`` (the cooldown) are the shipped ones.

Stop the feed: one notification per (alertname, symbol) group reaches the ``warning`` receiver;
Prometheus keeps re-sending the firing alerts every second, Alertmanager re-evaluates the groups
every group_interval, and still no second notification comes (cooldown); resume the feed: the
group's resolved notification comes. The timings are printed (pytest -s shows them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitoring_process import (
    RULES_DIR,
    Server,
    WebhookLog,
    alertmanager_config_for_test,
    metric_value,
    rules_with_for,
    start_alertmanager,
    start_prometheus,
    wait_until,
    write_yaml,
)

from services.common import infra
from services.common.config import DEFAULT_REDIS_URL

ALERT = "PricecastTicksStale"
SYMBOLS = ("ALRTA-USD", "ALRTB-USD")
STALE_AFTER_S = 5
FOR = "2s"
GROUP_WAIT, GROUP_INTERVAL = "1s", "2s"
FLUSHES_WITHOUT_RENOTIFY = 3  # group_interval rounds watched after the first notification


def _service_env(database_url: str, bootstrap: str, tag: str, port: int) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PRICECAST_") and k != "KAFKA_BOOTSTRAP_SERVERS"
    }
    redis_base = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL).rsplit("/", 1)[0]
    env.update(
        DATABASE_URL=database_url,
        REDIS_URL=f"{redis_base}/{1 + os.getpid() % 14}",
        KAFKA_BOOTSTRAP_SERVERS=bootstrap,
        PRICECAST_ENV="test",
        PRICECAST_TOPIC_PRICES=f"prices-{tag}",
        PRICECAST_TOPIC_PRICES_DLQ=f"prices.dlq-{tag}",
        PRICECAST_CONSUMER_GROUP_WRITER=f"price-consumer-{tag}",
        PRICECAST_KAFKA_PARTITIONS="1",
        PRICECAST_INGEST_SYMBOLS=",".join(SYMBOLS),
        PRICECAST_SYNTHETIC_INTERVAL_S="0.5",
        PRICECAST_STALE_AFTER_S=str(STALE_AFTER_S),
        PRICECAST_INGEST_HEALTH_PORT=str(port),
        PRICECAST_LOG_LEVEL="WARNING",
    )
    return env


class Ingestion:
    """``pricecast ingest --role ROLE`` as a process, ready once /health/ready says so."""

    def __init__(self, role: str, env: dict[str, str], port: int, log: Path) -> None:
        self.role, self.port = role, port
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "ingest", "--role", role],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, f"{self.role} exited ({self.proc.returncode})"
            try:
                url = f"http://127.0.0.1:{self.port}/health/ready"
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(ready, 90, f"the {self.role} to be ready")

    def stop(self) -> None:
        infra.stop_process(self.proc, 30)  # SIGTERM, then SIGKILL after 30 s


class Stack:
    def __init__(self, tmp: Path, database_url: str, bootstrap: str, stack: ExitStack) -> None:
        self.tmp, self._stack = tmp, stack
        tag = uuid.uuid4().hex[:8]
        self.writer_port, self.sources_port = infra.free_port(), infra.free_port()
        self.writer_env = _service_env(database_url, bootstrap, tag, self.writer_port)
        self.sources_env = _service_env(database_url, bootstrap, tag, self.sources_port)
        self.webhook = WebhookLog.start()
        stack.callback(self.webhook.stop)
        am_cfg = alertmanager_config_for_test(
            self.webhook.url, group_wait=GROUP_WAIT, group_interval=GROUP_INTERVAL
        )
        self.alertmanager = self._serve(
            start_alertmanager(write_yaml(tmp / "alertmanager.yml", am_cfg), tmp)
        )
        self.writer = self._ingest("writer", self.writer_env, self.writer_port)
        self.sources: Ingestion | None = self.start_feed()
        self.writer.wait_ready()
        rules = [
            write_yaml(tmp / f"rules-{p.name}", rules_with_for(p, FOR))
            for p in sorted(RULES_DIR.glob("*.yaml"))
        ]
        prom_cfg = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(r) for r in rules],
            "alerting": {
                "alertmanagers": [
                    {"static_configs": [{"targets": [f"127.0.0.1:{self.alertmanager.port}"]}]}
                ]
            },
            "scrape_configs": [
                {
                    "job_name": "pricecast-writer",
                    "static_configs": [
                        {
                            "targets": [f"127.0.0.1:{self.writer_port}"],
                            "labels": {"service": "writer"},
                        }
                    ],
                }
            ],
        }
        self.prometheus = self._serve(
            start_prometheus(
                write_yaml(tmp / "prometheus.yml", prom_cfg), tmp, "--rules.alert.resend-delay=1s"
            )
        )

    def _serve(self, server: Server) -> Server:
        self._stack.callback(server.stop)
        return server

    def _ingest(self, role: str, env: dict[str, str], port: int) -> Ingestion:
        service = Ingestion(role, env, port, self.tmp / f"{role}.log")
        self._stack.callback(service.stop)
        return service

    def start_feed(self) -> Ingestion:
        return self._ingest("sources", self.sources_env, self.sources_port)

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": promql}, timeout=5)
        result: list[dict[str, Any]] = r.json()["data"]["result"]
        return result


@pytest.fixture
def stack(
    tmp_path: Path,
    broker: infra.Broker,
    scratch_database: Callable[..., AbstractContextManager[str]],
) -> Iterator[Stack]:
    with ExitStack() as exits:
        url = exits.enter_context(scratch_database("pricecast_alerts"))
        yield Stack(tmp_path, url, broker.bootstrap, exits)


def _fresh(stack: Stack) -> bool:
    """Prometheus sees every symbol's ticks younger than the threshold."""
    ages = stack.query('max by (symbol) (pricecast_tick_age_seconds{job="pricecast-writer"})')
    fresh = {s["metric"]["symbol"] for s in ages if float(s["value"][1]) < STALE_AFTER_S}
    return fresh >= set(SYMBOLS)


def _one_per_symbol(webhook: WebhookLog, status: str) -> dict[str, Any] | None:
    by_symbol = {n.body["groupLabels"].get("symbol"): n for n in webhook.of(ALERT, status)}
    return by_symbol if set(SYMBOLS) <= set(by_symbol) else None


def test_stale_feed_alert_reaches_the_webhook_once_then_resolves(stack: Stack) -> None:
    assert stack.sources is not None
    stack.sources.wait_ready()
    wait_until(lambda: _fresh(stack), 60, "fresh ticks for every symbol in Prometheus")
    assert stack.webhook.of(ALERT) == []  # a live feed raises no stale alert

    stopped = time.monotonic()  # the SIGTERM: the feed's last tick is at most 0.5 s older
    stack.sources.stop()
    in_prometheus: dict[str, float] = {}  # symbol -> when Prometheus first showed it firing

    def notified() -> dict[str, Any] | None:
        now = time.monotonic()
        for s in stack.query(f'ALERTS{{alertname="{ALERT}", alertstate="firing"}}'):
            in_prometheus.setdefault(s["metric"]["symbol"], now)
        return _one_per_symbol(stack.webhook, "firing")

    firing = wait_until(notified, 60, "a firing notification per symbol")
    for symbol, note in firing.items():
        body = note.body
        assert body["receiver"] == "warning", body  # routed by severity
        assert body["groupLabels"] == {"alertname": ALERT, "symbol": symbol}  # grouped
        assert [a["labels"]["symbol"] for a in body["alerts"]] == [symbol]
        assert body["alerts"][0]["labels"]["severity"] == "warning"
    first = {s: round(n.at - stopped, 2) for s, n in firing.items()}
    prom = {s: round(t - stopped, 2) for s, t in in_prometheus.items()}

    # Cooldown: Prometheus re-sends the firing alerts every second and Alertmanager looks at
    # both groups again every group_interval (each look is one notification-log query); no
    # second notification goes out before repeat_interval.
    queries = metric_value(stack.alertmanager.url, "alertmanager_nflog_queries_total")
    received = metric_value(
        stack.alertmanager.url, "alertmanager_alerts_received_total", status="firing"
    )
    looks = FLUSHES_WITHOUT_RENOTIFY * len(SYMBOLS)
    wait_until(
        lambda: (
            metric_value(stack.alertmanager.url, "alertmanager_nflog_queries_total")
            >= queries + looks
        ),
        60,
        f"{FLUSHES_WITHOUT_RENOTIFY} more group_interval rounds per group",
    )
    resent = (
        metric_value(stack.alertmanager.url, "alertmanager_alerts_received_total", status="firing")
        - received
    )
    assert resent >= len(SYMBOLS), "Prometheus kept sending the firing alerts"
    assert len(stack.webhook.of(ALERT, "firing")) == len(SYMBOLS), [
        n.body for n in stack.webhook.of(ALERT)
    ]

    resumed = time.monotonic()
    stack.sources = stack.start_feed()
    resolved = wait_until(
        lambda: _one_per_symbol(stack.webhook, "resolved"), 90, "a resolved notification per symbol"
    )
    for symbol, note in resolved.items():
        assert note.body["receiver"] == "warning"
        assert note.body["groupLabels"] == {"alertname": ALERT, "symbol": symbol}
        assert note.body["alerts"][0]["status"] == "resolved"
    assert len(stack.webhook.of(ALERT, "firing")) == len(SYMBOLS)  # still once per group

    others = sorted({n.alertname for n in stack.webhook.received} - {ALERT})
    print(
        f"\nstale-feed alert: feed stopped -> firing in Prometheus: {prom} s, "
        f"-> webhook: {first} s "
        f"(PRICECAST_STALE_AFTER_S={STALE_AFTER_S}, for {FOR}, scrape/eval 1s, group_wait "
        f"{GROUP_WAIT}); {resent:g} re-sends and {looks} group looks after it, 1 notification "
        f"per group; feed resumed -> resolved: "
        f"{ {s: round(n.at - resumed, 2) for s, n in resolved.items()} } s "
        f"(includes the feed process start-up); other alerts notified: {others or 'none'}"
    )


def test_the_rule_copy_differs_from_the_shipped_rules_only_in_for() -> None:
    for path in sorted(RULES_DIR.glob("*.yaml")):
        shipped = yaml.safe_load(path.read_text())
        copy = rules_with_for(path, FOR)
        changed = 0
        for group, copied in zip(shipped["groups"], copy["groups"], strict=True):
            for rule, twin in zip(group["rules"], copied["rules"], strict=True):
                if "for" in rule:
                    changed += twin["for"] == FOR
                    rule, twin = {**rule, "for": None}, {**twin, "for": None}
                assert rule == twin, path.name
        assert changed, f"{path.name}: no `for:` rewritten"
