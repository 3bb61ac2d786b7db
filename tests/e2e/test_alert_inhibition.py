"""The shipped inhibition rules (ops/alertmanager/alertmanager.yml) on a real Alertmanager: alerts
posted to its API, and what it reports as inhibited."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from monitoring_process import Server, held_alerts, post_alerts, shipped_alertmanager, wait_until

CASES = [
    # (source alert labels, target alert labels, inhibited?)
    (
        {"alertname": "PricecastDependencyDown", "severity": "critical", "dependency": "kafka"},
        {"alertname": "PricecastConsumerLagCritical", "severity": "critical", "group": "a"},
        True,
    ),
    (
        {"alertname": "PricecastDependencyDown", "severity": "critical", "dependency": "redis"},
        {"alertname": "PricecastConsumerLagHigh", "severity": "warning", "group": "b"},
        False,  # Redis down does not explain consumer lag
    ),
    (
        {"alertname": "PricecastConsumerLagCritical", "severity": "critical", "group": "c"},
        {"alertname": "PricecastConsumerLagHigh", "severity": "warning", "group": "c"},
        True,
    ),
    (
        {"alertname": "PricecastConsumerLagCritical", "severity": "critical", "group": "d"},
        {"alertname": "PricecastConsumerLagHigh", "severity": "warning", "group": "e"},
        False,  # another consumer group
    ),
    (
        {"alertname": "PricecastTargetDown", "severity": "critical", "job": "pricecast-api"},
        {"alertname": "PricecastDependencyDown", "severity": "critical", "dependency": "x"},
        True,
    ),
]


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Server]:
    """One per case: the alerts of one case must not inhibit another's."""
    with shipped_alertmanager(tmp_path) as server:
        yield server


def _inhibited(server: Server, labels: dict[str, str]) -> bool | None:
    for alert in held_alerts(server):
        if alert["labels"] == labels:
            return bool(alert["status"]["inhibitedBy"])
    return None


@pytest.mark.parametrize(("source", "target", "inhibited"), CASES)
def test_inhibition(
    alertmanager: Server, source: dict[str, str], target: dict[str, str], inhibited: bool
) -> None:
    post_alerts(alertmanager, source, target)
    got = wait_until(
        lambda: (state := _inhibited(alertmanager, target)) is not None and (state,),
        10,
        "the target alert to be held",
    )
    assert got == (inhibited,), (source, target)
    assert _inhibited(alertmanager, source) is False  # the cause itself is always shown
