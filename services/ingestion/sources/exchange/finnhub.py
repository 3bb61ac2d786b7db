"""Finnhub: the trades WebSocket (US stocks, forex, crypto), key required.

* WebSocket (``PRICECAST_FINNHUB_WS_URL``, default ``wss://ws.finnhub.io``): the key goes in
  the ``token`` query parameter (the only way Finnhub documents for its socket; the source
  never logs or shows it: see :func:`~.stream.redact`); subscribe per symbol with
  ``{"type": "subscribe", "symbol": "AAPL"}``. The key comes from
  ``PRICECAST_FINNHUB_API_KEY_FILE``.
* Messages: ``{"type": "trade", "data": [{"s": "AAPL", "p": 189.5, "t": epoch ms, "v": 100,
  "c": [conditions]}, ...]}`` batches (prices and volumes are JSON numbers), ``{"type":
  "ping"}`` keep-alives, ``{"type": "error", "msg": ...}``.
* Finnhub gives trades no id. The source names each one ``<t>-<k>``: its millisecond and its
  position among that symbol's trades of that millisecond, counted the same way on the stream
  and on REST, so a trade seen both ways has one id and is stored once. With no sequence, a
  gap is the span of a reconnect: from the last trade before it to the first after it.
* REST (``PRICECAST_FINNHUB_REST_URL``, default ``https://finnhub.io``): ``GET
  /api/v1/stock/tick?symbol=AAPL&date=YYYY-MM-DD&limit=N&skip=N`` (key in the
  ``X-Finnhub-Token`` header) answers ``{"s", "skip", "count", "total", "t": [...], "p":
  [...], "v": [...], "c": [...]}`` for one day (tick data needs a plan that includes it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson

from services.ingestion.sources.base import RawTick
from services.ingestion.sources.exchange import common
from services.ingestion.sources.exchange.gaps import Gap
from services.ingestion.sources.exchange.numbers import decimal_value, epoch_ms
from services.ingestion.sources.exchange.rest import get_json
from services.ingestion.sources.exchange.stream import ExchangeSource
from services.ingestion.validation import ValidationFailed

PAGE = 25_000


class MillisecondCounter:
    """``<t>-<k>`` ids: ``k`` (``index``) counts a symbol's trades in one millisecond, in order."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def next_id(self, symbol: str, ms: int) -> str:
        last = self._last.get(symbol)
        index = last[1] + 1 if last is not None and last[0] == ms else 0
        self._last[symbol] = (ms, index)
        return f"{ms}-{index}"


class FinnhubSource(ExchangeSource):
    kind = "finnhub"
    sequential_ids = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not self.config.api_key:
            raise ValueError("source finnhub needs PRICECAST_FINNHUB_API_KEY_FILE (the API key)")
        self._ids = MillisecondCounter()

    def ws_url(self) -> str:
        sep = "&" if "?" in self.config.ws_url else "?"
        return f"{self.config.ws_url}{sep}{urlencode({'token': self.config.api_key})}"

    def subscribe_messages(self) -> list[str]:
        return [
            orjson.dumps({"type": "subscribe", "symbol": venue}).decode() for venue in self.pairs
        ]

    def parse(self, frame: str | bytes) -> common.Parsed:
        try:
            doc = common.load_frame(frame)
            kind = doc.get("type")
            if kind == "trade":
                return common.parse_each(doc["data"], lambda item: self._trade(item, self._ids))
            if kind == "ping":
                return common.Parsed()
            if kind == "error":
                return common.Parsed(error=str(doc.get("msg", doc))[:300])
            raise ValidationFailed("unknown_shape", f"unknown type {str(kind)[:30]!r}")
        except common.FRAME_ERRORS as exc:
            return common.Parsed(rejects=[common.rejected(exc, frame)])

    def _trade(self, item: dict[str, Any], ids: MillisecondCounter) -> RawTick:
        venue = item["s"]
        symbol = self.pairs.get(venue)
        if symbol is None:
            raise ValidationFailed("invalid_symbol", f"unsubscribed symbol {str(venue)[:20]!r}")
        ts = epoch_ms(item["t"], "t")
        price = decimal_value(item["p"], "p")
        volume = decimal_value(item["v"], "v")
        return common.trade(
            self.name, symbol, venue, ts, price, volume, ids.next_id(venue, item["t"])
        )

    # --- REST ------------------------------------------------------------------------------
    async def _day(self, venue: str, day: date) -> AsyncIterator[list[RawTick]]:
        """One day's ticks, in pages, with ids counted from the day's first tick."""
        ids = MillisecondCounter()
        skip = 0
        while True:
            doc = await get_json(
                self._http,
                f"{self.config.rest_url.rstrip('/')}/api/v1/stock/tick",
                {"symbol": venue, "date": day.isoformat(), "limit": PAGE, "skip": skip},
                {"X-Finnhub-Token": self.config.api_key or ""},
            )
            times, prices, volumes = doc.get("t") or [], doc.get("p") or [], doc.get("v") or []
            if not times:
                return
            yield [
                self._trade({"s": venue, "t": ms, "p": price, "v": volume}, ids)
                for ms, price, volume in zip(times, prices, volumes, strict=True)
            ]
            skip += len(times)
            if skip >= int(doc.get("total", 0)) or len(times) < PAGE:
                return

    async def _between(
        self, venue: str, start: datetime, end: datetime, inclusive: bool
    ) -> AsyncIterator[list[RawTick]]:
        day = start.astimezone(UTC).date()
        while datetime.combine(day, time(), UTC) <= end:
            async for page in self._day(venue, day):
                inside = [
                    tick
                    for tick in page
                    if start <= tick["ts"]
                    and (tick["ts"] <= end if inclusive else tick["ts"] < end)
                ]
                if inside:
                    yield inside
                if page[-1]["ts"] > end:
                    return
            day += timedelta(days=1)

    async def rest_gap(self, gap: Gap) -> list[RawTick]:
        out: list[RawTick] = []
        async for page in self._between(gap.symbol, gap.after, gap.before, inclusive=True):
            out.extend(page)
            if len(out) >= self.config.repair_max_trades:
                break
        return common.plain(out)

    async def history(
        self, venue_symbol: str, start: datetime, end: datetime
    ) -> AsyncIterator[list[RawTick]]:
        async for page in self._between(venue_symbol, start, end, inclusive=False):
            yield common.plain(page)
