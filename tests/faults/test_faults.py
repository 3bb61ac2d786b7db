"""Faults under load (issue 10): the whole stack under a steady synthetic load, one fault at a
time; after each, the stack heals by itself and nothing acknowledged is lost or doubled.

The stack (``faultkit.scenario.FaultStack``): a fresh database reached through a TCP proxy as
a role with a connection limit, a private Redis, the in-memory Tansu broker, and the three
services as separate processes. ``PRICECAST_FAULTS=full`` (``make test-faults``) runs every
fault with a 60 s PostgreSQL outage; the default is the reduced CI set.
"""

from __future__ import annotations

import json

import pytest
from faultkit.scenario import FaultReport, FaultStack, report_dict
from faultkit.suite import FAULTS

# Which services must report a dependency down (``/health/detailed``) during each fault.
DEPENDENCY_DOWN = {
    "postgres_unreachable": ("database", ("ingestion", "prediction", "api")),
    "db_pool_exhausted": ("database", ("ingestion", "prediction", "api")),
    "redis_restart": ("redis", ("prediction", "api")),
    "broker_restart": ("kafka", ("ingestion", "prediction")),
}
# Which services must say "not ready" (``/health/ready`` 503) during the fault.
NOT_READY = {
    "postgres_unreachable": ("ingestion", "prediction", "api"),
    "broker_restart": ("ingestion", "prediction"),
}


def _show(report: FaultReport) -> str:
    return json.dumps(report_dict(report), indent=1, default=str)


@pytest.mark.parametrize("fault", FAULTS)
def test_fault_heals_without_losing_or_doubling_ticks(fault_stack: FaultStack, fault: str) -> None:
    report = fault_stack.run_fault(fault)
    print(_show(report))
    context = f"{_show(report)}\n{fault_stack.tails(20)}"

    assert report.ticks_acknowledged > 0, context
    assert report.duplicates == 0, context
    assert report.lost_acknowledged == 0, context
    if fault != "broker_restart":
        # Only a restarted in-memory broker has been seen to acknowledge a record it did not
        # keep (docs/faults.md); everywhere else the broker keeps what it acknowledges.
        assert report.acked_not_kept_by_broker == 0, context
    assert report.recovery_to_ready_s is not None, f"not ready again\n{context}"
    assert report.drained_s is not None, f"acknowledged ticks not all stored\n{context}"
    assert report.health_live_failures == 0, f"/health failed during the fault\n{context}"
    assert not any(report.missing_forecasts.values()), f"closed bars without forecasts\n{context}"
    assert report.closed_bars["1h"] > 0, context

    if fault in DEPENDENCY_DOWN:
        dependency, services = DEPENDENCY_DOWN[fault]
        for name in services:
            seen = report.detailed_during_fault[name]
            assert seen.get("http") == 200, context
            assert seen["services"][dependency] == "unhealthy", f"{name}: {seen}\n{context}"
            assert seen["status"] in ("degraded", "unhealthy"), context
    for name in NOT_READY.get(fault, ()):
        assert "503" in report.ready_during_fault[name], f"{name} never said not ready\n{context}"

    if fault == "broker_restart":
        # The broker lost its log: neither group keeps an offset of the old log (its next
        # owner would start beyond the new log's end; docs/faults.md, "Consumers after a
        # broker restart").
        for group in (
            fault_stack.settings.consumer_group_prediction,
            fault_stack.settings.consumer_group_writer,
        ):
            assert group not in report.committed_beyond_end, context

    if fault == "redis_restart":
        # Redis is not critical: the API stays ready and keeps answering predictions.
        assert set(report.api_answers_during_fault) == {"200"}, context
        assert report.detailed_during_fault["api"]["status"] == "degraded", context
        assert set(report.ready_during_fault["api"]) == {"200"}, context
    if fault in ("postgres_unreachable", "db_pool_exhausted", "broker_restart"):
        # Cached forecasts are served while the database (or the broker) is away.
        assert report.api_answers_during_fault.get("200", 0) > 0, context
    if fault.startswith("sigkill_"):
        assert report.exit_code == -9, context
    if fault.startswith("sigterm_"):
        assert report.graceful, f"SIGTERM must stop the service cleanly\n{context}"


def test_every_acknowledged_tick_of_the_run_is_stored_once(fault_stack: FaultStack) -> None:
    totals = fault_stack.totals()
    print(totals)
    assert totals["ticks_acknowledged"] > 0
    assert totals["lost_acknowledged"] == 0, totals
    assert totals["ticks_stored"] <= totals["ticks_produced"], totals
    # Ticks lost by the in-memory broker are only possible where it was killed.
    if not any(r.fault == "broker_restart" for r in fault_stack.reports):
        assert totals["lost_by_in_memory_broker"] == 0, totals
