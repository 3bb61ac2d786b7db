"""Server-Sent Events ``GET /api/v1/stream/sse?channels=a,b``.

Authenticated by the ``Authorization`` header (never the query string). Refusals happen before
the stream starts, as ordinary error responses: 401 (token), 403 (a channel's scope), 422
(a bad channel), 429 (attempts or connections per subject / per worker). Each event's ``id:``
is the message's ``seq``; a reconnect with ``Last-Event-ID`` gets what it missed from the
per-channel resume windows, or a fresh snapshot when they do not reach back that far.
``: ping`` comments every ``stream_heartbeat_s`` keep proxies from dropping the connection,
``X-Accel-Buffering: no`` keeps them from buffering it. (No GZip in front of this route.)
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from services.api.core.errors import responses
from services.api.core.security import Principal
from services.api.deps import authenticate_header
from services.api.stream import auth
from services.api.stream.hub import Refused
from services.api.stream.protocol import CLOSE_LIMIT, CLOSE_SLOW, BadChannel, dumps, parse_channel
from services.api.stream.service import StreamService
from services.api.stream.subscriber import Message, Subscriber
from services.api.stream.ws import record_sent
from services.common.errors import ApiError
from services.common.metrics import STREAM_CLOSES, STREAM_SLOW_CLOSES

router = APIRouter(tags=["stream"])
HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def frame(message: Message) -> bytes:
    if message.kind == "ping":
        return b": ping\n\n"
    return f"id: {message.seq}\ndata: {message.payload}\n\n".encode()


def _last_event_id(request: Request) -> int | None:
    raw = request.headers.get("last-event-id", "").strip()
    return int(raw) if raw.isdigit() and len(raw) < 20 else None


@router.get(
    "/api/v1/stream/sse",
    summary="Live updates as Server-Sent Events (channels as in the WebSocket stream)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
        **responses("ERR_AUTH_001", "ERR_AUTH_002", "ERR_RATE_001", "ERR_VAL_001"),
    },
    openapi_extra={"security": [{"HTTPBearer": []}]},
)
async def stream_sse(
    request: Request,
    channels: Annotated[str, Query(max_length=4000, description="comma list of channels")],
) -> StreamingResponse:
    service: StreamService = request.app.state.stream
    state = service.state
    if auth.token_in_query(request.scope.get("query_string", b"")):
        raise ApiError("ERR_AUTH_001", "Token in query string refused")
    principal = authenticate_header(state, request.headers.get("authorization"))
    try:
        wanted = [parse_channel(part) for part in channels.split(",") if part.strip()]
    except BadChannel as exc:
        raise ApiError("ERR_VAL_001", str(exc), {"field": "channels"}) from None
    if not wanted:
        raise ApiError("ERR_VAL_001", "no channels", {"field": "channels"})
    if len(wanted) > state.settings.stream_max_subscriptions:
        raise ApiError("ERR_VAL_001", "too many channels", {"field": "channels"})
    for channel in wanted:
        if channel.scope not in principal.scopes:
            raise ApiError("ERR_AUTH_002", details={"required_scope": channel.scope})
    sub = await _register(service, principal)
    try:
        service.hub.subscribe(sub, wanted)
        after = _last_event_id(request)
        replayed = (
            service.hub.replay([channel.name for channel in wanted], after) if after else None
        )
        if replayed is None:
            await service.snapshots(sub, wanted)
        else:
            for message in reversed(replayed):
                sub.offer_first(message)
    except BaseException:
        service.hub.unregister(sub)
        raise
    return StreamingResponse(_events(service, sub), media_type="text/event-stream", headers=HEADERS)


async def _register(service: StreamService, principal: Principal) -> Subscriber:
    settings = service.state.settings
    try:
        await auth.admit(service.state, principal)
        sub = Subscriber(
            principal, settings.stream_queue_size, settings.stream_slow_client_s, "sse"
        )
        service.hub.register(sub)
    except Refused as refused:
        code = "ERR_RATE_001" if refused.code == CLOSE_LIMIT else "ERR_AUTH_001"
        headers = {"Retry-After": "5"} if code == "ERR_RATE_001" else None
        raise ApiError(code, refused.reason, headers=headers) from None
    return sub


async def _events(service: StreamService, sub: Subscriber) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 3000\n\n"
        while True:
            message = await sub.next()
            if message is None:
                break
            sub.busy_since = time.monotonic()
            yield frame(message)
            sub.busy_since = None
            record_sent(message)
        if sub.close_code is not None:  # kicked: say why (if it still reads), then end
            service.hub.unregister(sub)
            STREAM_CLOSES.labels(str(sub.close_code)).inc()
            if sub.close_code == CLOSE_SLOW:
                STREAM_SLOW_CLOSES.inc()
                service.hub.slow_closes += 1
            data = dumps({"code": sub.close_code, "reason": sub.close_reason})
            yield frame(service.hub.message("error", None, data))
    finally:
        service.hub.unregister(sub)
