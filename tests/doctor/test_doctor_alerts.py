"""``alerts.firing``: what Alertmanager holds, read from a real Alertmanager running the shipped
configuration (ops/alertmanager/alertmanager.yml), with alerts posted to its API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from monitoring_process import Server, held_alerts, post_alerts, shipped_alertmanager, wait_until

from services.common import infra
from services.common.config import Settings
from services.doctor.model import Finding

Diagnose = Callable[..., dict[str, Finding]]


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Server]:
    with shipped_alertmanager(tmp_path) as server:
        yield server


def check(diagnose_map: Diagnose, settings: Settings, url: str) -> Finding:
    with_url = settings.model_copy(update={"alertmanager_url": url})
    return diagnose_map(with_url, "alerts.firing")["alerts.firing"]


def test_not_configured_says_so(settings: Settings, diagnose_map: Diagnose) -> None:
    found = check(diagnose_map, settings, "")
    assert found.status == "ok" and "PRICECAST_ALERTMANAGER_URL is not set" in found.evidence


def test_unreachable_alertmanager_fails(settings: Settings, diagnose_map: Diagnose) -> None:
    port = infra.free_port()
    found = check(diagnose_map, settings, f"http://user:hunter2@127.0.0.1:{port}")
    assert found.status == "fail"
    assert f"http://127.0.0.1:{port}: ConnectError" in found.evidence
    assert "hunter2" not in found.evidence + found.fix
    assert "PRICECAST_ALERTMANAGER_URL" in found.fix


def test_reports_firing_alerts_and_leaves_out_inhibited_ones(
    settings: Settings, diagnose_map: Diagnose, alertmanager: Server
) -> None:
    quiet = check(diagnose_map, settings, alertmanager.url)
    assert quiet.status == "ok" and "no alert firing" in quiet.evidence

    stale = {"alertname": "PricecastTicksStale", "severity": "warning", "symbol": "BTC-USD"}
    post_alerts(
        alertmanager, stale, started_ago_s=180, runbook="docs/troubleshooting.md (stale prices)"
    )
    wait_until(lambda: held_alerts(alertmanager), 10, "the alert to be held")
    warn = check(diagnose_map, settings, alertmanager.url)
    assert warn.status == "warn", warn
    assert "1 firing (1 warning): PricecastTicksStale{symbol=BTC-USD} warning for 3 min" in (
        warn.evidence
    )
    assert "docs/troubleshooting.md (stale prices)" in warn.fix and "amtool" in warn.fix

    # The broker is down: the lag alert it causes is inhibited by the shipped rules.
    broker = {"alertname": "PricecastDependencyDown", "severity": "critical", "dependency": "kafka"}
    lag = {"alertname": "PricecastConsumerLagHigh", "severity": "warning", "group": "g"}
    post_alerts(alertmanager, broker, lag)

    def lag_inhibited() -> bool:
        states = {a["labels"]["alertname"]: a["status"] for a in held_alerts(alertmanager)}
        return bool(states.get("PricecastConsumerLagHigh", {}).get("inhibitedBy"))

    wait_until(lag_inhibited, 10, "the lag alert to be inhibited")
    page = check(diagnose_map, settings, alertmanager.url)
    assert page.status == "fail", page
    assert "2 firing (1 critical, 1 warning)" in page.evidence
    assert "PricecastDependencyDown{dependency=kafka} critical" in page.evidence
    assert "PricecastConsumerLag" not in page.evidence
    assert "(1 silenced or inhibited)" in page.evidence
    assert page.data["suppressed"] == 1
