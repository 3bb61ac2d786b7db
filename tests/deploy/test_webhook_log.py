"""ops/alertmanager/webhook_log.py, the default receiver: one JSON line per notification, a
clear status for anything that is not one, and a health answer for its container."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from monitoring_process import WebhookLog, wait_until


@pytest.fixture
def webhook() -> Iterator[WebhookLog]:
    log = WebhookLog.start()
    yield log
    log.stop()


def test_health_and_unknown_paths(webhook: WebhookLog) -> None:
    base = webhook.url.removesuffix("/alerts")
    assert httpx.get(f"{base}/health", timeout=5).status_code == 200
    assert httpx.get(f"{base}/other", timeout=5).status_code == 404


@pytest.mark.parametrize(
    ("body", "code"),
    [(b"not json", 400), (b"[1, 2]", 400), (b"", 400), (b"x" * ((1 << 20) + 1), 413)],
)
def test_bad_requests_are_refused_and_logged_nowhere(
    webhook: WebhookLog, body: bytes, code: int
) -> None:
    assert httpx.post(webhook.url, content=body, timeout=5).status_code == code
    assert httpx.post(webhook.url, json={"status": "firing"}, timeout=5).status_code == 200
    wait_until(lambda: webhook.received, 10, "the good notification")
    assert [n.status for n in webhook.received] == ["firing"]


def test_a_notification_is_one_json_line(webhook: WebhookLog) -> None:
    payload = {
        "receiver": "warning",
        "status": "firing",
        "groupKey": '{}/{severity="warning"}:{alertname="PricecastTicksStale", symbol="BTC-USD"}',
        "groupLabels": {"alertname": "PricecastTicksStale", "symbol": "BTC-USD"},
        "alerts": [
            {
                "status": "firing",
                "labels": {"alertname": "PricecastTicksStale", "symbol": "BTC-USD"},
                "annotations": {"summary": "No fresh tick for BTC-USD (6m 0s old)"},
                "startsAt": "2026-12-01T21:00:00Z",
                "endsAt": "0001-01-01T00:00:00Z",
            }
        ],
    }
    assert httpx.post(webhook.url, json=payload, timeout=5).status_code == 200
    (note,) = wait_until(lambda: webhook.received, 10, "the notification")
    assert note.alertname == "PricecastTicksStale" and note.body["receiver"] == "warning"
    assert note.body["alerts"][0]["summary"] == "No fresh tick for BTC-USD (6m 0s old)"
