"""Helpers for the live-stream tests: a real uvicorn server in the test's loop, real clients."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import uvicorn
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from polling import wait_for
from service_process import wait_serving
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.api.main import create_app
from services.api.stream.service import StreamService
from services.common import infra
from services.common.config import Settings
from services.common.kafka import make_producer
from services.common.schemas import PredictionRecord


class LocalApi:
    """The addresses of an API listening on 127.0.0.1:``port``."""

    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/stream"


@dataclass
class RunningApi(LocalApi):
    app: FastAPI
    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    @property
    def stream(self) -> StreamService:
        service: StreamService = self.app.state.stream
        return service

    async def stop(self) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 30)


StartApi = Callable[..., Awaitable[RunningApi]]  # the ``api_with`` fixture (conftest.py)


async def start_api(settings: Settings) -> RunningApi:
    """The API app served by uvicorn on a free port (lifespan on), its feed ready."""
    app = create_app(settings)
    port = infra.free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_level="warning",
        ws_ping_interval=None,
        ws_per_message_deflate=False,  # as services/api/server.py runs it
        timeout_graceful_shutdown=5,
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


# --- API processes ----------------------------------------------------------------------------

_CARRIED = (
    "env",
    "state_dir",
    "topic_prices",
    "topic_prices_dlq",
    "topic_predictions",
    "topic_model_events",
    "jwt_private_key_file",
    "jwt_public_keys_dir",
    "api_local_cache_ms",
    "api_sync_interval_ms",
)


def api_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment of an API process with ``settings`` (stream settings included)."""
    env = infra.export_env(settings)
    env["PRICECAST_LOG_LEVEL"] = "WARNING"
    names = [*_CARRIED, *(n for n in Settings.model_fields if n.startswith("stream_"))]
    for name in names:
        env[f"PRICECAST_{name.upper()}"] = str(getattr(settings, name))
    env.update({f"PRICECAST_{k.upper()}": str(v) for k, v in extra.items()})
    return env


@dataclass
class ApiProcess(LocalApi):
    proc: subprocess.Popen[bytes]
    port: int

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient(base_url=self.http, timeout=5) as http:
            text = (await http.get("/metrics")).text
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self) -> None:
        infra.stop_process(self.proc, 30)  # SIGTERM, then SIGKILL after 30 s


def _popen_api(settings: Settings, log: Path, port: int, **extra: Any) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "services.cli", "api", "--port", str(port)],
            env=api_env(settings, **extra),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


async def spawn_api(settings: Settings, log: Path, **extra: Any) -> ApiProcess:
    port = infra.free_port()
    api = ApiProcess(_popen_api(settings, log, port, **extra), port)
    proc = api.proc
    try:
        await wait_serving(port, proc, "api")
    except BaseException:
        api.stop()
        raise
    return api


async def warm_up(
    p: AIOKafkaProducer, topic: str, clients: list[ClientConnection], symbol: str
) -> None:
    """Publish a marker prediction until every client has received one: each process's
    feed is then reading (it starts at the end of the topic)."""
    pending = set(range(len(clients)))
    deadline = time.monotonic() + 60
    while pending:
        assert time.monotonic() < deadline, "stream feeds never delivered"
        await publish_predictions(p, topic, [record(symbol, "1h", 1)])
        for i in list(pending):
            try:
                msg = await next_message(clients[i], "prediction", timeout_s=1.0)
            except (AssertionError, TimeoutError):
                continue
            if msg["data"]["symbol"] == symbol:
                pending.discard(i)
    for ws in clients:  # drain what the extra markers left behind
        with contextlib.suppress(AssertionError, TimeoutError):
            while True:
                await next_message(ws, "prediction", timeout_s=0.5)
