"""Binance Spot: the public ``<symbol>@trade`` streams.

* WebSocket (``PRICECAST_BINANCE_WS_URL``, default ``wss://stream.binance.com:9443``): a
  combined stream ``/stream?streams=btcusdt@trade/ethusdt@trade`` whose events come wrapped as
  ``{"stream": "btcusdt@trade", "data": {...}}``; or, for a URL ending in ``/ws``, the raw
  endpoint with a ``{"method": "SUBSCRIBE", "params": [...], "id": 1}`` message (its answer
  ``{"result": null, "id": 1}`` is an acknowledgement). Stream names are lowercase.
* A trade event: ``{"e": "trade", "E": event ms, "s": "BTCUSDT", "t": trade id, "p": "price",
  "q": "quantity", "T": trade ms, "m": buyer is maker, "M": ignore}``. ``t`` is sequential per
  symbol: a jump is a gap.
* A connection lasts at most 24 hours (a ``serverShutdown`` event announces an earlier end:
  the source renews the connection at once); the server pings every 20 s and drops a client that
  does not pong within a minute (the websockets library answers pings by itself). The source
  renews the connection after ``PRICECAST_BINANCE_MAX_CONNECTION_AGE_S`` (default 23.5 h).
* REST (``PRICECAST_BINANCE_REST_URL``, default ``https://api.binance.com``):
  ``GET /api/v3/historicalTrades?symbol=BTCUSDT&fromId=N&limit=1000`` (``[{"id", "price",
  "qty", "time", ...}]``) repairs gaps by id; backfill finds its first id with ``GET
  /api/v3/aggTrades?symbol=..&startTime=ms&limit=1`` (``"f"``: the first trade id of the
  aggregate) and pages ``historicalTrades`` from there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from services.ingestion.sources.base import RawTick
from services.ingestion.sources.exchange import common
from services.ingestion.sources.exchange.gaps import Gap
from services.ingestion.sources.exchange.numbers import (
    PARSED,
    decimal_value,
    epoch_ms,
    sequential_id,
)
from services.ingestion.sources.exchange.rest import get_json
from services.ingestion.sources.exchange.stream import ExchangeSource
from services.ingestion.validation import ValidationFailed

PAGE = 1000


class BinanceSource(ExchangeSource):
    kind = "binance"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # "BTCUSDT" (events) and "btcusdt" (streams, settings) -> (venue symbol, symbol)
        self._names = {
            venue.upper(): (venue.lower(), symbol) for venue, symbol in self.pairs.items()
        }
        self._names.update(
            {venue.lower(): (venue.lower(), symbol) for venue, symbol in self.pairs.items()}
        )
        self.pairs = {venue.lower(): symbol for venue, symbol in self.pairs.items()}
        self._last_ms: object = None
        self._last_ts = datetime.now(UTC)

    def _raw_endpoint(self) -> bool:
        return urlsplit(self.config.ws_url).path.rstrip("/").endswith("/ws")

    def _streams(self) -> list[str]:
        return [f"{venue.lower()}@trade" for venue in self.pairs]

    def ws_url(self) -> str:
        base = self.config.ws_url.rstrip("/")
        if self._raw_endpoint() or "?" in base:
            return base
        if not base.endswith("/stream"):
            base += "/stream"
        return f"{base}?streams={'/'.join(self._streams())}"

    def subscribe_messages(self) -> list[str]:
        if not self._raw_endpoint():
            return []
        message = {"method": "SUBSCRIBE", "params": self._streams(), "id": 1}
        return [orjson.dumps(message).decode()]

    def parse(self, frame: str | bytes) -> common.Parsed:
        try:
            try:
                doc = orjson.loads(frame)
            except orjson.JSONDecodeError:
                doc = common.load_frame(frame)  # raises, with the reason
            data = doc.get("data")
            if data is None:  # the raw endpoint (/ws): events come unwrapped
                data = doc
            event = data.get("e")
            if event == "trade":
                return common.Parsed(
                    [self._trade(data, data["t"], data["p"], data["q"], data["T"])]
                )
            if "result" in doc and "id" in doc:
                return common.Parsed()  # SUBSCRIBE acknowledged
            if "code" in doc and "msg" in doc:
                return common.Parsed(error=f"{doc['code']}: {doc['msg']}")
            if event == "serverShutdown":  # the server goes away soon: move on now
                self.renew_now = True
                return common.Parsed()
            if event is not None:
                return common.Parsed()  # another event type: not a trade
            raise ValidationFailed("unknown_shape", "neither a trade nor an acknowledgement")
        except common.FRAME_ERRORS as exc:
            return common.Parsed(rejects=[common.rejected(exc, frame)])

    def _frames(self, frames: list[str | bytes]) -> None:
        """The messages of one socket read. The common one (a trade of a subscribed symbol,
        next in its id sequence, well-formed) becomes its raw tick right here, with exactly
        :meth:`parse`'s checks; any other (the first trade of a symbol, a gap, a duplicate, a
        malformed frame, a control event) takes the general path (:meth:`_frame`), in order."""
        loads, names, last, memo = orjson.loads, self._names, self.tracker.last, PARSED
        last_ms, last_ts = self._last_ms, self._last_ts
        out: list[RawTick] = []
        fast = 0
        for frame in frames:
            try:  # a KeyError, TypeError, ...: not the common frame (the general path says why)
                doc = loads(frame)
                data = doc.get("data", doc)  # the raw endpoint (/ws): events come unwrapped
                if data["e"] == "trade":
                    venue, symbol = names[data["s"]]
                    tid = data["t"]
                    if type(tid) is int and tid == last[venue][0] + 1:
                        ms = data["T"]
                        if ms != last_ms:
                            last_ts, last_ms = epoch_ms(ms, "T"), ms
                        pt, qt = data["p"], data["q"]
                        price = memo.get(pt)
                        if price is None:
                            price = decimal_value(pt, "p")
                        qty = memo.get(qt)
                        if qty is None:
                            qty = decimal_value(qt, "q")
                        last[venue] = (tid, last_ts)
                        out.append(
                            {
                                "symbol": symbol,
                                "ts": last_ts,
                                "price": price,
                                "volume": qty,
                                "source": "binance",
                                "trade_id": str(tid),
                            }
                        )
                        fast += 1
                        continue
            except common.FRAME_ERRORS:  # invalid JSON included
                pass
            # the general path, after what came before it
            if out:
                self.stats.trades += len(out)
                self.buffer.add(out)
                out = []
            self._last_ms, self._last_ts = last_ms, last_ts
            self._frame(frame)
            last_ms, last_ts = self._last_ms, self._last_ts
        self._last_ms, self._last_ts = last_ms, last_ts
        self.stats.messages += fast
        if out:
            self.stats.trades += len(out)
            self.buffer.add(out)

    def _trade(self, data: dict[str, Any], tid: Any, price: Any, qty: Any, ms: Any) -> RawTick:
        found = self._names.get(data["s"])
        if found is None:
            raise ValidationFailed("invalid_symbol", f"unsubscribed symbol {data['s']!r:.20}")
        venue, symbol = found
        if ms != self._last_ms:  # busy streams print many trades per millisecond
            self._last_ts, self._last_ms = epoch_ms(ms, "T"), ms
        known_price, known_qty = PARSED.get(price), PARSED.get(qty)  # decimal_value()'s memo
        return {  # common.trade(), inlined: one of these per frame
            "symbol": symbol,
            "ts": self._last_ts,
            "price": known_price if known_price is not None else decimal_value(price, "p"),
            "volume": known_qty if known_qty is not None else decimal_value(qty, "q"),
            "source": "binance",
            "trade_id": str(tid) if type(tid) is int and tid >= 0 else str(sequential_id(tid)),
            "_venue": venue,
        }

    # --- REST ------------------------------------------------------------------------------
    async def _page(self, venue: str, from_id: int, limit: int) -> list[RawTick]:
        rows = await get_json(
            self._http,
            f"{self.config.rest_url.rstrip('/')}/api/v3/historicalTrades",
            {"symbol": venue.upper(), "fromId": from_id, "limit": limit},
        )
        row = {"s": venue.lower()}
        return [
            self._trade(row, item["id"], item["price"], item["qty"], item["time"]) for item in rows
        ]

    async def rest_gap(self, gap: Gap) -> list[RawTick]:
        assert gap.first_id is not None and gap.last_id is not None
        out: list[RawTick] = []
        next_id = gap.first_id
        while next_id <= gap.last_id and len(out) < self.config.repair_max_trades:
            page = await self._page(gap.symbol, next_id, min(PAGE, gap.last_id - next_id + 1))
            if not page:
                break
            out.extend(tick for tick in page if int(tick["trade_id"]) <= gap.last_id)
            next_id = int(page[-1]["trade_id"]) + 1
        return common.plain(out)

    async def history(
        self, venue_symbol: str, start: datetime, end: datetime
    ) -> AsyncIterator[list[RawTick]]:
        first = await get_json(
            self._http,
            f"{self.config.rest_url.rstrip('/')}/api/v3/aggTrades",
            {
                "symbol": venue_symbol.upper(),
                "startTime": int(start.timestamp() * 1000),
                "limit": 1,
            },
        )
        if not first:
            return
        next_id = int(first[0]["f"])
        while True:
            page = await self._page(venue_symbol, next_id, PAGE)
            inside = [tick for tick in page if tick["ts"] < end]
            if inside:
                yield common.plain(inside)
            if len(inside) < len(page) or len(page) < PAGE:
                return
            next_id = int(page[-1]["trade_id"]) + 1
