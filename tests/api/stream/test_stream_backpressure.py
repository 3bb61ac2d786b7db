"""A client that stops reading is closed with 4408 while the others keep receiving, and the
API process's memory stays bounded (an API process of its own, its RSS read from /proc)."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import redis
from _stream_helpers import (
    bearer,
    close_code,
    next_message,
    publish_predictions,
    record,
    spawn_api,
    wait_for,
    warm_up,
    ws_connect,
)
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine
from websockets.asyncio.client import connect

from services.api.core.keys import load_keyset
from services.api.core.security import TokenService
from services.common.config import Settings

N = 4000
CHUNK = 100
PAD = "x" * 8000  # ~8 kB per message: 32 MB in all, far more than any bound below


def _small_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_slow_client_closed_4408_others_receive_memory_bounded(
    stream_settings: Settings,
    kafka: AIOKafkaProducer,
    clean_db: Engine,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    api = await spawn_api(stream_settings, tmp_path / "api.log", stream_queue_size=256)
    token, _ = TokenService(load_keyset(stream_settings), stream_settings).mint(
        "backpressure", ["predictions:read"]
    )
    sub = orjson.dumps({"type": "subscribe", "channels": ["predictions:BIG-USD:1h"]}).decode()
    try:
        fast = await ws_connect(api.ws, token)
        # Reads nothing: its receive queue holds one message, its socket buffer is tiny.
        slow = await connect(
            api.ws, sock=_small_socket(api.port), max_queue=1, additional_headers=bearer(token)
        )
        for ws in (fast, slow):
            await ws.send(sub)
        await next_message(fast, "snapshot")
        await warm_up(kafka, stream_settings.topic_predictions, [fast], "BIG-USD")
        rss_before = api.rss_kb()

        base = datetime(2026, 5, 1, tzinfo=UTC)
        sent = [
            record("BIG-USD", "1h", 1, base + timedelta(hours=k), 100.0).model_copy(
                update={"fallback_reason": PAD}
            )
            for k in range(N)
        ]
        received: set[str] = set()
        for i in range(0, N, CHUNK):  # the fast client reads each chunk as it comes
            await publish_predictions(kafka, stream_settings.topic_predictions, sent[i : i + CHUNK])
            while len(received) < i + CHUNK:
                msg = await next_message(fast, "prediction", timeout_s=60)
                received.add(msg["data"]["as_of"])
        await wait_for(
            lambda: api.metric("pricecast_stream_slow_client_closes_total"), 60, "a 4408 close"
        )
        growth_mb = (api.rss_kb() - rss_before) / 1024
        assert growth_mb < 20, f"API RSS grew {growth_mb:.1f} MB for a 32 MB burst"
        assert await close_code(slow, timeout_s=60) == 4408  # once it reads again: the code
        # The fast client is still served.
        await publish_predictions(
            kafka, stream_settings.topic_predictions, [record("BIG-USD", "1h", 2)]
        )
        assert (await next_message(fast, "prediction"))["data"]["horizon"] == 2
        await fast.close()
    finally:
        api.stop()
