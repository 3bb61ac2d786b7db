"""The Grafana dashboard: valid panel layout, every query is PromQL over exported metrics, and
it is provisioned for compose and Kubernetes."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml
from _deploy import ROOT
from _promql import check_expr

DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "pricecast.json"
DATASOURCE = ROOT / "ops" / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"


def dashboard() -> dict[str, Any]:
    data = json.loads(DASHBOARD.read_text())
    assert isinstance(data, dict)
    return data


def substitute(expr: str) -> str:
    """Grafana variables as Prometheus receives them."""
    expr = expr.replace("$__rate_interval", "5m").replace("$__interval", "1m")
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)


def test_every_query_is_valid_promql_over_exported_metrics() -> None:
    problems = []
    count = 0
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            count += 1
            problems += check_expr(substitute(target["expr"]), panel["title"])
    for var in dashboard()["templating"]["list"]:
        inner = re.fullmatch(r"label_values\((\w+), *(\w+)\)", var["query"]["query"])
        assert inner is not None
        problems += check_expr(inner.group(1), f"variable {var['name']}")
    assert count >= 20
    assert not problems, "\n".join(problems)


def test_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = dashboard()["panels"]
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    occupied: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        cells = {(g["x"] + dx, g["y"] + dy) for dx in range(g["w"]) for dy in range(g["h"])}
        assert not cells & occupied, f"{p['title']} overlaps another panel"
        occupied |= cells
        if p["type"] != "row":
            refs = [t["refId"] for t in p["targets"]]
            assert len(refs) == len(set(refs)), p["title"]


def test_queries_use_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load(DATASOURCE.read_text())["datasources"][0]
    assert provisioned["url"] == "http://prometheus:9090"  # compose service and k8s Service
    for panel in dashboard()["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == provisioned["uid"], panel["title"]


def test_dashboard_covers_the_alerted_signals() -> None:
    exprs = " ".join(t["expr"] for p in dashboard()["panels"] for t in p.get("targets", []))
    for metric in (
        "pricecast_consumer_lag",
        "pricecast_tick_age_seconds",
        "pricecast_http_request_duration_seconds_bucket",
        "pricecast_http_requests_total",
        "pricecast_cache_requests_total",
        "pricecast_db_query_seconds_bucket",
        "pricecast_model_degradation_ratio",
        "pricecast_forecast_coverage",
    ):
        assert metric in exprs, metric
