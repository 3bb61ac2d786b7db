"""``pricecast backfill --venue``: a symbol's trades from the venue's REST endpoint, in pages,
through validation into ``price_ticks``, with progress; twice is safe (trade ids)."""

from __future__ import annotations

import asyncio
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from ingest_helpers import PRICECAST, count_ticks, service_env
from sqlalchemy.engine import Engine
from test_exchange_streams import VENUE_SYMBOL, expected_ids
from venues import DIALECTS, FakeVenue, VTrade

from services.common.config import Settings
from services.common.kafka import ensure_topics
from services.ingestion.venue_backfill import venue_history

NOON = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)


def spaced_trades(venue: str, n: int, step_ms: int = 10) -> list[VTrade]:
    start = int(NOON.timestamp() * 1000)
    return [VTrade(venue, 5000 + i, start + i * step_ms, "100.50", "0.2") for i in range(n)]


@pytest.mark.parametrize("kind", sorted(DIALECTS))
async def test_history_pages_cover_the_range_once(
    kind: str, ing_settings: Settings, tmp_path: object
) -> None:
    record = spaced_trades(VENUE_SYMBOL[kind], 2500)
    venue = await FakeVenue(DIALECTS[kind](), record).start()
    try:
        key = tmp_path / "k"  # type: ignore[operator]
        key.write_text("test-key")
        s = ing_settings.model_copy(
            update={f"{kind}_rest_url": venue.rest_url, "finnhub_api_key_file": key}
        )
        pair = f"{VENUE_SYMBOL[kind].lower() if kind == 'binance' else VENUE_SYMBOL[kind]}:H-USD"
        since = NOON + timedelta(seconds=2)  # trades 200.. (10 ms apart)
        until = NOON + timedelta(seconds=22)  # .. 2199
        ids: list[str] = []
        pages = 0
        async for page in venue_history(s, kind, pair, since, until):
            pages += 1
            ids.extend(t["trade_id"] for t in page)
            assert all(since <= t["ts"] < until and t["symbol"] == "H-USD" for t in page)
    finally:
        await venue.stop()
    assert len(ids) == 2000 and set(ids) == expected_ids(kind, record[200:2200])
    assert pages >= (1 if kind == "finnhub" else 2)  # pages of the venue's REST limit


async def test_backfill_command_with_progress_twice_is_safe(
    ing_settings: Settings, clean_db: Engine
) -> None:
    await ensure_topics(ing_settings)
    record = spaced_trades("BTCUSDT", 2500)
    venue = await FakeVenue(DIALECTS["binance"](), record).start()
    env = service_env(ing_settings, PRICECAST_BINANCE_REST_URL=venue.rest_url)
    argv = [
        *PRICECAST,
        "backfill",
        "--venue",
        "binance",
        "--pair",
        "btcusdt:BF-USD",
        "--since",
        NOON.isoformat(),
        "--until",
        (NOON + timedelta(minutes=5)).isoformat(),
        "--with-writer",
    ]
    try:
        for _ in range(2):  # the venue serves from this event loop: a subprocess of its own
            proc = await asyncio.create_subprocess_exec(
                *argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            assert proc.returncode == 0, err.decode()[-2000:]
            assert "published 2500 ticks, rejected 0" in out.decode()
            assert "binance btcusdt:BF-USD" in err.decode()  # the progress line
            assert count_ticks(clean_db, "symbol = 'BF-USD' AND source = 'binance'") == 2500
    finally:
        await venue.stop()
