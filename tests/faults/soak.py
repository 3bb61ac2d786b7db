"""``make soak``: the stack under steady load for 30 minutes (not in CI).

Samples every 10 s: each service's resident memory (RSS), the CPU share of each service
(its worker processes included) and of the test broker, the writer's and the prediction
service's consumer lag, the API's answers. The broker's CPU is there to tell a broker that
slows down from a service that does (docs/faults.md, "The test broker over a long run").
Writes ``bench/results/soak.json`` (docs/architecture.md's result format): value = the largest RSS
growth per hour over the services after warm-up, baseline = that service's RSS after
warm-up; extra holds every figure and verdict.

Run: ``.venv/bin/python tests/faults/soak.py --minutes 30``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

# Run as a script, this folder is sys.path[0] (faultkit); services is installed in the venv.
from faultkit.report import write_result
from faultkit.scenario import SERVICES, Config, FaultStack

SAMPLE_S = 10.0
WARMUP_S = 120.0
RSS_GROWTH_LIMIT_MB_PER_H = 50.0
LAG_LIMIT = 5_000  # messages: 25 s of load
ERROR_CREEP_LIMIT = 0.01  # the API's error rate may not grow by more than a point


def _slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) in value per hour."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(p[0] for p in points) / n
    my = sum(p[1] for p in points) / n
    var = sum((p[0] - mx) ** 2 for p in points)
    if var == 0:
        return 0.0
    cov = sum((p[0] - mx) * (p[1] - my) for p in points)
    return cov / var * 3600.0


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(roots: dict[str, int | None]) -> dict[str, float | None]:
    """CPU seconds (user + system) of each root process and its descendants: one read of
    /proc for all of them."""
    children: dict[int, list[int]] = {}
    used: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry.name)
        children.setdefault(int(fields[1]), []).append(pid)
        used[pid] = (int(fields[11]) + int(fields[12])) / _TICK
    out: dict[str, float | None] = {}
    for name, root in roots.items():
        if root is None or root not in used:
            out[name] = None
            continue
        total, todo = 0.0, [root]
        while todo:
            pid = todo.pop()
            total += used.get(pid, 0.0)
            todo.extend(children.get(pid, ()))
        out[name] = total
    return out


def _cpu_pct(
    now: dict[str, float | None], before: dict[str, float | None], seconds: float
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, value in now.items():
        prev = before.get(name)
        if value is None or prev is None or seconds <= 0:
            out[name] = None
        else:
            out[name] = round((value - prev) / seconds * 100, 1)
    return out


def _error_rate(stack: FaultStack, start: float, end: float) -> float:
    answers = stack.probe.api_answers(start, end)
    total = sum(answers.values())
    bad = sum(n for code, n in answers.items() if code != "200")
    return bad / total if total else 0.0


def soak(minutes: float, rate: float) -> dict[str, Any]:
    duration = minutes * 60.0
    cfg = Config(
        faults=(),
        rate=rate,
        expected_duration_s=duration + 300,
        sim_hours=22.0,
        producer_linger_ms=100,
    )
    samples: list[dict[str, Any]] = []
    with FaultStack(cfg) as stack:
        stack.load.set_phase("soak")
        t0 = time.monotonic()
        cpu_before: dict[str, float | None] = {}
        cpu_at = t0
        while (elapsed := time.monotonic() - t0) < duration:
            now_rss = {n: stack.services[n].rss_mb() for n in SERVICES}
            pids = {n: stack.services[n].pid for n in SERVICES}
            pids["broker"] = stack.broker.broker.proc.pid
            cpu_now = _cpu_s(pids)
            cpu = _cpu_pct(cpu_now, cpu_before, time.monotonic() - cpu_at)
            cpu_before, cpu_at = cpu_now, time.monotonic()
            lag = stack.lag()
            samples.append({"t": round(elapsed, 1), "rss_mb": now_rss, "cpu_pct": cpu, "lag": lag})
            print(f"{elapsed:7.0f}s rss={now_rss} cpu%={cpu} lag={lag}", flush=True)
            time.sleep(SAMPLE_S)
        t_end = time.monotonic()
        third = (t_end - t0) / 3
        early = _error_rate(stack, t0, t0 + third)
        late = _error_rate(stack, t_end - third, t_end)
        restarts = {n: stack.services[n].starts - 1 for n in SERVICES}
        alive = {n: stack.services[n].alive for n in SERVICES}
        totals = stack.totals()
        answers = stack.probe.api_answers(t0, t_end)

    warm = [s for s in samples if s["t"] >= min(WARMUP_S, duration / 3)]
    rss: dict[str, Any] = {}
    for name in SERVICES:
        pts = [(s["t"], s["rss_mb"][name]) for s in warm if s["rss_mb"][name] is not None]
        rss[name] = {
            "after_warmup_mb": round(pts[0][1], 1) if pts else None,
            "end_mb": round(pts[-1][1], 1) if pts else None,
            "max_mb": round(max(p[1] for p in pts), 1) if pts else None,
            "growth_mb_per_h": round(_slope_per_hour(pts), 2),
        }
    lags = {
        name: max((s["lag"][name] or 0) for s in samples) if samples else None
        for name in ("ingestion", "prediction")
    }
    cpu_thirds: dict[str, Any] = {}
    span = samples[-1]["t"] if samples else 0.0
    for name in (*SERVICES, "broker"):
        thirds = []
        for lo, hi in ((0.0, span / 3), (2 * span / 3, span + 1)):
            vals = [
                s["cpu_pct"][name]
                for s in samples
                if lo <= s["t"] < hi and s["cpu_pct"].get(name) is not None
            ]
            thirds.append(round(sum(vals) / len(vals), 1) if vals else None)
        cpu_thirds[name] = {"first_third_pct": thirds[0], "last_third_pct": thirds[1]}
    worst = max(SERVICES, key=lambda n: rss[n]["growth_mb_per_h"])
    verdicts = {
        "rss_bounded": all(
            rss[n]["growth_mb_per_h"] <= RSS_GROWTH_LIMIT_MB_PER_H for n in SERVICES
        ),
        "lag_bounded": all((v or 0) <= LAG_LIMIT for v in lags.values()),
        "no_error_rate_creep": late - early <= ERROR_CREEP_LIMIT,
        "nothing_lost": totals["lost_acknowledged"] == 0,
        "no_restarts": all(alive.values()) and not any(restarts.values()),
    }
    result = {
        "name": "soak",
        "value": rss[worst]["growth_mb_per_h"],
        "unit": "MB/h",
        "baseline": {
            "name": f"{worst}_rss_after_warmup",
            "value": rss[worst]["after_warmup_mb"],
            "unit": "MB",
        },
        "ratio": round(rss[worst]["growth_mb_per_h"] / (rss[worst]["after_warmup_mb"] or 1), 4),
        "conditions": {
            "minutes": minutes,
            "rate_ticks_per_s": rate,
            "symbols": len(cfg.symbols),
            "sample_s": SAMPLE_S,
            "producer_linger_ms": cfg.producer_linger_ms,
            "warmup_s": WARMUP_S,
        },
        "extra": {
            "verdicts": verdicts,
            "ok": all(verdicts.values()),
            "rss": rss,
            "max_lag": lags,
            "cpu": cpu_thirds,
            "api_error_rate_first_third": round(early, 5),
            "api_error_rate_last_third": round(late, 5),
            "api_answers": answers,
            "totals": totals,
            "limits": {
                "rss_growth_mb_per_h": RSS_GROWTH_LIMIT_MB_PER_H,
                "lag": LAG_LIMIT,
                "error_rate_creep": ERROR_CREEP_LIMIT,
            },
            "samples": samples,
        },
    }
    path = write_result("soak", result)
    print(f"wrote {path}: {verdicts}", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=200.0, help="ticks/s")
    args = parser.parse_args(argv)
    result = soak(args.minutes, args.rate)
    return 0 if result["extra"]["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
