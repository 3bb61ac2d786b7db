"""Stream authentication on a served app: every bad token gets its close code (or its HTTP
error before an SSE stream starts), never a 500; in-band renewal outlives the first token."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import orjson
import pytest
from _stream_helpers import (
    RunningApi,
    StartApi,
    bearer,
    close_code,
    next_message,
    publish_predictions,
    record,
    wait_for,
    ws_connect,
)
from aiokafka import AIOKafkaProducer
from websockets.exceptions import ConnectionClosed

from services.common.config import Settings


def auth_message(token: str) -> str:
    return orjson.dumps({"type": "auth", "token": token}).decode()


def subscribe(*channels: str) -> str:
    return orjson.dumps({"type": "subscribe", "channels": list(channels)}).decode()


async def expired(mint: Callable[..., str]) -> str:
    token = mint(ttl_s=1)
    # exp is whole seconds and python-jose compares it with the current whole second: past
    # exp + 1 s every check refuses it.
    deadline = time.time() + 2.5
    await wait_for(lambda: time.time() > deadline, 10, "token expiry")
    return token


async def test_no_token_closes_4401_after_the_auth_deadline(api: RunningApi) -> None:
    async with await ws_connect(api.ws) as ws:
        assert await close_code(ws) == 4401


@pytest.mark.parametrize("query", ["token={t}", "access_token={t}", "x={t}"])
async def test_token_in_query_string_is_refused(
    api: RunningApi, mint: Callable[..., str], query: str
) -> None:
    async with await ws_connect(f"{api.ws}?{query.format(t=mint())}") as ws:
        assert await close_code(ws) == 4401


async def test_bad_expired_and_non_auth_first_message(
    api: RunningApi, mint: Callable[..., str]
) -> None:
    async with await ws_connect(api.ws, "not-a-jwt") as ws:
        assert await close_code(ws) == 4401
    old = await expired(mint)
    async with await ws_connect(api.ws, old) as ws:
        assert await close_code(ws) == 4401
    async with await ws_connect(api.ws) as ws:
        await ws.send(subscribe("ticks:BTC-USD"))
        assert await close_code(ws) == 4401
    async with await ws_connect(api.ws) as ws:
        await ws.send(auth_message(old))
        assert await close_code(ws) == 4401


async def test_channel_outside_the_scope_closes_4403(
    api: RunningApi, mint: Callable[..., str]
) -> None:
    async with await ws_connect(api.ws, mint("prices:read")) as ws:
        await ws.send(subscribe("ticks:BTC-USD"))
        await next_message(ws, "snapshot")
        await ws.send(subscribe("predictions:BTC-USD:1d"))
        assert await close_code(ws) == 4403


async def test_revoked_token_ends_the_stream(api: RunningApi, mint: Callable[..., str]) -> None:
    token = mint()
    async with await ws_connect(api.ws, token) as ws:
        await ws.send(subscribe("ticks:BTC-USD"))
        await next_message(ws, "snapshot")
        async with httpx.AsyncClient(base_url=api.http) as http:
            revoked = await http.post("/api/v1/auth/revoke", headers=bearer(token))
            assert revoked.status_code == 200
        assert await close_code(ws) == 4401
    async with await ws_connect(api.ws, token) as ws:  # and it cannot come back
        assert await close_code(ws) == 4401


async def test_expiry_closes_unless_renewed_in_band(
    api: RunningApi,
    kafka: AIOKafkaProducer,
    stream_settings: Settings,
    mint: Callable[..., str],
) -> None:
    subject = "renewing-client"
    async with await ws_connect(api.ws) as lapsing, await ws_connect(api.ws) as renewing:
        short = mint(subject=subject, ttl_s=2)
        for ws in (lapsing, renewing):
            await ws.send(auth_message(short))
            await next_message(ws, "status")
            await ws.send(subscribe("predictions:BTC-USD:1h"))
            await next_message(ws, "snapshot")
        await renewing.send(auth_message(mint(subject=subject, ttl_s=600)))
        renewed = await next_message(renewing, "status")
        while "status" not in renewed["data"]:  # {"subscribed": [...]} first
            renewed = await next_message(renewing, "status")
        assert renewed["data"]["status"] == "renewed"
        assert renewed["data"]["expires_at"] > time.time() + 60
        assert await close_code(lapsing) == 4401  # the first token expired
        await publish_predictions(
            kafka, stream_settings.topic_predictions, [record("BTC-USD", "1h", 1)]
        )
        assert (await next_message(renewing, "prediction"))["channel"] == "predictions:BTC-USD:1h"
        # A renewal for another subject is refused.
        await renewing.send(auth_message(mint(subject="someone-else")))
        assert await close_code(renewing) == 4401


async def test_connection_limits_close_4429(api_with: StartApi) -> None:
    api = await api_with(stream_max_connections_per_subject=2, stream_connects_per_minute=4)
    token, _ = api.app.state.api.tokens.mint("limited-subject", ["prices:read"])
    first = await ws_connect(api.ws, token)
    second = await ws_connect(api.ws, token)
    for ws in (first, second):
        assert (await next_message(ws, "status"))["data"]["status"] == "authenticated"
    async with await ws_connect(api.ws, token) as third:  # third at once: per subject
        assert await close_code(third) == 4429
    await first.close()
    await wait_for(lambda: api.stream.hub.stream_stats()["connections"] == 1, 10)
    async with await ws_connect(api.ws, token) as fourth:  # 4th attempt this minute: ok
        assert (await next_message(fourth, "status"))["data"]["status"] == "authenticated"
    async with await ws_connect(api.ws, token) as fifth:  # 5th attempt: rate limited
        assert await close_code(fifth) == 4429
    await second.close()


async def test_sse_refusals_are_http_errors_never_500(
    api: RunningApi, mint: Callable[..., str]
) -> None:
    url = "/api/v1/stream/sse"
    token = mint("prices:read")
    cases = [
        ({}, {"channels": "ticks:BTC-USD"}, 401, "ERR_AUTH_001"),
        ({}, {"channels": "ticks:BTC-USD", "token": token}, 401, "ERR_AUTH_001"),
        (bearer(token), {"channels": "ticks:BTC-USD", "access_token": token}, 401, "ERR_AUTH_001"),
        (bearer("garbage"), {"channels": "ticks:BTC-USD"}, 401, "ERR_AUTH_001"),
        (bearer(await expired(mint)), {"channels": "ticks:BTC-USD"}, 401, "ERR_AUTH_001"),
        (bearer(token), {"channels": "predictions:BTC-USD:1d"}, 403, "ERR_AUTH_002"),
        (bearer(token), {"channels": "ticks:no such"}, 422, "ERR_VAL_001"),
        (bearer(token), {}, 422, "ERR_VAL_001"),
    ]
    async with httpx.AsyncClient(base_url=api.http) as http:
        for headers, params, status, code in cases:
            response = await http.get(url, headers=headers, params=params)
            assert response.status_code == status, (params, response.text)
            assert response.json()["error"]["code"] == code


async def test_closed_by_server_is_a_clean_close(api: RunningApi, mint: Callable[..., str]) -> None:
    """A refused client sees a close frame with a code and reason, not a dropped socket."""
    ws = await ws_connect(api.ws, "not-a-jwt")
    with pytest.raises(ConnectionClosed) as info:
        await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 4401
    assert info.value.rcvd.reason
