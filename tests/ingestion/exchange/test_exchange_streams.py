"""Each venue's source against a local server that speaks the venue's documented format,
through the real broker and writer into the real database.

The server cuts the connection mid-stream and, while the source is away, the venue prints
trades it never sends: the source reconnects, finds the hole (trade ids; Finnhub: the span of
the reconnect), repairs it from the local REST endpoint, and every trade is stored exactly
once, two per millisecond included, with the bars counting every trade's volume. Malformed
frames land in the DLQ with their reason and the stream goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from ingest_helpers import decode_value, read_topic, wait_for
from sqlalchemy.engine import Engine
from venues import DIALECTS, FakeVenue, VTrade, make_trades

from services.common.config import Settings
from services.ingestion.producer import TickPublisher
from services.ingestion.source_loop import run_source
from services.ingestion.sources.exchange.registry import build_exchange_source
from services.ingestion.sources.exchange.stream import ExchangeSource

VENUE_SYMBOL = {"binance": "BTCUSDT", "coinbase": "BTC-USD", "kraken": "BTC/USD", "finnhub": "AAPL"}
SYMBOL = {"binance": "XB-USD", "coinbase": "XC-USD", "kraken": "XK-USD", "finnhub": "XF-USD"}
# (trades, where the first connection drops, trades printed while the source is away)
SHAPE = {"binance": (120, 40, 30), "coinbase": (120, 39, 30), "kraken": (220, 60, 90)}
SHAPE["finnhub"] = (120, 40, 30)


def settings_for(base: Settings, kind: str, venue: FakeVenue, tmp: Path, **extra: Any) -> Settings:
    pair = f"{VENUE_SYMBOL[kind].lower() if kind == 'binance' else VENUE_SYMBOL[kind]}"
    update: dict[str, Any] = {
        f"{kind}_ws_url": venue.ws_url,
        f"{kind}_rest_url": venue.rest_url,
        f"{kind}_symbols": f"{pair}:{SYMBOL[kind]}",
        "exchange_backoff_initial_s": 0.05,
        "exchange_backoff_max_s": 0.2,
        "exchange_batch_max": 500,
        **extra,
    }
    if kind == "finnhub":
        key = tmp / "finnhub.key"
        key.write_text("test-key\n")
        update["finnhub_api_key_file"] = key
    return base.model_copy(update=update)


class Running:
    """A source driven by the real publish loop until closed."""

    def __init__(self, source: ExchangeSource, publisher: TickPublisher) -> None:
        self.source = source
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(run_source(source, publisher, self.stop))

    async def close(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, 30)
        await self.source.close()


@pytest.fixture
def stream_to_db(
    ing_settings: Settings,
    publisher: TickPublisher,
    start_writer: Any,
    venues: list[FakeVenue],
    tmp_path: Path,
) -> Callable[..., Awaitable[tuple[Running, Settings]]]:
    """Start a writer and a ``kind`` source reading ``venue`` (settings ``overrides``)."""

    async def start(kind: str, venue: FakeVenue, **overrides: Any) -> tuple[Running, Settings]:
        venues.append(venue)
        settings = settings_for(ing_settings, kind, venue, tmp_path, **overrides)
        await start_writer(settings)
        return Running(build_exchange_source(settings, kind), publisher), settings

    return start


@pytest.fixture
async def venues() -> AsyncIterator[list[FakeVenue]]:
    started: list[FakeVenue] = []
    yield started
    for v in started:
        await v.stop()


STORED_TICKS = sa.text(
    "SELECT count(*), count(DISTINCT trade_id), coalesce(sum(volume), 0)"
    " FROM price_ticks WHERE symbol = :s"
)
STORED_BARS = sa.text(
    "SELECT coalesce(sum(trade_count), 0), coalesce(sum(volume), 0) FROM price_1m WHERE symbol = :s"
)
STORED_IDS = sa.text("SELECT trade_id FROM price_ticks WHERE symbol = :s")


def stored(engine: Engine, symbol: str) -> dict[str, Any]:
    """What the database holds of ``symbol``: tick rows, distinct ids, volume, 1m bar sums."""
    with engine.connect() as conn:
        row = conn.execute(STORED_TICKS, {"s": symbol}).one()
        bars = conn.execute(STORED_BARS, {"s": symbol}).one()
        ids = conn.execute(STORED_IDS, {"s": symbol}).scalars()
        return {
            "rows": row[0],
            "distinct": row[1],
            "volume": row[2],
            "bar_trades": int(bars[0]),
            "bar_volume": bars[1],
            "ids": set(ids),
        }


def expected_ids(kind: str, trades: list[VTrade]) -> set[str]:
    if kind != "finnhub":
        return {str(t.tid) for t in trades}
    out, last = set(), None
    for t in trades:  # <ms>-<k>: k counts the trades of one millisecond
        k = last[1] + 1 if last is not None and last[0] == t.ms else 0
        last = (t.ms, k)
        out.add(f"{t.ms}-{k}")
    return out


@pytest.mark.parametrize("kind", sorted(DIALECTS))
async def test_every_trade_once_through_a_drop_and_a_gap(
    kind: str, stream_to_db: Any, clean_db: Engine
) -> None:
    n, cut, away = SHAPE[kind]
    start_ms = int(time.time() * 1000) - 3_600_000
    trades = make_trades(VENUE_SYMBOL[kind], n, start_ms)
    dialect = DIALECTS[kind]()
    junk = {5: ["{not json", '{"unexpected": true}']}
    if dialect.batch > 1:  # a batch with one bad trade: only that trade is refused
        bad = VTrade(VENUE_SYMBOL[kind], 1, start_ms, "NaN", "0.015")
        junk[10] = [dialect.frames([bad])[0].replace(": NaN", ': "NaN"')]
    venue = await FakeVenue(
        dialect,
        trades,
        plan=[(0, cut, "drop"), (cut + away, n, "stay")],
        junk=junk,
        require_token="test-key" if kind == "finnhub" else None,
    ).start()
    running, settings = await stream_to_db(kind, venue)
    try:
        await wait_for(
            lambda: stored(clean_db, SYMBOL[kind])["rows"] >= n, 60, f"{n} {kind} trades stored"
        )
        await wait_for(lambda: running.source.stats.gaps["repaired"] >= 1, 30, "gap repaired")
    finally:
        await running.close()
    got = stored(clean_db, SYMBOL[kind])
    total = sum(Decimal(t.size) for t in trades)
    assert got["rows"] == got["distinct"] == n
    assert got["ids"] == expected_ids(kind, trades)
    assert Decimal(str(got["volume"])).quantize(Decimal("0.001")) == total
    assert got["bar_trades"] == n  # the bars count every trade of every millisecond
    assert Decimal(str(got["bar_volume"])).quantize(Decimal("0.001")) == total
    state = running.source.state()
    assert state["reconnects"].get("dropped", 0) >= 1
    assert state["gaps"]["found"] >= 1 and state["gaps"]["failed"] == 0
    assert venue.rest_calls >= 1
    reasons = ["invalid_json", "unknown_shape"] + (["invalid_type"] if dialect.batch > 1 else [])
    records = await read_topic(settings, settings.topic_prices_dlq, len(reasons))
    dlq = [decode_value(record) for record in records]
    assert sorted(d["reason"] for d in dlq) == sorted(reasons)
    assert all(d["source"] == kind for d in dlq)
    assert state["malformed"] == len(reasons)


@pytest.mark.parametrize("kind", sorted(DIALECTS))
async def test_a_silent_server_is_taken_as_dead(
    kind: str, ing_settings: Settings, venues: list[FakeVenue], tmp_path: Path
) -> None:
    trades = make_trades(VENUE_SYMBOL[kind], 10, int(time.time() * 1000) - 60_000)
    venue = await FakeVenue(
        DIALECTS[kind](), trades, plan=[(0, 5, "silent"), (5, 10, "silent")]
    ).start()
    venues.append(venue)
    s = settings_for(ing_settings, kind, venue, tmp_path, exchange_silence_s=0.3)
    source = build_exchange_source(s, kind)
    source.start()
    try:
        await wait_for(lambda: source.stats.reconnects.get("silence", 0) >= 2, 30, "silence")
    finally:
        await source.close()
    assert venue.connections >= 2
    assert "no message for 0.3s" in (source.state()["last_error"] or "")


async def test_binance_connection_renewed_before_its_age_limit(
    stream_to_db: Any, clean_db: Engine
) -> None:
    """Binance cuts connections at 24 h; the source renews them at max age (here 0.3 s) at
    once, and whatever the venue sent into the closing connection is repaired by id."""
    n = 150
    trades = make_trades("BTCUSDT", n, int(time.time() * 1000) - 600_000)
    venue = await FakeVenue(DIALECTS["binance"](), trades, pace_s=0.01).start()
    running, _ = await stream_to_db("binance", venue, binance_max_connection_age_s=0.3)
    try:
        await wait_for(lambda: stored(clean_db, "XB-USD")["rows"] >= n, 60, "all stored")
        await wait_for(
            lambda: running.source.stats.reconnects.get("max_age", 0) >= 2, 30, "renewed"
        )
    finally:
        await running.close()
    got = stored(clean_db, "XB-USD")
    assert got["rows"] == got["distinct"] == n
    assert got["ids"] == {str(t.tid) for t in trades}


async def test_finnhub_wrong_key_is_refused_and_retried(
    ing_settings: Settings, venues: list[FakeVenue], tmp_path: Path
) -> None:
    trades = make_trades("AAPL", 4, int(time.time() * 1000) - 60_000)
    venue = await FakeVenue(DIALECTS["finnhub"](), trades, require_token="another-key").start()
    venues.append(venue)
    s = settings_for(ing_settings, "finnhub", venue, tmp_path)
    source = build_exchange_source(s, "finnhub")
    source.start()
    try:
        await wait_for(lambda: source.stats.reconnects.get("refused", 0) >= 2, 30, "refused")
    finally:
        await source.close()
    state = source.state()
    assert state["connected"] is False and "HTTP 401" in state["last_error"]
    assert "test-key" not in str(state)  # the key is never shown


async def test_a_batch_is_offered_again_until_published(
    ing_settings: Settings, venues: list[FakeVenue], tmp_path: Path
) -> None:
    """A broker outage (publish fails, ``published`` not called) loses no trade: the same
    batch comes back from ``fetch`` until it is confirmed."""
    trades = make_trades("BTCUSDT", 40, int(time.time() * 1000) - 60_000)
    venue = await FakeVenue(DIALECTS["binance"](), trades).start()
    venues.append(venue)
    source = build_exchange_source(
        settings_for(ing_settings, "binance", venue, tmp_path), "binance"
    )
    try:
        first: list[Any] = []
        while not first:
            first = await source.fetch()
        again = await source.fetch()
        assert again == first
        source.published(again)
        await wait_for(lambda: source.stats.trades >= 40, 30, "all received")
        rest: list[Any] = []
        while len(first) + len(rest) < 40:
            batch = await source.fetch()
            source.published(batch)
            rest.extend(batch)
    finally:
        await source.close()
    ids = [t["trade_id"] for t in first + rest]
    assert sorted(ids) == sorted(str(t.tid) for t in trades)
