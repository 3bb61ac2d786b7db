"""The ingestion service's writer role runs storage maintenance: tick retention deletes old
ticks while the bars stay, and a failing round neither stops the loop nor changes health.

Each test has a database of its own: retention records a horizon in ``pricecast_meta``
(ticks older than it are ignored afterwards), which must not leak into the session database
the other ingestion tests write 2024 history to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from ingest_helpers import wait_for
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.ingestion.service import run_ingestion

RETENTION_DAYS = 30
OLD_TICKS = 40
RECENT_TICKS = 15


@pytest.fixture
def own_db(scratch_database: Callable[..., AbstractContextManager[str]]) -> Iterator[Engine]:
    with scratch_database("pricecast_ingmaint") as url:
        engine = sa.create_engine(url)
        try:
            yield engine
        finally:
            engine.dispose()


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql)).scalar()


def store_ticks(engine: Engine) -> None:
    """Ticks 40 days old and ticks of the last hour, each in a minute of its own."""
    now = datetime.now(UTC)
    rows = [
        {"s": "RET-USD", "ts": now - timedelta(days=40, minutes=2 * i), "p": 10.0 + i}
        for i in range(OLD_TICKS)
    ]
    rows += [
        {"s": "RET-USD", "ts": now - timedelta(minutes=2 * i + 1), "p": 20.0 + i}
        for i in range(RECENT_TICKS)
    ]
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO price_ticks (symbol, ts, price, volume, source)"
                " VALUES (:s, :ts, :p, 1, 'test')"
            ),
            rows,
        )


def service_settings(ing_settings: Settings, engine: Engine) -> Settings:
    return ing_settings.model_copy(
        update={
            "database_url": engine.url.render_as_string(hide_password=False),
            "tick_retention_days": RETENTION_DAYS,
            "storage_maintenance_interval_s": 0.2,
        }
    )


async def detailed(settings: Settings) -> dict[str, Any]:
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{settings.ingest_health_port}", timeout=5
    ) as client:
        body: dict[str, Any] = (await client.get("/health/detailed")).json()
        return body


async def test_writer_role_deletes_old_ticks_and_keeps_bars(
    ing_settings: Settings, own_db: Engine
) -> None:
    store_ticks(own_db)
    settings = service_settings(ing_settings, own_db)
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingestion(settings, "writer", stop, install_signals=False))
    try:
        await wait_for(
            lambda: scalar(own_db, "SELECT count(*) FROM price_ticks") == RECENT_TICKS,
            60,
            "retention by the writer role",
        )

        async def health_answers() -> bool:
            try:
                await detailed(settings)
            except httpx.TransportError:
                return False
            return True

        await wait_for(health_answers, 30, "health answers")
        maintenance = (await detailed(settings))["storage_maintenance"]
        assert maintenance["rounds"] >= 1 and maintenance["failures"] == 0
        assert maintenance["last"]["skipped"] is False
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    # the bars of the deleted ticks stay: one 1m bar per tick, every tick counted once
    assert scalar(own_db, "SELECT count(*) FROM price_1m") == OLD_TICKS + RECENT_TICKS
    assert scalar(own_db, "SELECT sum(trade_count) FROM price_1d") == OLD_TICKS + RECENT_TICKS
    horizon = scalar(
        own_db, "SELECT value::timestamptz FROM pricecast_meta WHERE key = 'ticks_dropped_before'"
    )
    assert horizon is not None
    assert horizon <= datetime.now(UTC) - timedelta(days=RETENTION_DAYS)


async def test_failing_rounds_leave_the_service_healthy(
    ing_settings: Settings, own_db: Engine
) -> None:
    store_ticks(own_db)
    path = scalar(own_db, "SELECT value FROM pricecast_meta WHERE key = 'storage_path'")
    with own_db.begin() as conn:  # every round fails: the storage path is unreadable
        conn.execute(
            sa.text("UPDATE pricecast_meta SET value = 'unknown' WHERE key = 'storage_path'")
        )
    settings = service_settings(ing_settings, own_db)
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingestion(settings, "writer", stop, install_signals=False))
    try:

        async def failed_twice_while_healthy() -> bool:
            try:
                body = await detailed(settings)
            except httpx.TransportError:
                return False
            return body["status"] == "healthy" and body["storage_maintenance"]["failures"] >= 2

        await wait_for(failed_twice_while_healthy, 60, "failing rounds, healthy service")
        assert scalar(own_db, "SELECT count(*) FROM price_ticks") == OLD_TICKS + RECENT_TICKS
        with own_db.begin() as conn:  # repaired: the next round runs
            conn.execute(
                sa.text("UPDATE pricecast_meta SET value = :p WHERE key = 'storage_path'"),
                {"p": path},
            )
        await wait_for(
            lambda: scalar(own_db, "SELECT count(*) FROM price_ticks") == RECENT_TICKS,
            60,
            "retention once repaired",
        )
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
