"""WebSocket stream on a served app, the real broker, PostgreSQL and Redis: snapshot on
subscribe, live predictions as REST serves them, coalesced ticks, committed 1m bars."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from _api_helpers import add_asset, add_prediction
from _stream_helpers import (
    RunningApi,
    StartApi,
    bearer,
    next_message,
    publish_predictions,
    record,
    wait_for,
    ws_connect,
)
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.kafka import dumps
from services.ingestion.producer import TickPublisher
from services.ingestion.sink import TickSink
from services.ingestion.writer import TickWriter


def subscribe(*channels: str) -> str:
    return orjson.dumps({"type": "subscribe", "channels": list(channels)}).decode()


async def test_snapshot_at_once_then_every_new_prediction(
    api: RunningApi,
    kafka: AIOKafkaProducer,
    stream_settings: Settings,
    mint: Callable[..., str],
    clean_db: Engine,
) -> None:
    add_asset(clean_db, "BTC-USD")
    as_of = datetime(2026, 3, 1, 12, tzinfo=UTC)
    add_prediction(clean_db, "BTC-USD", interval="1h", horizon=1, as_of=as_of, price=50.0)
    token = mint()
    async with await ws_connect(api.ws, token) as ws:
        status = await next_message(ws, "status")
        assert status["data"]["status"] == "authenticated"
        assert status["channel"] is None
        await ws.send(subscribe("predictions:btc-usd:1h"))
        snap = await next_message(ws, "snapshot")
        assert snap["channel"] == "predictions:BTC-USD:1h"
        async with httpx.AsyncClient(base_url=api.http) as http:
            rest = await http.get(
                "/api/v1/predictions/BTC-USD", params={"interval": "1h"}, headers=bearer(token)
            )
        assert rest.status_code == 200
        # The same record, marked stale the same way (its as-of bar is months old); only the
        # age differs, read a few milliseconds apart.
        (snapped,) = snap["data"]["predictions"]
        served = rest.json()
        assert snapped["stale"] is served["stale"] is True
        assert abs(snapped.pop("as_of_age_s") - served.pop("as_of_age_s")) < 60
        assert snapped == served

        fresh = [record("BTC-USD", "1h", h, as_of + timedelta(hours=1), 60.0 + h) for h in (1, 2)]
        other = record("ETH-USD", "1h", 1, as_of)  # another channel: not delivered here
        await publish_predictions(kafka, stream_settings.topic_predictions, [other, *fresh])
        got = [await next_message(ws, "prediction") for _ in fresh]
        assert [g["data"] for g in got] == [orjson.loads(r.model_dump_json()) for r in fresh]
        assert all(g["channel"] == "predictions:BTC-USD:1h" for g in got)
        assert snap["seq"] < got[0]["seq"] < got[1]["seq"]
        assert set(got[0]) == {"type", "channel", "seq", "data"}


async def test_first_message_auth_bad_channel_and_unsubscribe(
    api: RunningApi, kafka: AIOKafkaProducer, stream_settings: Settings, mint: Callable[..., str]
) -> None:
    async with await ws_connect(api.ws) as ws:  # a browser: no header
        await ws.send(orjson.dumps({"type": "auth", "token": mint()}).decode())
        assert (await next_message(ws, "status"))["data"]["status"] == "authenticated"
        await ws.send(subscribe("weather:BTC-USD"))
        error = await next_message(ws, "error")
        assert error["data"]["code"] == "ERR_VAL_001"
        await ws.send("not json")
        assert (await next_message(ws, "error"))["data"]["code"] == "ERR_VAL_001"
        await ws.send(subscribe("predictions:SOL-USD:1d"))
        assert (await next_message(ws, "snapshot"))["data"] == {"predictions": []}
        await ws.send(orjson.dumps({"type": "unsubscribe", "channels": ["predictions:SOL-USD:1d"]}))
        await wait_for(lambda: api.stream.hub.stream_stats()["subscriptions"] == 0, 10)
        # Still open and served: a new subscription answers.
        await ws.send(subscribe("ticks:SOL-USD"))
        assert (await next_message(ws, "snapshot"))["data"] == {"tick": None}


async def test_ticks_are_coalesced_to_the_newest(
    api: RunningApi, kafka: AIOKafkaProducer, stream_settings: Settings, mint: Callable[..., str]
) -> None:
    async with await ws_connect(api.ws, mint("prices:read")) as ws:
        await ws.send(subscribe("ticks:ETH-USD"))
        await next_message(ws, "snapshot")
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
        n = 300
        for i in range(n):
            tick = {
                "symbol": "ETH-USD",
                "ts": start + timedelta(milliseconds=10 * i),
                "price": 1000.0 + i,
                "volume": 1.0,
                "source": "test",
            }
            await kafka.send(stream_settings.topic_prices, dumps(tick), key=b"ETH-USD")
        await kafka.flush()
        prices: list[float] = []
        while not prices or prices[-1] != 1000.0 + n - 1:
            msg = await next_message(ws, "tick")
            assert msg["channel"] == "ticks:ETH-USD"
            prices.append(msg["data"]["price"])
        assert len(prices) < n  # coalesced: the newest per interval, not one per tick
        assert prices == sorted(prices)


async def test_closed_1m_bar_reaches_subscribers_as_bars_answers(
    api: RunningApi,
    stream_settings: Settings,
    mint: Callable[..., str],
    clean_db: Engine,
) -> None:
    add_asset(clean_db, "SOL-USD")
    publisher = TickPublisher(stream_settings)
    assert await publisher.start()
    stop = asyncio.Event()
    writer = TickWriter(stream_settings, TickSink(clean_db), publisher)
    task = asyncio.create_task(writer.run(stop))
    token = mint("prices:read")
    try:
        async with await ws_connect(api.ws, token) as ws:
            await ws.send(subscribe("bars:SOL-USD:1m"))
            await next_message(ws, "snapshot")
            minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=5)
            prices = ((1, 10.0), (20, 12.0), (40, 9.0))
            ticks = [(minute + timedelta(seconds=s), p) for s, p in prices]
            ticks.append((minute + timedelta(minutes=1, seconds=1), 11.0))  # closes the bar
            rows = [
                {"symbol": "SOL-USD", "ts": ts, "price": p, "volume": 2.0, "source": "test"}
                for ts, p in ticks
            ]
            await publisher.send_keyed(
                stream_settings.topic_prices, [(b"SOL-USD", dumps(r)) for r in rows]
            )
            bar = await next_message(ws, "bar", timeout_s=60)
        async with httpx.AsyncClient(base_url=api.http) as http:
            rest = await http.get(
                "/api/v1/assets/SOL-USD/bars", params={"interval": "1m"}, headers=bearer(token)
            )
        assert bar["channel"] == "bars:SOL-USD:1m"
        stored = {b["bucket"]: b for b in rest.json()["bars"]}
        assert bar["data"] == stored[bar["data"]["bucket"]]
        assert (bar["data"]["open"], bar["data"]["high"], bar["data"]["low"]) == (10.0, 12.0, 9.0)
        assert bar["data"]["close"] == 9.0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
        await publisher.stop()


async def test_subscription_and_message_size_limits(api_with: StartApi) -> None:
    from _stream_helpers import close_code

    api = await api_with(stream_max_subscriptions=2, stream_max_message_bytes=2048)
    token, _ = api.app.state.api.tokens.mint("limits", ["prices:read"])
    async with await ws_connect(api.ws, token) as ws:
        await ws.send(subscribe("ticks:A", "ticks:B", "ticks:C"))
        error = await next_message(ws, "error")
        assert "at most 2 channels" in error["data"]["message"]
        await ws.send(subscribe("ticks:A", "ticks:B"))  # within the limit: served
        assert (await next_message(ws, "snapshot"))["channel"] == "ticks:A"
        await ws.send(subscribe(*[f"ticks:S{i}" for i in range(100)]) + " " * 2048)
        assert await close_code(ws) == 1009
