"""The HTTP source against a local server answering 429 + Retry-After, 500s and slowly:
it backs off, the breaker opens and later closes, and no tick is published twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import orjson
import pytest
from ingest_helpers import decode_value, read_topic, wait_for

from services.common.config import Settings
from services.common.metrics import UPSTREAM_ERRORS
from services.ingestion.producer import TickPublisher
from services.ingestion.source_loop import run_source
from services.ingestion.sources.coingecko import CoinGeckoSource
from services.ingestion.sources.http import HttpPolicy


@dataclass
class Step:
    status: int = 200
    body: object = None
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


class ScriptedServer:
    """A tiny HTTP/1.1 server answering each request with the next scripted step."""

    def __init__(self, steps: list[Step], after: Step) -> None:
        self.steps = steps
        self.after = after
        self.times: list[float] = []
        self.answered: list[int] = []
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/api/v3/simple/price"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass
            self.times.append(time.monotonic())
            step = self.steps.pop(0) if self.steps else self.after
            if step.delay_s:
                await asyncio.sleep(step.delay_s)
            body = orjson.dumps(step.body) if step.body is not None else b"{}"
            head = [
                f"HTTP/1.1 {step.status} X",
                f"Content-Length: {len(body)}",
                "Content-Type: application/json",
                "Connection: close",
            ]
            head += [f"{k}: {v}" for k, v in step.headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            await writer.drain()
            self.answered.append(step.status)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> ScriptedServer:
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()


def quote(price: float, ts: int) -> Step:
    return Step(200, {"bitcoin": {"usd": price, "last_updated_at": ts}})


@pytest.fixture
async def fast_policy() -> AsyncIterator[HttpPolicy]:
    yield HttpPolicy(
        interval_s=0.05,
        timeout_s=0.3,
        requests_per_minute=6000,
        max_attempts=3,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        breaker_failures=3,
        breaker_recovery_s=1.0,
    )


def errors(code: str) -> float:
    return UPSTREAM_ERRORS.labels("coingecko", code)._value.get()


async def test_backoff_breaker_and_no_double_publish(
    ing_settings: Settings, publisher: TickPublisher, fast_policy: HttpPolicy
) -> None:
    t0 = 1_735_689_600  # 2025-01-01
    steps = [
        Step(429, headers={"Retry-After": "1"}),  # quota: wait at least 1 s
        quote(100.0, t0),
        quote(100.0, t0),  # unchanged upstream: nothing new to publish
        Step(500),
        Step(500),
        Step(503),  # third consecutive failure: the breaker opens
        quote(101.0, t0 + 60),  # half-open trial after the recovery timeout: closes it
        Step(200, {"bitcoin": {"usd": 102.0, "last_updated_at": t0 + 60}}, delay_s=1.0),  # slow
        quote(102.0, t0 + 120),
    ]
    quota_before, timeout_before = errors("ERR_EXT_003"), errors("ERR_EXT_001")
    async with ScriptedServer(steps, after=quote(102.0, t0 + 120)) as server:
        source = CoinGeckoSource({"bitcoin": "BTC-USD"}, fast_policy, url=server.url)
        stop = asyncio.Event()
        task = asyncio.create_task(run_source(source, publisher, stop))
        try:
            await wait_for(lambda: not server.steps and len(server.answered) >= 12, 20, "script")
            await wait_for(lambda: source.breaker.times_closed >= 1, 10, "breaker closed")
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            await source.close()
    # 429 honoured: the next request came no sooner than Retry-After.
    assert server.times[1] - server.times[0] >= 0.95
    assert source.breaker.times_opened >= 1 and source.breaker.times_closed >= 1
    assert source.breaker.state == "closed"
    # While open, no request reached the server: recovery timeout between 503 and the trial.
    assert server.times[6] - server.times[5] >= fast_policy.breaker_recovery_s * 0.95
    assert errors("ERR_EXT_003") == quota_before + 1
    assert errors("ERR_EXT_001") >= timeout_before + 1
    # Every distinct upstream value once on `prices`, however often it was served.
    # (Read for a while rather than to the end offsets: Tansu's ListOffsets undercounts.)
    on_topic = await read_topic(ing_settings, ing_settings.topic_prices, 1000, timeout_s=3)
    records = [decode_value(r) for r in on_topic]
    assert sorted((r["ts"], r["price"]) for r in records) == [
        ("2025-01-01T00:00:00Z", 100.0),
        ("2025-01-01T00:01:00Z", 101.0),
        ("2025-01-01T00:02:00Z", 102.0),
    ]
    assert all(r["source"] == "coingecko" and r["volume"] == 0.0 for r in records)
