"""Pure unit tests of the stream's pieces: channel names, the bounded per-client queue, resume
windows, credentials in query strings."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.api.core.security import Principal
from services.api.stream.auth import token_in_query
from services.api.stream.hub import Hub
from services.api.stream.protocol import BadChannel, Channel, parse_channel
from services.api.stream.subscriber import Message, Subscriber
from services.common.config import Settings


class _NoDenyList:
    def is_denied(self, jti: str) -> bool:
        return False


def principal(ttl_s: float = 600) -> Principal:
    scopes = frozenset({"prices:read", "predictions:read"})
    return Principal("unit", scopes, "j", time.time() + ttl_s)


def msg(seq: int, channel: str | None = "ticks:A") -> Message:
    return Message(seq, "tick", channel, f'{{"seq":{seq}}}', None)


def test_parse_channel() -> None:
    assert parse_channel("predictions:btc-usd:1h") == Channel("predictions", "BTC-USD", "1h")
    assert parse_channel("bars:ETH-USD:1m").name == "bars:ETH-USD:1m"
    assert parse_channel("ticks:eth-usd").scope == "prices:read"
    for bad in ("ticks", "ticks:A:1h", "bars:A:5m", "predictions:A:1m", "x:A", "ticks:a b", ""):
        with pytest.raises(BadChannel):
            parse_channel(bad)


async def test_queue_coalesces_ticks_and_bounds_the_fifo() -> None:
    sub = Subscriber(principal(), capacity=3, slow_after_s=10, transport="ws")
    assert sub.offer(msg(1), coalesce=True)
    assert not sub.offer(msg(2), coalesce=True)  # replaces the unsent one
    assert sub.queued() == 1 and sub.dropped == 1
    for seq in (3, 4, 5):
        assert sub.offer(msg(seq, "predictions:A:1h"))
    assert not sub.offer(msg(6, "predictions:A:1h"))  # full: dropped, never waits
    assert sub.full_since is not None
    assert [sub.pop().seq for _ in range(4)] == [3, 4, 5, 2]  # type: ignore[union-attr]
    assert sub.full_since is None and sub.pop() is None


async def test_full_queue_that_stays_full_is_kicked_4408() -> None:
    sub = Subscriber(principal(), capacity=1, slow_after_s=0.5, transport="ws")
    sub.offer(msg(1, None))
    now = time.monotonic()
    sub.offer(msg(2, None), now=now)
    assert sub.close_code is None
    sub.offer(msg(3, None), now=now + 0.6)
    assert sub.close_code == 4408 and sub.closed.done()
    assert await sub.next() is None


async def test_next_waits_for_an_offer() -> None:
    sub = Subscriber(principal(), capacity=4, slow_after_s=1, transport="sse")
    waiting = asyncio.ensure_future(sub.next())
    await asyncio.sleep(0)
    assert not waiting.done()
    sub.offer(msg(7))
    assert (await waiting).seq == 7  # type: ignore[union-attr]


async def test_replay_only_when_the_window_reaches_back() -> None:
    hub = Hub(Settings(stream_resume_window=3), _NoDenyList())  # type: ignore[arg-type]
    sub = Subscriber(principal(), capacity=10, slow_after_s=1, transport="sse")
    hub.register(sub)
    hub.subscribe(sub, [parse_channel("ticks:A"), parse_channel("predictions:B:1h")])
    assert hub.price_keys == {b"A"}  # the feed decodes only ticks someone here wants
    start = hub.seq
    seqs = [hub.publish("tick", "ticks:A", "{}", None, False) and hub.seq for _ in range(3)]
    assert [m.seq for m in hub.replay(["ticks:A"], seqs[0]) or []] == seqs[1:]
    assert hub.replay(["ticks:A"], start) is not None  # nothing evicted yet
    hub.publish("tick", "ticks:A", "{}", None, False)  # evicts seqs[0]
    assert hub.replay(["ticks:A"], start) is None
    assert hub.replay(["ticks:A"], 12) is None  # not an id of this process
    assert hub.replay(["ticks:B"], seqs[0]) is None  # no window
    hub.unregister(sub)
    assert hub.stream_stats()["connections"] == 0


def test_token_in_query() -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"
    assert token_in_query(b"token=abc")
    assert token_in_query(f"channels=ticks:A&x={jwt}")
    assert token_in_query(b"ACCESS_TOKEN=")
    assert not token_in_query(b"channels=ticks:A,bars:A:1m")
    assert not token_in_query(b"")
