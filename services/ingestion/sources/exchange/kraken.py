"""Kraken Spot WebSocket v2: the public ``trade`` channel.

* WebSocket (``PRICECAST_KRAKEN_WS_URL``, default ``wss://ws.kraken.com/v2``): JSON objects;
  subscribe with ``{"method": "subscribe", "params": {"channel": "trade", "symbol":
  ["BTC/USD"], "snapshot": true}}`` (acknowledged by ``{"method": "subscribe", "success":
  true, ...}``). Symbols are written ``BTC/USD``.
* A message: ``{"channel": "trade", "type": "snapshot"|"update", "data": [{"symbol":
  "BTC/USD", "side": "buy", "price": 27000.1, "qty": 0.5, "ord_type": "limit", "trade_id":
  4665846, "timestamp": "2023-09-25T07:49:37.708706Z"}]}``: prices and quantities are JSON
  numbers, times RFC 3339, ``trade_id`` a sequence number per book. The snapshot (the last
  50 trades) overlaps what a reconnecting client saw already: those are dropped.
  ``{"channel": "heartbeat"}`` comes about every second once subscribed.
* REST (``PRICECAST_KRAKEN_REST_URL``, default ``https://api.kraken.com``): ``GET
  /0/public/Trades?pair=BTC/USD&since=<unix s>&count=1000`` answers ``{"error": [],
  "result": {"<pair>": [[price, volume, time, side, type, misc, trade_id], ...], "last":
  "<ns>"}}``; gaps and backfill page forward with ``since=last``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
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
MAX_PAGES = 1000
CONTROL_CHANNELS = frozenset(("heartbeat", "status"))


class KrakenSource(ExchangeSource):
    kind = "kraken"

    def ws_url(self) -> str:
        return self.config.ws_url

    def subscribe_messages(self) -> list[str]:
        params = {"channel": "trade", "symbol": list(self.pairs), "snapshot": True}
        return [orjson.dumps({"method": "subscribe", "params": params, "req_id": 1}).decode()]

    def parse(self, frame: str | bytes) -> common.Parsed:
        try:
            doc = common.load_frame(frame)
            channel = doc.get("channel")
            if channel == "trade":
                return common.parse_each(doc["data"], self._ws_trade)
            if channel in CONTROL_CHANNELS:
                return common.Parsed()
            if "method" in doc:  # subscribe / pong acknowledgements
                if doc.get("success") is False:
                    return common.Parsed(error=str(doc.get("error", doc))[:300])
                return common.Parsed()
            raise ValidationFailed("unknown_shape", f"unknown channel {str(channel)[:30]!r}")
        except common.FRAME_ERRORS as exc:
            return common.Parsed(rejects=[common.rejected(exc, frame)])

    def _symbol(self, venue: Any) -> str:
        symbol = self.pairs.get(venue)
        if symbol is None:
            raise ValidationFailed("invalid_symbol", f"unsubscribed pair {str(venue)[:20]!r}")
        return symbol

    def _ws_trade(self, item: dict[str, Any]) -> RawTick:
        venue = item["symbol"]
        return common.trade(
            self.name,
            self._symbol(venue),
            venue,
            rfc3339(item["timestamp"], "timestamp"),
            decimal_value(item["price"], "price"),
            decimal_value(item["qty"], "qty"),
            str(sequential_id(item["trade_id"])),
        )

    # --- REST ------------------------------------------------------------------------------
    def _rest_trade(self, venue: str, row: list[Any]) -> RawTick:
        seconds = Decimal(str(row[2]))
        ts = datetime.fromtimestamp(float(seconds), UTC)
        return common.trade(
            self.name,
            self._symbol(venue),
            venue,
            ts,
            decimal_value(row[0], "price"),
            decimal_value(row[1], "volume"),
            str(sequential_id(row[6])),
        )

    async def _pages(self, venue: str, since: str) -> AsyncIterator[list[RawTick]]:
        for _ in range(MAX_PAGES):
            doc = await get_json(
                self._http,
                f"{self.config.rest_url.rstrip('/')}/0/public/Trades",
                {"pair": venue, "since": since, "count": PAGE},
            )
            if doc.get("error"):
                raise ValueError(f"kraken REST: {doc['error']}")
            result = doc["result"]
            rows: list[Any] = next((value for key, value in result.items() if key != "last"), [])
            if not rows:
                return
            yield [self._rest_trade(venue, row) for row in rows]
            last = str(result.get("last", ""))
            if not last or last == since or len(rows) < PAGE:
                return
            since = last

    async def rest_gap(self, gap: Gap) -> list[RawTick]:
        out: dict[int, RawTick] = {}
        since = f"{gap.after.timestamp() - 0.001:.6f}"  # trades of the same millisecond too
        async for page in self._pages(gap.symbol, since):
            for tick in page:
                tid = int(tick["trade_id"])
                if gap.covers(tid, tick["ts"]):
                    out[tid] = tick
            newest = int(page[-1]["trade_id"])
            if gap.last_id is not None and newest >= gap.last_id:
                break
            if len(out) >= self.config.repair_max_trades:
                break
        return common.plain(list(out.values()))

    async def history(
        self, venue_symbol: str, start: datetime, end: datetime
    ) -> AsyncIterator[list[RawTick]]:
        since = f"{start.timestamp() - 0.001:.6f}"  # ``since`` is exclusive
        async for page in self._pages(venue_symbol, since):
            inside = [tick for tick in page if start <= tick["ts"] < end]
            if inside:
                yield common.plain(inside)
            if page[-1]["ts"] >= end:
                return
