"""Coinbase Advanced Trade: the public ``market_trades`` channel, kept open by ``heartbeats``.

* WebSocket (``PRICECAST_COINBASE_WS_URL``, default ``wss://advanced-trade-ws.coinbase.com``):
  one subscribe message per channel, ``{"type": "subscribe", "product_ids": ["BTC-USD"],
  "channel": "market_trades"}`` and the same for ``heartbeats`` (channels without updates
  close after 60-90 s; heartbeats come every second and count as liveness).
* A message: ``{"channel": "market_trades", "timestamp", "sequence_num", "events": [{"type":
  "snapshot"|"update", "trades": [{"trade_id": "123", "product_id": "BTC-USD", "price":
  "27000.01", "size": "0.01", "side": "BUY", "time": RFC 3339}]}]}``; an update may carry
  several trades (collected over 250 ms), newest first. ``trade_id`` is sequential per
  product. Errors come as ``{"type": "error", "message": ...}``.
* REST (``PRICECAST_COINBASE_REST_URL``, default ``https://api.coinbase.com``): ``GET
  /api/v3/brokerage/market/products/{product}/ticker?limit=N&start=unix&end=unix`` answers
  ``{"trades": [...same fields...]}`` (newest first); gaps and backfill page back in time.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import orjson

from services.ingestion.sources.base import RawTick
from services.ingestion.sources.exchange import common
from services.ingestion.sources.exchange.gaps import Gap
from services.ingestion.sources.exchange.numbers import decimal_value, rfc3339, sequential_id
from services.ingestion.sources.exchange.rest import get_json
from services.ingestion.sources.exchange.stream import ExchangeSource
from services.ingestion.validation import ValidationFailed

PAGE = 1000
CONTROL_CHANNELS = frozenset(("heartbeats", "subscriptions", "status"))


class CoinbaseSource(ExchangeSource):
    kind = "coinbase"

    def ws_url(self) -> str:
        return self.config.ws_url

    def subscribe_messages(self) -> list[str]:
        products = list(self.pairs)
        return [
            orjson.dumps(
                {"type": "subscribe", "product_ids": products, "channel": channel}
            ).decode()
            for channel in ("heartbeats", "market_trades")
        ]

    def parse(self, frame: str | bytes) -> common.Parsed:
        try:
            doc = common.load_frame(frame)
            channel = doc.get("channel")
            if channel == "market_trades":
                trades = (item for event in doc["events"] for item in event["trades"])
                return common.parse_each(trades, self._trade)
            if channel in CONTROL_CHANNELS:
                return common.Parsed()
            if doc.get("type") == "error":
                return common.Parsed(error=str(doc.get("message", doc))[:300])
            raise ValidationFailed("unknown_shape", f"unknown channel {str(channel)[:30]!r}")
        except common.FRAME_ERRORS as exc:
            return common.Parsed(rejects=[common.rejected(exc, frame)])

    def _trade(self, item: dict[str, Any]) -> RawTick:
        product = item["product_id"]
        symbol = self.pairs.get(product)
        if symbol is None:
            raise ValidationFailed("invalid_symbol", f"unsubscribed product {str(product)[:20]!r}")
        return common.trade(
            self.name,
            symbol,
            product,
            rfc3339(item["time"]),
            decimal_value(item["price"], "price"),
            decimal_value(item["size"], "size"),
            str(sequential_id(item["trade_id"])),
        )

    # --- REST ------------------------------------------------------------------------------
    async def _window(self, product: str, start: datetime, end: datetime) -> list[RawTick]:
        doc = await get_json(
            self._http,
            f"{self.config.rest_url.rstrip('/')}/api/v3/brokerage/market/products/{product}/ticker",
            {
                "limit": PAGE,
                "start": str(math.floor(start.timestamp())),
                "end": str(math.ceil(end.timestamp())),
            },
        )
        return [self._trade(item) for item in doc.get("trades") or []]

    async def _pages(
        self, product: str, start: datetime, end: datetime
    ) -> AsyncIterator[list[RawTick]]:
        """Trades in [start, end] (whole seconds), newest pages first."""
        fetched = 0
        while end >= start and fetched < self.config.repair_max_trades:
            page = await self._window(product, start, end)
            if not page:
                return
            fetched += len(page)
            yield page
            oldest = min(tick["ts"] for tick in page)
            if len(page) < PAGE:
                return
            # The next page ends in the oldest second seen (the store keeps overlaps once);
            # a second with more trades than a page is left at what one page gives.
            if math.ceil(oldest.timestamp()) < math.ceil(end.timestamp()):
                end = oldest
            else:
                end = end - timedelta(seconds=1)

    async def rest_gap(self, gap: Gap) -> list[RawTick]:
        out: dict[int, RawTick] = {}
        async for page in self._pages(gap.symbol, gap.after, gap.before):
            for tick in page:
                tid = int(tick["trade_id"])
                if gap.covers(tid, tick["ts"]):
                    out[tid] = tick
            if gap.expected is not None and len(out) >= gap.expected:
                break
        return common.plain(list(out.values()))

    async def history(
        self, venue_symbol: str, start: datetime, end: datetime
    ) -> AsyncIterator[list[RawTick]]:
        seen: set[str] = set()  # consecutive windows share their boundary second
        async for page in self._pages(venue_symbol, start, end):
            inside = [
                tick for tick in page if start <= tick["ts"] < end and tick["trade_id"] not in seen
            ]
            seen.update(tick["trade_id"] for tick in inside)
            if inside:
                yield common.plain(inside)
