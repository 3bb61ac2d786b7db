"""``pricecast ingest``: the price sources, the writer, or both, plus health on port 9101.

Runs until SIGTERM/SIGINT (or ``stop``), then stops the sources, lets the writer finish and
commit its batch, and exits 0. A broker or database that is not there yet is waited for with
bounded backoff while ``/health/ready`` says not ready: no crash loop.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.config import Settings, get_settings
from services.common.db import make_engine
from services.common.health import (
    Check,
    CheckResult,
    check_database,
    check_kafka,
    health_router,
    serve_worker_http,
)
from services.ingestion.producer import TickPublisher
from services.ingestion.sink import TickSink
from services.ingestion.source_loop import run_source
from services.ingestion.sources.base import Source
from services.ingestion.sources.exchange.stream import ExchangeSource
from services.ingestion.sources.http import HttpSource
from services.ingestion.sources.registry import build_sources
from services.ingestion.staleness import StalenessTracker
from services.ingestion.writer import TickWriter
from services.storage.maintenance import maintenance_loop

log = logging.getLogger(__name__)

ROLES = ("all", "sources", "writer")
STALENESS_REFRESH_S = 30.0
# First storage maintenance round after min(interval, this): a starting (or restarting)
# replica does not sweep right away, yet a replica that lives for minutes does.
MAINTENANCE_FIRST_ROUND_MAX_DELAY_S = 600.0

LATEST_PRICE = sa.text(
    "SELECT price FROM price_ticks WHERE symbol = :symbol ORDER BY ts DESC LIMIT 1"
)


def latest_prices(engine: Engine, symbols: list[str]) -> dict[str, float]:
    """The newest stored price per symbol: where the live synthetic feed continues from."""
    out: dict[str, float] = {}
    with engine.connect() as conn:
        for symbol in symbols:
            row = conn.execute(LATEST_PRICE, {"symbol": symbol}).first()
            if row is not None:
                out[symbol] = float(row[0])
    return out


class IngestionService:
    def __init__(self, settings: Settings, role: str = "all") -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        self.settings = settings
        self.role = role
        self.engine = make_engine(settings, pool_size=2)
        self.publisher = TickPublisher(settings)
        self.staleness = StalenessTracker(settings.stale_after_s)
        self.sources: list[Source] = []
        self.writer: TickWriter | None = None
        if role in ("all", "writer"):
            self.writer = TickWriter(
                settings, TickSink(self.engine), self.publisher, self.staleness
            )
        self.maintenance: dict[str, Any] = {"rounds": 0, "failures": 0, "last": None}

    # --- health --------------------------------------------------------------------------
    async def _check_pipeline(self) -> CheckResult:
        parts = {"publisher": self.publisher.ready}
        if self.writer is not None:
            parts["writer"] = self.writer.ready
        down = [name for name, ok in parts.items() if not ok]
        return CheckResult(
            "unhealthy" if down else "healthy",
            0.0,
            f"not ready: {', '.join(down)}" if down else "publisher and writer running",
        )

    async def _extra(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"role": self.role, **self.staleness.summary()}
        if self.writer is not None:
            lag = await self.writer.lag() if self.writer.ready else None
            st = self.writer.stats
            extra["consumer_lag"] = {self.settings.consumer_group_writer: lag}
            extra["writer"] = {
                "batches": st.batches,
                "consumed": st.consumed,
                "stored": st.stored,
                "duplicates_ignored": st.duplicates,
                "dead_lettered": st.dead_lettered,
            }
            extra["storage_maintenance"] = self.maintenance
        extra["sources"] = {source.name: _source_state(source) for source in self.sources}
        return extra

    async def _check_streams(self) -> CheckResult:
        """Exchange streams (not critical: the service degrades while one reconnects)."""
        streams = [stream for stream in self.sources if isinstance(stream, ExchangeSource)]
        down = [stream.name for stream in streams if stream.stats.connected_since is None]
        if not streams:
            return CheckResult("healthy", 0.0, "no exchange stream configured")
        detail = f"disconnected: {', '.join(down)}" if down else "every stream connected"
        return CheckResult("degraded" if down else "healthy", 0.0, detail)

    def router(self) -> Any:
        checks: dict[str, Check] = {
            "database": lambda: check_database(self.engine),
            "kafka": lambda: check_kafka(self.settings.kafka_bootstrap_servers),
            "pipeline": self._check_pipeline,
            "streams": self._check_streams,
        }
        return health_router(checks, critical={"database", "kafka", "pipeline"}, extra=self._extra)

    # --- running -------------------------------------------------------------------------
    def _maintenance_round(
        self, result: dict[str, Any] | None, error: BaseException | None
    ) -> None:
        """Outcome of a storage maintenance round, shown under ``storage_maintenance`` in
        ``/health/detailed`` (informational: a failing round never changes the status)."""
        self.maintenance["rounds"] += 1
        if error is not None:
            self.maintenance["failures"] += 1
            self.maintenance["last_error"] = f"{type(error).__name__}: {error}"[:300]
        elif result is not None:
            self.maintenance["last"] = result

    def _maintenance_task(self, stop: asyncio.Event) -> asyncio.Task[None]:
        """Writer role: tick retention / backfill materialisation (see
        :mod:`services.storage.maintenance`) every ``storage_maintenance_interval_s``."""
        interval = self.settings.storage_maintenance_interval_s
        return asyncio.create_task(
            maintenance_loop(
                self.engine,
                self.settings,
                stop,
                initial_delay_s=min(interval, MAINTENANCE_FIRST_ROUND_MAX_DELAY_S),
                on_round=self._maintenance_round,
            ),
            name="storage-maintenance",
        )

    async def _refresh_staleness(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.staleness.refresh_from_db, self.engine)
            except sa.exc.SQLAlchemyError as exc:
                log.warning("staleness refresh failed: %s", exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STALENESS_REFRESH_S)

    async def _start_prices(self) -> Mapping[str, float]:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(latest_prices, self.engine, self.settings.symbols()), 10
            )
        except (sa.exc.SQLAlchemyError, TimeoutError) as exc:
            log.warning("could not read the newest prices (%s); synthetic feed starts fresh", exc)
            return {}

    async def run(self, stop: asyncio.Event, health: bool = True) -> int:
        http_task = (
            asyncio.create_task(
                serve_worker_http(self.router(), self.settings.ingest_health_port),
                name="ingest-health",
            )
            if health
            else None
        )
        tasks: list[asyncio.Task[Any]] = []
        try:
            if not await self.publisher.start(stop):
                return 0
            tasks.append(asyncio.create_task(self._refresh_staleness(stop), name="staleness"))
            if self.writer is not None:
                tasks.append(asyncio.create_task(self.writer.run(stop), name="writer"))
                tasks.append(self._maintenance_task(stop))
            if self.role in ("all", "sources"):
                self.sources = build_sources(self.settings, await self._start_prices())
                for source in self.sources:
                    tasks.append(
                        asyncio.create_task(
                            run_source(source, self.publisher, stop), name=f"source-{source.name}"
                        )
                    )
            log.info(
                "ingestion running (role %s, sources %s)",
                self.role,
                ", ".join(source.name for source in self.sources) or "-",
            )
            await stop.wait()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            failed = [result for result in results if isinstance(result, BaseException)]
            for exc in failed:
                log.error("ingestion task failed: %r", exc)
            return 1 if failed else 0
        finally:
            stop.set()
            for task in tasks:
                if not task.done():
                    task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for source in self.sources:
                with contextlib.suppress(Exception):
                    await source.close()
            await self.publisher.stop()
            if http_task is not None:
                http_task.cancel()
                await asyncio.gather(http_task, return_exceptions=True)
            self.engine.dispose()
            log.info("ingestion stopped")


def _source_state(source: Source) -> dict[str, Any]:
    state: dict[str, Any] = {"interval_s": source.interval_s, "exhausted": source.exhausted}
    if isinstance(source, ExchangeSource):
        state.update(source.state())
    if isinstance(source, HttpSource):
        state.update(
            breaker=source.breaker.state,
            requests=source.requests_sent,
            errors=dict(source.errors),
        )
    return state


async def run_ingestion(
    settings: Settings,
    role: str = "all",
    stop: asyncio.Event | None = None,
    install_signals: bool = True,
    health: bool = True,
) -> int:
    """Run the service until ``stop`` is set (or SIGTERM/SIGINT when ``install_signals``)."""
    stop = stop or asyncio.Event()
    if install_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    return await IngestionService(settings, role).run(stop, health)


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.kafka_configured:
        log.error(
            "KAFKA_BOOTSTRAP_SERVERS is not set: point it at the broker "
            "(`pricecast run` starts one for the whole stack)"
        )
        return 2
    return asyncio.run(run_ingestion(settings, getattr(args, "role", "all") or "all"))
