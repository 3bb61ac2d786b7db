"""The ingestion service in one process: synthetic feed -> prices -> writer -> price_ticks,
with its health surface (consumer lag, stale symbols) and a clean stop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import sqlalchemy as sa
from ingest_helpers import count_ticks, wait_for
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.ingestion.service import run_ingestion


async def test_service_runs_feed_and_writer_and_reports_health(
    ing_settings: Settings, clean_db: Engine
) -> None:
    with clean_db.begin() as conn:  # an asset whose newest tick is old: stale
        conn.execute(sa.text("INSERT INTO assets (symbol) VALUES ('OLD-USD')"))
        conn.execute(
            sa.text(
                "INSERT INTO price_ticks (symbol, ts, price, volume, source)"
                " VALUES ('OLD-USD', :ts, 5, 1, 'test')"
            ),
            {"ts": datetime.now(UTC) - timedelta(hours=2)},
        )
    settings = ing_settings.model_copy(
        update={"ingest_symbols": "SVA-USD,SVB-USD", "synthetic_interval_s": 0.1}
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingestion(settings, "all", stop, install_signals=False))
    base = f"http://127.0.0.1:{settings.ingest_health_port}"
    try:
        await wait_for(lambda: count_ticks(clean_db, "symbol = 'SVB-USD'") >= 5, 30, "live ticks")
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            assert (await client.get("/health")).status_code == 200
            ready = await client.get("/health/ready")
            assert ready.status_code == 200, ready.text
            detailed = (await client.get("/health/detailed")).json()
            metrics = (await client.get("/metrics")).text
        assert detailed["status"] == "healthy", detailed
        assert detailed["services"]["database"] == "healthy"
        assert detailed["services"]["kafka"] == "healthy"
        assert settings.consumer_group_writer in detailed["consumer_lag"]
        assert isinstance(detailed["consumer_lag"][settings.consumer_group_writer], int)
        assert detailed["stale_symbols"] == ["OLD-USD"]
        assert detailed["tick_age_seconds"]["SVA-USD"] < 60
        assert detailed["writer"]["stored"] > 0
        assert 'pricecast_ticks_ingested_total{source="synthetic"}' in metrics
        assert 'pricecast_tick_age_seconds{symbol="SVA-USD"}' in metrics
        # the stale-data alert's threshold, beside the ages (ops/prometheus/rules)
        assert f"pricecast_stale_after_seconds {settings.stale_after_s}" in metrics
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
    # Everything the feed published was stored before the writer stopped.
    with clean_db.connect() as conn:
        assets = set(conn.execute(sa.text("SELECT symbol FROM assets")).scalars())
    assert {"SVA-USD", "SVB-USD"} <= assets


async def test_not_ready_while_the_broker_is_unreachable(ing_settings: Settings) -> None:
    from services.common.infra import free_port

    settings = ing_settings.model_copy(
        update={"kafka_bootstrap_servers": f"127.0.0.1:{free_port()}"}
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_ingestion(settings, "all", stop, install_signals=False))
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{settings.ingest_health_port}", timeout=5
        ) as client:
            for _ in range(50):
                try:
                    ready = await client.get("/health/ready")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            assert ready.status_code == 503
            assert "kafka" in ready.json()["down"]
        await asyncio.sleep(1.0)
        assert not task.done()  # waiting with backoff, not crashing
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 30) == 0
