"""Alert rules: promtool-style structure, real PromQL, only metrics and labels the code exports,
and the alerts operations asked for (issue 9)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from _deploy import ROOT
from _promql import check_expr, check_rule_file, parse

RULES = ROOT / "ops" / "prometheus" / "rules" / "pricecast.yaml"


def rules() -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return {r["alert"]: r for g in doc["groups"] for r in g["rules"] if "alert" in r}


def test_rule_file_is_valid() -> None:
    problems = check_rule_file(yaml.safe_load(RULES.read_text()))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("metric", "threshold_hint"),
    [
        ("pricecast_consumer_lag", ">"),  # consumer lag
        # tick staleness: against the process's PRICECAST_STALE_AFTER_S (default 300 s)
        ("pricecast_tick_age_seconds", "> on(job, instance) group_left() pricecast_stale_"),
        ("pricecast_http_request_duration_seconds_bucket", "> 0.5"),  # API p99 > 500 ms
        ("pricecast_http_requests_total", "> 0.01"),  # error rate > 1%
        ("pricecast_cache_requests_total", "< 0.8"),  # cache hit rate < 80%
        ("pricecast_db_query_seconds_bucket", ">"),  # DB query time
        ("pricecast_model_degradation_ratio", ">"),  # model accuracy degradation
    ],
)
def test_required_alert_exists(metric: str, threshold_hint: str) -> None:
    matching = [
        name
        for name, rule in rules().items()
        if metric in {s.name for s in parse(rule["expr"]).selectors}
        and threshold_hint in " ".join(rule["expr"].split())
    ]
    assert matching, f"no alert on {metric} with {threshold_hint!r}"


def test_every_alert_points_to_a_runbook() -> None:
    for name, rule in rules().items():
        assert "docs/" in rule["annotations"]["runbook"], name


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("rate(pricecast_nonexistent_total[5m]) > 1", "not exported"),
        ('sum(rate(pricecast_http_requests_total{code="500"}[5m]))', "no label"),
        ("max by (host) (pricecast_consumer_lag)", "groups by"),
        ("sum(rate(pricecast_consumer_lag[5m])", "syntax"),
    ],
)
def test_checker_catches_mistakes(expr: str, problem: str) -> None:
    assert any(problem in p for p in check_expr(expr, "t")), check_expr(expr, "t")


def test_structural_checker_catches_mistakes() -> None:
    bad = {
        "groups": [
            {
                "name": "g",
                "rules": [
                    {"alert": "A", "expr": "pricecast_consumer_lag > 1", "for": "5 minutes"},
                    {
                        "alert": "A",
                        "expr": "max by (group) (pricecast_consumer_lag) > 1",
                        "labels": {"severity": "warning"},
                        "annotations": {"summary": "{{ $labels.symbol }}", "description": "d"},
                    },
                ],
            }
        ]
    }
    problems = "\n".join(check_rule_file(bad))
    for expected in ("bad for duration", "severity", "summary missing", "duplicate", "$labels"):
        assert expected in problems, expected
