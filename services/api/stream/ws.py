"""WebSocket ``/api/v1/stream``.

Per connection two tasks: a *receiver* (auth renewals, subscribe, unsubscribe; it is also
what notices a peer that went away, since a handler that only sends never would) and a
*sender* that drains the client's bounded queue. The handler waits for the first of: the
receiver ending (peer gone), the sender ending, or the hub kicking the client (expiry,
revocation, 4408, shutdown); then it closes with the code and unregisters.

Authentication: ``Authorization: Bearer`` on the upgrade request, or a first message
``{"type": "auth", "token": ...}`` within ``stream_auth_timeout_s``; a later ``auth`` message
renews the token in-band (same subject; the new token must cover the subscribed channels).
The upgrade is always accepted so that every refusal is a close code the browser can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from fastapi import APIRouter, WebSocket
from prometheus_client import Counter, Histogram
from pydantic import ValidationError
from starlette.websockets import WebSocketDisconnect

from services.api.core.bounded import bounded
from services.api.core.security import Principal
from services.api.stream import auth
from services.api.stream.hub import Refused
from services.api.stream.protocol import (
    CLIENT_MESSAGE,
    CLOSE_AUTH,
    CLOSE_SLOW,
    CLOSE_TOO_BIG,
    AuthMessage,
    SubscribeMessage,
)
from services.api.stream.service import StreamService
from services.api.stream.subscriber import Message, Subscriber
from services.common.errors import StreamError
from services.common.metrics import (
    STREAM_CLOSES,
    STREAM_DELIVERY_LATENCY,
    STREAM_MESSAGES_SENT,
    STREAM_SLOW_CLOSES,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["stream"])
CLOSE_WAIT_S = 5.0
_Gone = (WebSocketDisconnect, OSError, RuntimeError)  # the peer left / the socket is closed


class BadMessage(StreamError, ValueError):
    """A client frame that is not a command the stream knows."""


class WsConnection:
    def __init__(self, ws: WebSocket, service: StreamService) -> None:
        self.ws = ws
        self.service = service

    async def serve(self) -> None:
        await self.ws.accept()
        try:
            principal = await self._authenticate()
            if principal is None:
                return  # the peer left before authenticating
            await auth.admit(self.service.state, principal)
            settings = self.service.state.settings
            sub = Subscriber(
                principal, settings.stream_queue_size, settings.stream_slow_client_s, "ws"
            )
            self.service.hub.register(sub)
        except Refused as refused:
            await self._close(refused.code, refused.reason)
            return
        self.service.authenticated(sub, "authenticated")
        sender = asyncio.create_task(self._send_loop(sub))
        receiver = asyncio.create_task(self._receive_loop(sub))
        try:
            waiting: set[asyncio.Future[Any]] = {sender, receiver, sub.closed}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver):
                task.cancel()
            await asyncio.wait({sender, receiver}, timeout=1.0)
            self.service.hub.unregister(sub)
        if receiver.done() and not receiver.cancelled() and receiver.exception() is not None:
            log.error("stream receiver failed", exc_info=receiver.exception())
            sub.kick(1011, "internal error")
        if sub.close_code is not None:
            await self._close(sub.close_code, sub.close_reason)

    # --- auth ---------------------------------------------------------------------------------
    async def _authenticate(self) -> Principal | None:
        state = self.service.state
        if auth.token_in_query(self.ws.scope.get("query_string", b"")):
            raise Refused(
                CLOSE_AUTH,
                "token in query string refused: use the Authorization "
                "header or a first auth message",
            )
        header = auth.header_value(self.ws.scope["headers"], b"authorization")
        if header is not None:
            return auth.from_header(state, header)
        try:
            async with asyncio.timeout(state.settings.stream_auth_timeout_s):
                message = await self._receive()
        except TimeoutError:
            raise Refused(CLOSE_AUTH, "no auth message in time") from None
        except BadMessage:
            raise Refused(CLOSE_AUTH, 'first message must be {"type": "auth", ...}') from None
        if message is None:
            return None
        if not isinstance(message, AuthMessage):
            raise Refused(CLOSE_AUTH, 'first message must be {"type": "auth", ...}')
        return auth.from_token(state, message.token)

    async def _renew(self, sub: Subscriber, token: str) -> None:
        try:
            principal = auth.from_token(self.service.state, token)
            if principal.subject != sub.principal.subject:
                raise Refused(CLOSE_AUTH, "a renewal must be for the same subject")
            if self.service.state.gate.is_denied(principal.jti):
                raise Refused(CLOSE_AUTH, "token revoked")
            auth.authorize(principal, self.service.parse(sorted(sub.channels)))
        except Refused as refused:
            sub.kick(refused.code, refused.reason)
            return
        sub.principal = principal
        self.service.authenticated(sub, "renewed")

    # --- the two loops ------------------------------------------------------------------------
    async def _receive(self) -> AuthMessage | SubscribeMessage | None:
        """The next client message; None when the peer has gone."""
        try:
            raw = await self.ws.receive()
        except _Gone:
            return None
        if raw["type"] == "websocket.disconnect":
            return None
        text = raw.get("text")
        if text is None:
            data = raw.get("bytes") or b""
            text = data.decode("utf-8", "replace")
        if len(text) > self.service.state.settings.stream_max_message_bytes:
            raise Refused(CLOSE_TOO_BIG, "message too large")
        try:
            return CLIENT_MESSAGE.validate_json(text)
        except ValidationError as exc:
            raise BadMessage(exc.errors(include_url=False)[0]["msg"]) from None

    async def _receive_loop(self, sub: Subscriber) -> None:
        while True:
            try:
                message = await self._receive()
            except BadMessage as exc:
                sub.offer(self.service.error(None, "ERR_VAL_001", f"bad message: {exc}"))
                continue
            except Refused as refused:
                sub.kick(refused.code, refused.reason)
                return
            if message is None:
                return
            if isinstance(message, AuthMessage):
                await self._renew(sub, message.token)
            elif message.type == "subscribe":
                try:
                    await self.service.subscribe(sub, message.channels)
                except Refused as refused:
                    sub.kick(refused.code, refused.reason)
                    return
            else:
                self.service.unsubscribe(sub, message.channels)

    async def _send_loop(self, sub: Subscriber) -> None:
        # The raw ASGI send (Starlette's wrapper only re-checks a state this loop owns): the
        # per-delivery cost is what 1,000 subscribers multiply.
        send = self.ws._send
        while True:
            message = await sub.next()
            if message is None:
                return
            sub.busy_since = time.monotonic()
            try:
                await send({"type": "websocket.send", "text": message.payload})
            except _Gone:
                return
            sub.busy_since = None
            record_sent(message)

    async def _close(self, code: int, reason: str) -> None:
        STREAM_CLOSES.labels(str(code)).inc()
        if code == CLOSE_SLOW:
            STREAM_SLOW_CLOSES.inc()
            self.service.hub.slow_closes += 1
        with contextlib.suppress(TimeoutError, *_Gone):
            await bounded(self.ws.close(code, reason[:120]), CLOSE_WAIT_S, "stream close")


_SENT: dict[str, tuple[Counter, Histogram]] = {}


def record_sent(message: Message) -> None:
    """Count a message handed to the connection and its Kafka-to-send latency."""
    series = _SENT.get(message.kind)
    if series is None:
        series = _SENT[message.kind] = (
            STREAM_MESSAGES_SENT.labels(message.kind),
            STREAM_DELIVERY_LATENCY.labels(message.kind),
        )
    series[0].inc()
    if message.born is not None:
        series[1].observe(max(0.0, time.time() - message.born))


@router.websocket("/api/v1/stream")
async def stream(websocket: WebSocket) -> None:
    service: StreamService = websocket.app.state.stream
    await WsConnection(websocket, service).serve()
