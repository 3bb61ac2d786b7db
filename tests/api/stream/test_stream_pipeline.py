"""End to end: ticks close a bar, the prediction service forecasts it, and every new forecast
reaches a WebSocket subscriber of the API as the REST path serves it (real broker, PostgreSQL,
Redis; the prediction service in this loop, ARIMA in threads)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import orjson
from _stream_helpers import RunningApi, bearer, next_message, ws_connect
from prediction.prediction_helpers import history_ticks, produce_ticks, store_ticks
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.prediction.service import PredictionService

SYMBOL = "PIPE-USD"


async def test_bar_close_to_forecast_to_subscriber(
    api: RunningApi, stream_settings: Settings, mint: Callable[..., str], clean_db: Engine
) -> None:
    settings = stream_settings.model_copy(update={"prediction_processes": 0})
    h0 = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    hour = timedelta(hours=1)
    store_ticks(clean_db, history_ticks(SYMBOL, h0 - timedelta(days=45), h0 - 2 * hour, hour))
    service = PredictionService(settings, health_port=infra.free_port())
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    token = mint("predictions:read")
    try:
        await asyncio.wait_for(service.ready.wait(), 60)
        async with await ws_connect(api.ws, token) as ws:
            await ws.send(
                orjson.dumps({"type": "subscribe", "channels": [f"predictions:{SYMBOL}:1h"]})
            )
            snap = await next_message(ws, "snapshot")
            # Ticks in the previous hour, then one in this hour: the 1h bar (h0 - 1h) closes.
            live = [(SYMBOL, h0 - timedelta(minutes=m), 100.0 + m / 10) for m in (50, 30, 10)]
            live.append((SYMBOL, h0, 101.0))
            store_ticks(clean_db, live)  # what the writer would have stored
            await produce_ticks(settings, live)
            got = {}
            while len(got) < settings.horizons_1h:
                msg = await next_message(ws, "prediction", timeout_s=120)
                if msg["data"]["as_of"].startswith((h0 - hour).strftime("%Y-%m-%dT%H")):
                    got[msg["data"]["horizon"]] = msg
        assert sorted(got) == list(range(1, settings.horizons_1h + 1))
        assert all(m["seq"] > snap["seq"] for m in got.values())
        async with httpx.AsyncClient(base_url=api.http) as http:
            rest = await http.get(
                f"/api/v1/predictions/{SYMBOL}",
                params={"interval": "1h", "horizon": 3},
                headers=bearer(token),
            )
        assert rest.status_code == 200
        assert got[3]["data"] == rest.json()
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
