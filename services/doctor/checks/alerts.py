"""Alertmanager: the alerts firing right now, when ``PRICECAST_ALERTMANAGER_URL`` is set."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from services.doctor.model import CheckSpec, Context, Finding, Status, describe

SHOWN = 8  # alerts named in the evidence; the rest are counted


def am_label(url: str) -> str:
    """``scheme://host:port/path`` of the Alertmanager URL: never its credentials."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path.rstrip('/')}"


def fetch_alerts(url: str, timeout_s: float) -> list[dict[str, Any]]:
    """Every alert Alertmanager holds (API v2), suppressed ones included."""
    response = httpx.get(
        url.rstrip("/") + "/api/v2/alerts",
        headers={"Accept": "application/json"},
        timeout=timeout_s,
    )
    response.raise_for_status()
    body = response.json()
    if not isinstance(body, list):
        raise ValueError(f"expected a list of alerts, got {type(body).__name__}")
    return [alert for alert in body if isinstance(alert, dict)]


def _describe_alert(alert: dict[str, Any], now: datetime) -> str:
    labels: dict[str, str] = alert.get("labels", {})
    keys = ("symbol", "group", "dependency", "job", "instance")
    extra = ",".join(f"{key}={labels[key]}" for key in keys if key in labels)
    name = labels.get("alertname", "?") + (f"{{{extra}}}" if extra else "")
    text = f"{name} {labels.get('severity', '?')}"
    try:
        since = datetime.fromisoformat(str(alert.get("startsAt", "")).replace("Z", "+00:00"))
        text += f" for {max(0, int((now - since).total_seconds())) // 60} min"
    except ValueError:
        pass
    return text


def firing(ctx: Context) -> Finding:
    """Active alerts (not silenced, not inhibited): warn, or fail when one is critical."""
    name = "alerts.firing"
    url = ctx.settings.alertmanager_url
    if not url:
        return Finding(
            name,
            "ok",
            "PRICECAST_ALERTMANAGER_URL is not set: firing alerts not read (set it to "
            "Alertmanager's URL, compose: http://alertmanager:9093, to see them here)",
        )
    label = am_label(url)
    try:
        alerts = fetch_alerts(url, min(ctx.timeout_s * 0.7, 10.0))
    except Exception as exc:  # noqa: BLE001 - the error is the evidence
        return Finding(
            name,
            "fail",
            f"{label}: {describe(exc)}",
            "is Alertmanager running (kubectl -n pricecast get pods -l "
            "app.kubernetes.io/name=alertmanager; docker compose ps alertmanager) and is "
            "PRICECAST_ALERTMANAGER_URL its address? Without it no alert reaches anyone",
        )
    active = [alert for alert in alerts if alert.get("status", {}).get("state") == "active"]
    suppressed = len(alerts) - len(active)
    now = datetime.now(UTC)
    severities = Counter(alert.get("labels", {}).get("severity", "none") for alert in active)
    data: dict[str, Any] = {
        "url": label,
        "firing": [alert.get("labels", {}) for alert in active],
        "suppressed": suppressed,
    }
    quiet = f" ({suppressed} silenced or inhibited)" if suppressed else ""
    if not active:
        return Finding(name, "ok", f"no alert firing at {label}{quiet}", data=data)
    shown = "; ".join(_describe_alert(alert, now) for alert in active[:SHOWN])
    more = f"; and {len(active) - SHOWN} more" if len(active) > SHOWN else ""
    counts = ", ".join(f"{count} {sev}" for sev, count in sorted(severities.items()))
    runbooks = sorted(
        {str(alert.get("annotations", {}).get("runbook", "")) for alert in active} - {""}
    )
    fix = "follow each alert's runbook" + (f": {runbooks[0]}" if runbooks else "")
    fix += (
        f"; list them with amtool alert query --alertmanager.url={label}; a known, "
        "planned cause can be silenced (amtool silence add ... --duration 2h)"
    )
    status: Status = "fail" if severities.get("critical") else "warn"
    return Finding(
        name, status, f"{len(active)} firing ({counts}): {shown}{more}{quiet}", fix, data
    )


CHECKS = (CheckSpec("alerts.firing", firing, about="alerts firing in Alertmanager"),)
