"""What a subscribe answers with at once: the channel's current state.

* ``predictions:S:I``: the latest forecast of every horizon, the records REST serves (Redis
  ``prediction:S:I:h`` first, the database for horizons Redis does not hold).
* ``bars:S:I``: the newest ``SNAPSHOT_BARS`` bars, as ``/bars`` returns them (the last one may
  still be filling).
* ``ticks:S``: the newest stored tick, or null.

Each is ``{"predictions": [...]}``, ``{"bars": [...]}`` or ``{"tick": ...}`` as JSON text.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.api.core.gate import REDIS_BUDGET_S, RedisFailure
from services.api.queries.predictions import RECORD_COLUMNS, record_from_row
from services.api.schemas import Bar
from services.api.state import ApiState
from services.api.stream.protocol import Channel
from services.common.bars import get_bars
from services.common.cache import prediction_key
from services.common.schemas import Tick
from services.common.staleness import with_freshness

log = logging.getLogger(__name__)

SNAPSHOT_BARS = 100

_LATEST_PER_HORIZON = sa.text(
    f"SELECT DISTINCT ON (horizon) {RECORD_COLUMNS} FROM predictions "
    "WHERE symbol = :symbol AND interval = :interval AND horizon = ANY(:horizons) "
    "ORDER BY horizon, as_of DESC"
)
_NEWEST_TICK = sa.text(
    "SELECT symbol, ts, price, volume, source FROM price_ticks WHERE symbol = :symbol "
    "ORDER BY ts DESC LIMIT 1"
)


def bar_json(bar: Any) -> str:
    """One bar exactly as ``/bars`` serialises it."""
    return Bar.of(bar).model_dump_json()


async def snapshot(state: ApiState, channel: Channel) -> str:
    if channel.kind == "predictions":
        assert channel.interval is not None
        return await _predictions(state, channel.symbol, channel.interval)
    if channel.kind == "bars":
        assert channel.interval is not None
        bars = await asyncio.to_thread(_bars, state.engine, channel.symbol, channel.interval)
        return '{"bars":[' + ",".join(bars) + "]}"
    tick = await asyncio.to_thread(_tick, state.engine, channel.symbol)
    return '{"tick":' + (tick or "null") + "}"


async def _predictions(state: ApiState, symbol: str, interval: str) -> str:
    settings = state.settings
    horizons = list(
        range(1, (settings.horizons_1h if interval == "1h" else settings.horizons_1d) + 1)
    )
    cached: list[bytes | None] = [None] * len(horizons)
    if state.gate.redis_usable:
        try:
            async with asyncio.timeout(REDIS_BUDGET_S):
                keys = [prediction_key(symbol, interval, horizon) for horizon in horizons]
                cached = await state.redis.mget(keys)
        except RedisFailure as exc:
            state.gate.mark_down(exc)
    records = {
        horizon: cached_value.decode()
        for horizon, cached_value in zip(horizons, cached, strict=True)
        if cached_value is not None
    }
    missing = [horizon for horizon in horizons if horizon not in records]
    if missing:
        stale_after = settings.prediction_stale_after_intervals
        stored = await asyncio.to_thread(
            _stored, state.engine, symbol, interval, missing, stale_after
        )
        records.update(stored)
    return '{"predictions":[' + ",".join(records[horizon] for horizon in sorted(records)) + "]}"


def _stored(
    engine: Engine, symbol: str, interval: str, horizons: list[int], stale_after: float
) -> dict[int, str]:
    """The database's records, marked stale as the REST database path marks them."""
    now = datetime.now(UTC)
    with engine.connect() as conn:
        rows = conn.execute(
            _LATEST_PER_HORIZON, {"symbol": symbol, "interval": interval, "horizons": horizons}
        )
        return {
            int(row["horizon"]): with_freshness(
                record_from_row(row), now, stale_after
            ).model_dump_json()
            for row in rows.mappings()
        }


def _bars(engine: Engine, symbol: str, interval: str) -> list[str]:
    with engine.connect() as conn:
        return [bar_json(bar) for bar in get_bars(conn, symbol, interval, limit=SNAPSHOT_BARS)]


def _tick(engine: Engine, symbol: str) -> str | None:
    with engine.connect() as conn:
        row = conn.execute(_NEWEST_TICK, {"symbol": symbol}).mappings().first()
    if row is None:
        return None
    return Tick(
        symbol=row["symbol"],
        ts=row["ts"].astimezone(UTC),
        price=row["price"],
        volume=row["volume"],
        source=row["source"],
    ).to_json()
