"""The API's ``/health*`` surface: its dependencies, and whether the data can be trusted.

``/health/detailed`` carries, besides database, Redis and Kafka reachability, a ``data`` report
read from Kafka and PostgreSQL by the API itself (never from the workers' ports, which neither
a probe nor a client of the API can reach in Kubernetes): lag per consumer group, the age of
the newest tick and of the newest bar per interval per symbol, the stale symbols, the champions
and their ages, and the stream hub's numbers where one is attached.

Bounded and cheap: every check and the data report get ``health_budget_s`` (0.8 s), so the page
answers within about a second even when a dependency hangs. The data report is read at most
once per ``health_data_cache_s``; concurrent probes share that one read, and a read that
outlasts the budget goes on in the background while the previous report (marked with its age)
is served. A stale symbol turns a ``healthy`` answer ``degraded`` and is named.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter

from services.api.queries import health as queries
from services.api.state import ApiState
from services.common.config import Settings
from services.common.health import (
    Check,
    CheckResult,
    check_database,
    check_kafka,
    check_redis,
    describe,
    health_router,
)
from services.common.offsets import group_backlog

StreamStats = Callable[[], dict[str, Any]]


def _age_s(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else round(max(0.0, (now - then).total_seconds()), 1)


class DataReport:
    """The cached ``data`` section of ``/health/detailed`` (module docstring)."""

    def __init__(self, state: ApiState, streams: StreamStats | None = None) -> None:
        self.state = state
        self.settings: Settings = state.settings
        self.streams = streams  # the live streams' numbers, read on every answer (in memory)
        self._last: dict[str, Any] | None = None
        self._read_at = 0.0
        self._task: asyncio.Task[dict[str, Any]] | None = None

    async def get(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._last is None or now - self._read_at >= self.settings.health_data_cache_s:
            if self._task is None or self._task.done():
                self._task = asyncio.create_task(self._read())
            done, _ = await asyncio.wait({self._task}, timeout=self.settings.health_budget_s)
            if done:
                self._last, self._read_at = self._task.result(), time.monotonic()
        report = dict(self._last or {"status": "unknown", "detail": "first read under way"})
        report["report_age_s"] = round(time.monotonic() - self._read_at, 1) if self._last else None
        if self.streams is not None:
            report["streams"] = self.streams()
        return report

    async def _read(self) -> dict[str, Any]:
        errors: dict[str, str] = {}
        db_part: dict[str, Any] = {}
        lag: dict[str, int | None] = {}

        async def database() -> None:
            try:
                db_part.update(await asyncio.to_thread(self._read_database))
            except Exception as exc:  # noqa: BLE001 - reported, never raised
                errors["database"] = describe(exc)

        async def one_lag(group: str) -> None:
            try:
                lag[group] = await group_backlog(self.settings, group, self.settings.topic_prices)
            except Exception as exc:  # noqa: BLE001
                lag[group] = None
                errors[f"lag:{group}"] = describe(exc)

        parts = [database()]
        if self.settings.kafka_configured:
            groups = (self.settings.consumer_group_writer, self.settings.consumer_group_prediction)
            parts += [one_lag(consumer_group) for consumer_group in groups]
        await asyncio.gather(*parts)
        stale = db_part.get("stale_symbols", [])
        return {
            "status": "degraded" if stale else ("unknown" if errors else "healthy"),
            "read_at": datetime.now(UTC).isoformat(),
            "stale_after_s": self.settings.stale_after_s,
            **db_part,
            "consumer_lag": lag,
            **({"errors": errors} if errors else {}),
        }

    def _read_database(self) -> dict[str, Any]:
        with self.state.engine.connect() as conn:
            newest = queries.newest_per_symbol(conn)
            champions = queries.champions(conn)
        now = datetime.now(UTC)
        tick_ages = {symbol: _age_s(now, times["tick"]) for symbol, times in newest.items()}
        symbols = {
            symbol: {
                "tick_age_s": tick_ages[symbol],
                "bar_age_s": {
                    kind: _age_s(now, stamp) for kind, stamp in times.items() if kind != "tick"
                },
            }
            for symbol, times in newest.items()
        }
        limit = self.settings.stale_after_s
        stale = [
            stale_symbol
            for stale_symbol, age in tick_ages.items()
            if age is not None and age > limit
        ]
        models = [
            {
                "model": champion["model"],
                "scope": champion["scope"],
                "interval": champion["interval"],
                "version": champion["version"],
                "age_s": _age_s(now, champion["promoted_at"] or champion["created_at"]),
            }
            for champion in champions
        ]
        return {"stale_symbols": stale, "symbols": symbols, "champions": models}


def api_health_router(state: ApiState, report: DataReport) -> APIRouter:
    settings = state.settings

    async def database() -> CheckResult:
        return await check_database(state.engine)

    async def redis() -> CheckResult:
        return await check_redis(state.redis)

    async def kafka() -> CheckResult:
        return await check_kafka(settings.kafka_bootstrap_servers)

    checks: dict[str, Check] = {"database": database, "redis": redis}
    if settings.kafka_configured:
        checks["kafka"] = kafka

    async def extra() -> dict[str, Any]:
        return {
            "data": await report.get(),
            "api": {
                "redis_fallback_active": not state.gate.redis_usable,
                "signing_kid": state.tokens.keys.signing_kid,
                "accepted_kids": sorted(state.tokens.keys.verify_keys),
            },
        }

    return health_router(
        checks, critical={"database"}, extra=extra, budget_s=settings.health_budget_s
    )
