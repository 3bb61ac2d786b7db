"""Helpers for the live-stream tests: a real uvicorn server in the test's loop, real clients."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.api.main import create_app
from services.api.stream.service import StreamService
from services.common import infra
from services.common.config import Settings
from services.common.kafka import make_producer
from services.common.schemas import PredictionRecord


async def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` (bounded) until it is true; never a timed assertion on speed."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.05)


@dataclass
class RunningApi:
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/stream"

    @property
    def stream(self) -> StreamService:
        service: StreamService = self.app.state.stream
        return service

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 30)


async def start_api(settings: Settings) -> RunningApi:
    """The API app served by uvicorn on a free port (lifespan on), its feed ready."""
    app = create_app(settings)
    port = infra.free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, lifespan="on", log_level="warning", ws_ping_interval=None
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    running = RunningApi(app, server, task, port)
    await wait_for(lambda: server.started or task.done(), 30, "uvicorn start")
    assert not task.done(), "uvicorn did not start"
    await wait_for(lambda: running.stream.feed.ready, 30, "stream feed assigned")
    return running


def record(
    symbol: str,
    interval: str = "1h",
    horizon: int = 1,
    as_of: datetime | None = None,
    price: float = 100.0,
) -> PredictionRecord:
    as_of = as_of or datetime(2026, 3, 1, 12, tzinfo=UTC)
    step = timedelta(hours=1) if interval == "1h" else timedelta(days=1)
    return PredictionRecord(
        symbol=symbol,
        interval=interval,  # type: ignore[arg-type]
        horizon=horizon,
        as_of=as_of,
        target_time=as_of + horizon * step,
        predicted_price=price,
        lower_bound=price * 0.9,
        upper_bound=price * 1.1,
        model="arima",
        model_version="arima-v1",
        generated_at=as_of + timedelta(minutes=1),
    )


async def producer(settings: Settings) -> AIOKafkaProducer:
    p = make_producer(settings, linger_ms=0)
    await p.start()
    return p


async def publish_predictions(
    p: AIOKafkaProducer, topic: str, records: list[PredictionRecord]
) -> None:
    futures = [
        await p.send(topic, r.model_dump_json().encode(), key=r.symbol.encode()) for r in records
    ]
    await asyncio.gather(*futures)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def ws_connect(url: str, token: str | None = None, **kw: Any) -> ClientConnection:
    headers = bearer(token) if token else None
    return await connect(url, additional_headers=headers, open_timeout=10, **kw)


async def next_message(ws: ClientConnection, kind: str | None = None, timeout_s: float = 20) -> Any:
    """The next server message (of ``kind``, skipping others such as status and ping)."""
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {kind or 'message'} within {timeout_s}s")
        raw = await asyncio.wait_for(ws.recv(), remaining)
        msg = orjson.loads(raw)
        if kind is None or msg["type"] == kind:
            return msg


async def close_code(ws: ClientConnection, timeout_s: float = 20) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                await ws.recv()
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None
