"""Two API processes on one broker: a client on each receives every prediction (each replica
reads every partition itself); SIGTERM closes a replica's streams with 1001."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
import redis
from _stream_helpers import (
    ApiProcess,
    close_code,
    next_message,
    publish_predictions,
    record,
    spawn_api,
    warm_up,
    ws_connect,
)
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from services.common.config import Settings

SYMBOLS = [f"R{i}-USD" for i in range(6)]  # keys spread over every partition


@pytest.fixture
async def replicas(
    stream_settings: Settings, clean_db: Engine, redis_client: redis.Redis, tmp_path: Path
) -> AsyncIterator[list[ApiProcess]]:
    procs: list[ApiProcess] = []
    try:
        for i in range(2):
            procs.append(await spawn_api(stream_settings, tmp_path / f"api-{i}.log"))
        yield procs
    finally:
        for p in procs:
            p.stop()


def _token(settings: Settings) -> str:
    from services.api.core.keys import load_keyset
    from services.api.core.security import TokenService

    token, _ = TokenService(load_keyset(settings), settings).mint(
        f"replica-{uuid.uuid4().hex[:6]}", ["predictions:read"]
    )
    return token


async def test_a_client_on_each_replica_receives_every_prediction(
    replicas: list[ApiProcess], kafka: AIOKafkaProducer, stream_settings: Settings
) -> None:
    token = _token(stream_settings)
    channels = [f"predictions:{s}:1h" for s in SYMBOLS]
    clients = [await ws_connect(p.ws, token) for p in replicas]
    try:
        for ws in clients:
            await ws.send(orjson.dumps({"type": "subscribe", "channels": channels}).decode())
            for _ in channels:
                await next_message(ws, "snapshot")
        await warm_up(kafka, stream_settings.topic_predictions, clients, SYMBOLS[0])
        base = datetime(2026, 4, 1, tzinfo=UTC)
        sent = [
            record(s, "1h", 1, base + timedelta(hours=k), 100.0 + k)
            for k in range(10)
            for s in SYMBOLS
        ]
        await publish_predictions(kafka, stream_settings.topic_predictions, sent)
        expected = sorted((r.symbol, r.as_of.isoformat()) for r in sent)
        for ws in clients:
            got = [(await next_message(ws, "prediction"))["data"] for _ in sent]
            keys = sorted(
                (g["symbol"], datetime.fromisoformat(g["as_of"]).isoformat()) for g in got
            )
            assert keys == expected
    finally:
        for ws in clients:
            await ws.close()


async def test_sigterm_closes_streams_with_1001(
    replicas: list[ApiProcess], stream_settings: Settings
) -> None:
    token = _token(stream_settings)
    async with await ws_connect(replicas[0].ws, token) as ws:
        assert (await next_message(ws, "status"))["data"]["status"] == "authenticated"
        replicas[0].stop()
        assert await close_code(ws) == 1001
    assert replicas[0].proc.returncode in (0, -15)  # uvicorn re-raises the signal it handled
