"""Local stand-ins for the venues: a WebSocket server and a REST endpoint on one free port.

Each dialect writes the messages as the venue documents them (see the source modules'
docstrings) and answers the venue's REST trades endpoint from the full trade record, so a
source's gap repair can be checked against what the venue "printed". A :class:`FakeVenue`
follows a plan: connection ``i`` sends the trades ``plan[i]`` (start, stop) and then ends as
told (``drop``: the TCP connection is cut; ``silent``: it stays open and says nothing); past
the plan a connection streams what was not sent yet and then stays open (with heartbeats
where the venue sends them). Malformed frames can be slipped in before chosen trades.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response


@dataclass(frozen=True)
class VTrade:
    venue: str  # the venue's symbol, as the venue writes it in messages
    tid: int
    ms: int
    price: str
    size: str

    @property
    def iso(self) -> str:
        return datetime.fromtimestamp(self.ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"


def make_trades(venue: str, n: int, start_ms: int, first_id: int = 1000) -> list[VTrade]:
    """``n`` trades, two per millisecond (distinct trades of one millisecond)."""
    return [
        VTrade(venue, first_id + i, start_ms + i // 2, f"{27000 + (i % 7) * 0.25:.2f}", "0.015")
        for i in range(n)
    ]


# --- dialects ------------------------------------------------------------------------------
class Dialect:
    batch = 1  # trades per frame
    heartbeat: str | None = None

    async def on_open(self, ws: ServerConnection) -> None:
        """Read the subscription the venue expects; acknowledge it."""

    def frames(self, trades: list[VTrade]) -> list[str]:
        raise NotImplementedError

    def snapshot(self, printed: list[VTrade]) -> list[str]:
        return []

    def rest(self, path: str, q: dict[str, str], headers: Any, record: list[VTrade]) -> Any:
        raise NotImplementedError


class Binance(Dialect):
    def frames(self, trades: list[VTrade]) -> list[str]:
        return [
            json.dumps(
                {
                    "stream": f"{t.venue.lower()}@trade",
                    "data": {
                        "e": "trade",
                        "E": t.ms + 1,
                        "s": t.venue,
                        "t": t.tid,
                        "p": t.price,
                        "q": t.size,
                        "T": t.ms,
                        "m": True,
                        "M": True,
                    },
                }
            )
            for t in trades
        ]

    def rest(self, path: str, q: dict[str, str], headers: Any, record: list[VTrade]) -> Any:
        sym = q["symbol"]
        mine = [t for t in record if t.venue == sym]
        if path == "/api/v3/historicalTrades":
            rows = [t for t in mine if t.tid >= int(q["fromId"])][: int(q.get("limit", 500))]
            return [
                {"id": t.tid, "price": t.price, "qty": t.size, "time": t.ms, "isBuyerMaker": True}
                for t in rows
            ]
        if path == "/api/v3/aggTrades":
            rows = [t for t in mine if t.ms >= int(q["startTime"])][:1]
            return [{"a": 1, "f": t.tid, "l": t.tid, "T": t.ms, "p": t.price} for t in rows]
        raise KeyError(path)


class Coinbase(Dialect):
    batch = 3
    heartbeat = json.dumps(
        {"channel": "heartbeats", "events": [{"current_time": "now", "heartbeat_counter": 1}]}
    )

    async def on_open(self, ws: ServerConnection) -> None:
        for _ in range(2):  # heartbeats and market_trades
            msg = json.loads(await ws.recv())
            assert msg["type"] == "subscribe" and msg["channel"] in ("heartbeats", "market_trades")
        await ws.send(json.dumps({"channel": "subscriptions", "events": []}))

    def _item(self, t: VTrade) -> dict[str, Any]:
        return {
            "trade_id": str(t.tid),
            "product_id": t.venue,
            "price": t.price,
            "size": t.size,
            "side": "BUY",
            "time": t.iso,
        }

    def frames(self, trades: list[VTrade]) -> list[str]:
        out = []
        for i in range(0, len(trades), self.batch):
            chunk = list(reversed(trades[i : i + self.batch]))  # newest first
            out.append(
                json.dumps(
                    {
                        "channel": "market_trades",
                        "timestamp": "now",
                        "sequence_num": i,
                        "events": [{"type": "update", "trades": [self._item(t) for t in chunk]}],
                    }
                )
            )
        return out

    def rest(self, path: str, q: dict[str, str], headers: Any, record: list[VTrade]) -> Any:
        product = path.split("/")[-2]
        start, end = int(q["start"]) * 1000, int(q["end"]) * 1000
        rows = [t for t in record if t.venue == product and start <= t.ms <= end]
        rows = list(reversed(rows))[: int(q.get("limit", 100))]
        return {"trades": [self._item(t) for t in rows], "best_bid": "", "best_ask": ""}


class Kraken(Dialect):
    batch = 3
    heartbeat = json.dumps({"channel": "heartbeat"})

    async def on_open(self, ws: ServerConnection) -> None:
        msg = json.loads(await ws.recv())
        assert msg["method"] == "subscribe" and msg["params"]["channel"] == "trade"
        for symbol in msg["params"]["symbol"]:
            result = {"channel": "trade", "symbol": symbol, "snapshot": True}
            await ws.send(json.dumps({"method": "subscribe", "result": result, "success": True}))

    def _item(self, t: VTrade) -> dict[str, Any]:
        return {
            "symbol": t.venue,
            "side": "buy",
            "price": float(t.price),
            "qty": float(t.size),
            "ord_type": "limit",
            "trade_id": t.tid,
            "timestamp": t.iso,
        }

    def _frame(self, trades: list[VTrade], kind: str) -> str:
        data = [self._item(t) for t in trades]
        return json.dumps({"channel": "trade", "type": kind, "data": data})

    def frames(self, trades: list[VTrade]) -> list[str]:
        return [
            self._frame(trades[i : i + self.batch], "update")
            for i in range(0, len(trades), self.batch)
        ]

    def snapshot(self, printed: list[VTrade]) -> list[str]:
        return [self._frame(printed[-50:], "snapshot")] if printed else []

    def rest(self, path: str, q: dict[str, str], headers: Any, record: list[VTrade]) -> Any:
        pair = q["pair"]
        since = float(q["since"])
        since_s = since / 1e9 if since > 1e12 else since
        rows = [t for t in record if t.venue == pair and t.ms / 1000 > since_s]
        rows = rows[: int(q.get("count", 1000))]
        last = str(rows[-1].ms * 1_000_000) if rows else q["since"]
        items = [[t.price, t.size, t.ms / 1000, "b", "l", "", t.tid] for t in rows]
        return {"error": [], "result": {"XXBTZUSD": items, "last": last}}


class Finnhub(Dialect):
    batch = 3
    heartbeat = json.dumps({"type": "ping"})
    key = "test-key"

    async def on_open(self, ws: ServerConnection) -> None:
        msg = json.loads(await ws.recv())
        assert msg["type"] == "subscribe"

    def frames(self, trades: list[VTrade]) -> list[str]:
        return [
            json.dumps(
                {
                    "type": "trade",
                    "data": [
                        {"s": t.venue, "p": float(t.price), "t": t.ms, "v": float(t.size), "c": []}
                        for t in trades[i : i + self.batch]
                    ],
                }
            )
            for i in range(0, len(trades), self.batch)
        ]

    def rest(self, path: str, q: dict[str, str], headers: Any, record: list[VTrade]) -> Any:
        if headers.get("X-Finnhub-Token") != self.key:
            raise PermissionError("bad token")
        day = q["date"]
        rows = [
            t
            for t in record
            if t.venue == q["symbol"]
            and datetime.fromtimestamp(t.ms / 1000, UTC).date().isoformat() == day
        ]
        skip, limit = int(q.get("skip", 0)), int(q.get("limit", 100))
        page = rows[skip : skip + limit]
        return {
            "s": q["symbol"],
            "skip": skip,
            "count": len(page),
            "total": len(rows),
            "t": [t.ms for t in page],
            "p": [float(t.price) for t in page],
            "v": [float(t.size) for t in page],
            "c": [[] for _ in page],
        }


DIALECTS: dict[str, Callable[[], Dialect]] = {
    "binance": Binance,
    "coinbase": Coinbase,
    "kraken": Kraken,
    "finnhub": Finnhub,
}


# --- the server ----------------------------------------------------------------------------
@dataclass
class FakeVenue:
    dialect: Dialect
    record: list[VTrade]  # every trade the venue printed (REST serves all of them)
    plan: list[tuple[int, int, str]] = field(default_factory=list)  # (start, stop, end)
    junk: dict[int, list[str]] = field(default_factory=dict)  # before trade i: raw frames
    pace_s: float = 0.0  # pause between frames
    require_token: str | None = None
    connections: int = 0
    rest_calls: int = 0
    sent: list[VTrade] = field(default_factory=list)
    _cursor: int = 0
    _server: Server | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeVenue:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            process_request=self._http,
            compression=None,
            close_timeout=1,
        )
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def _http(self, conn: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if request.headers.get("Upgrade", "").lower() == "websocket":
            token = parse_qs(parts.query).get("token", [None])[0]
            if self.require_token is not None and token != self.require_token:
                return conn.respond(HTTPStatus.UNAUTHORIZED, "invalid token\n")
            return None
        self.rest_calls += 1
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            body = self.dialect.rest(parts.path, query, request.headers, self.record)
        except PermissionError:
            return conn.respond(HTTPStatus.UNAUTHORIZED, '{"error": "bad token"}')
        except KeyError:
            return conn.respond(HTTPStatus.NOT_FOUND, '{"error": "not found"}')
        return conn.respond(HTTPStatus.OK, json.dumps(body))

    async def _send(self, ws: ServerConnection, start: int, stop: int) -> None:
        d = self.dialect
        i = start
        while i < stop:
            j = min(stop, i + d.batch)
            for k in range(i, j):
                for junk in self.junk.pop(k, []):
                    await ws.send(junk)
            for frame in d.frames(self.record[i:j]):
                await ws.send(frame)
            self.sent.extend(self.record[i:j])
            self._cursor = max(self._cursor, j)
            i = j
            if self.pace_s:
                await asyncio.sleep(self.pace_s)

    async def _handler(self, ws: ServerConnection) -> None:
        index = self.connections
        self.connections += 1
        d = self.dialect
        try:
            await d.on_open(ws)
            start = self.plan[index][0] if index < len(self.plan) else self._cursor
            for frame in d.snapshot(self.record[:start]):  # what the venue printed so far
                await ws.send(frame)
            if index < len(self.plan):
                start, stop, end = self.plan[index]
                await self._send(ws, start, stop)
                if end == "drop":
                    ws.transport.abort()
                    return
                if end == "silent":
                    await ws.wait_closed()
                    return
            else:
                await self._send(ws, self._cursor, len(self.record))
            if d.heartbeat is None:  # stay open; Binance sends nothing but its pings
                await ws.wait_closed()
                return
            while True:  # stay open, alive
                await ws.send(d.heartbeat)
                await asyncio.sleep(0.2)
        except Exception:  # noqa: BLE001 - the client went away: this connection is over
            return
