"""SSE stream on a served app with a real SSE client (httpx-sse): snapshot, live messages with
``id:`` = seq, ``Last-Event-ID`` resume from the window, ``: ping`` comments."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
from _stream_helpers import (
    RunningApi,
    StartApi,
    bearer,
    publish_predictions,
    record,
    wait_for,
)
from aiokafka import AIOKafkaProducer
from httpx_sse import ServerSentEvent, aconnect_sse

from services.common.config import Settings

URL = "/api/v1/stream/sse"
CHANNEL = "predictions:BTC-USD:1h"


async def events(source: Any) -> AsyncIterator[ServerSentEvent]:
    async for event in source.aiter_sse():
        if event.data:  # the "retry:" preamble carries no data (browsers dispatch nothing)
            yield event


async def next_event(it: AsyncIterator[ServerSentEvent], kind: str) -> tuple[int, Any]:
    while True:
        event = await anext(it)
        body = orjson.loads(event.data)
        if body["type"] == kind:
            assert int(event.id) == body["seq"]
            return int(event.id), body


async def test_sse_snapshot_live_and_resume_with_last_event_id(
    api: RunningApi, kafka: AIOKafkaProducer, stream_settings: Settings, mint: Callable[..., str]
) -> None:
    headers = bearer(mint("predictions:read"))
    topic = stream_settings.topic_predictions
    base = datetime(2026, 6, 1, tzinfo=UTC)
    batch = [record("BTC-USD", "1h", 1, base + timedelta(hours=k), 10.0 + k) for k in range(6)]
    async with httpx.AsyncClient(base_url=api.http, timeout=30) as http:
        params = {"channels": CHANNEL}
        async with aconnect_sse(http, "GET", URL, params=params, headers=headers) as source:
            assert source.response.headers["content-type"].startswith("text/event-stream")
            assert source.response.headers["x-accel-buffering"] == "no"
            it = events(source)
            _, snap = await next_event(it, "snapshot")
            assert snap["channel"] == CHANNEL
            assert snap["data"] == {"predictions": []}
            await publish_predictions(kafka, topic, batch[:2])
            last_id, first = await next_event(it, "prediction")
            assert first["data"] == orjson.loads(batch[0].model_dump_json())
        # Disconnected after the first; the rest arrive meanwhile.
        await wait_for(lambda: api.stream.hub.stream_stats()["sse"] == 0, 10, "disconnect")
        await publish_predictions(kafka, topic, batch[2:])
        await wait_for(lambda: api.stream.hub.published >= len(batch), 20, "published")
        resume = headers | {"Last-Event-ID": str(last_id)}
        async with aconnect_sse(http, "GET", URL, params=params, headers=resume) as source:
            it = events(source)
            got = [(await next_event(it, "prediction"))[1]["data"] for _ in batch[1:]]
        assert got == [orjson.loads(r.model_dump_json()) for r in batch[1:]]
        # An id this process never issued: a fresh snapshot instead.
        unknown = headers | {"Last-Event-ID": "12"}
        async with aconnect_sse(http, "GET", URL, params=params, headers=unknown) as source:
            _, snap = await next_event(events(source), "snapshot")
        assert snap["channel"] == CHANNEL


async def test_sse_heartbeat_is_a_ping_comment(api_with: StartApi) -> None:
    api = await api_with(stream_heartbeat_s=0.3)
    token, _ = api.app.state.api.tokens.mint("sse-ping", ["prices:read"])
    async with (
        httpx.AsyncClient(base_url=api.http, timeout=30) as http,
        http.stream(
            "GET", URL, params={"channels": "ticks:BTC-USD"}, headers=bearer(token)
        ) as response,
    ):
        assert response.status_code == 200
        lines = response.aiter_lines()
        while await anext(lines) != ": ping":
            pass
