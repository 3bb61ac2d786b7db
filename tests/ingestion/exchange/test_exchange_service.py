"""``pricecast ingest`` (the process ``pricecast run`` starts) pointed at a venue by the
environment alone: ``PRICECAST_INGEST_SOURCES=binance PRICECAST_BINANCE_WS_URL=ws://...``.
Its trades are stored, and ``/health/detailed`` and ``/metrics`` show the stream's state."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from ingest_helpers import PRICECAST, count_ticks, service_env, wait_for
from service_process import wait_serving
from sqlalchemy.engine import Engine
from venues import DIALECTS, FakeVenue, make_trades

from services.common.config import Settings
from services.common.kafka import ensure_topics


@pytest.fixture
async def venue() -> AsyncIterator[FakeVenue]:
    trades = make_trades("BTCUSDT", 200, int(time.time() * 1000) - 120_000)
    v = await FakeVenue(DIALECTS["binance"](), trades).start()
    yield v
    await v.stop()


async def test_ingest_service_streams_binance_from_the_environment(
    ing_settings: Settings, clean_db: Engine, venue: FakeVenue
) -> None:
    await ensure_topics(ing_settings)
    env = service_env(
        ing_settings,
        PRICECAST_INGEST_SOURCES="binance",
        PRICECAST_BINANCE_WS_URL=venue.ws_url,
        PRICECAST_BINANCE_REST_URL=venue.rest_url,
        PRICECAST_BINANCE_SYMBOLS="btcusdt:SB-USD",
    )
    port = int(env["PRICECAST_INGEST_HEALTH_PORT"])
    proc = subprocess.Popen([*PRICECAST, "ingest"], env=env)  # noqa: ASYNC220 - starts at once
    try:
        await wait_serving(port, proc, "pricecast ingest")
        await wait_for(lambda: count_ticks(clean_db, "symbol = 'SB-USD'") >= 200, 60, "stored")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
            detailed = (await client.get("/health/detailed")).json()
            metrics = (await client.get("/metrics")).text
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert count_ticks(clean_db, "symbol = 'SB-USD' AND source = 'binance'") == 200
    state = detailed["sources"]["binance"]
    assert state["connected"] is True and state["trades"] == 200
    assert state["url"].startswith(venue.ws_url + "/stream?streams=btcusdt@trade")
    assert detailed["services"]["streams"] == "healthy"
    assert 'pricecast_source_connected{source="binance"} 1.0' in metrics
    assert 'pricecast_source_messages_total{source="binance"}' in metrics
