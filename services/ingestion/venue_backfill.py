"""``pricecast backfill --venue KIND --pair VENUE:SYMBOL --since T [--until T]``: a symbol's
trade history from a venue's REST endpoint, through the same validation and Kafka path as the
live stream.

The trades keep the venue's ids (Finnhub: ``<ms>-<k>``, as the stream names them), so history
that overlaps what the stream stored (or a second run of the same range) is stored once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from services.common.config import Settings
from services.ingestion.sources.base import RawTick
from services.ingestion.sources.exchange.registry import VENUES, build_exchange_source


def parse_time(text: str) -> datetime:
    """ISO 8601 (``2026-11-30``, ``2026-11-30T12:00:00Z``); naive means UTC."""
    dt = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


async def venue_history(
    settings: Settings, kind: str, pair: str, since: datetime, until: datetime
) -> AsyncIterator[list[RawTick]]:
    """Pages of raw trades of ``pair`` (``venue-symbol:SYMBOL``) in [since, until)."""
    if kind not in VENUES:
        raise ValueError(f"unknown venue {kind!r}; known: {', '.join(VENUES)}")
    if since >= until:
        raise ValueError("--since must be before --until")
    source = build_exchange_source(settings.model_copy(update={f"{kind}_symbols": pair}), kind)
    try:
        venue_symbol = next(iter(source.pairs))
        async for page in source.history(venue_symbol, since, until):
            yield page
    finally:
        await source.close()
