"""``bench/results/faults.json`` (the result format of docs/architecture.md, "Benchmarks")
from a finished fault run."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

from faultkit.scenario import FaultStack, report_dict

RESULTS = Path(__file__).resolve().parents[3] / "bench" / "results"


def write_result(name: str, result: dict[str, Any]) -> Path:
    result["conditions"] = {
        **result.get("conditions", {}),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return path


def write_faults_result(stack: FaultStack, totals: dict[str, Any]) -> Path:
    """Value: the slowest recovery to ready over every fault; baseline: the stack's cold
    start to ready, measured in the same run (a recovery slower than a cold start would mean
    restarting by hand is the better remedy)."""
    reports = stack.reports
    recoveries = [r.recovery_to_ready_s for r in reports if r.recovery_to_ready_s is not None]
    worst = max(recoveries) if recoveries else float("nan")
    cold = stack.cold_start_s
    cfg = stack.cfg
    return write_result(
        "faults",
        {
            "name": "faults",
            "value": round(worst, 3),
            "unit": "s",
            "baseline": {"name": "stack_cold_start_to_ready", "value": round(cold, 3), "unit": "s"},
            "ratio": round(worst / cold, 4) if cold else None,
            "conditions": {
                "rate_ticks_per_s": cfg.rate,
                "symbols": len(cfg.symbols),
                "pg_outage_s": cfg.pg_outage_s,
                "redis_outage_s": cfg.redis_outage_s,
                "broker_outage_s": cfg.broker_outage_s,
                "pool_hold_s": cfg.pool_hold_s,
                "role_connection_limit": cfg.role_limit,
                "faults": list(cfg.faults),
                "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
            },
            "extra": {
                "lost_acknowledged_total": totals["lost_acknowledged"],
                "duplicates_total": sum(r.duplicates for r in reports),
                "all_ok": all(r.ok() for r in reports) and totals["lost_acknowledged"] == 0,
                "totals": totals,
                "per_fault": [report_dict(r) for r in reports],
            },
        },
    )
