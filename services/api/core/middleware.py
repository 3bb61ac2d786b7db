"""One pure ASGI middleware (no BaseHTTPMiddleware: it would cost a task per request).

It stamps ``X-Request-ID`` and ``X-Process-Time`` on every response, enforces the body size
limit, records Prometheus latency by route template, logs slow requests, and turns any
exception that escaped the handlers into a 500 with the error shape and no traceback.
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

from fastapi import HTTPException
from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.api.core.errors import error_body
from services.common.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = logging.getLogger("services.api.access")

_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
_EVENT_STREAM = b"text/event-stream"
_MAX_SERIES = 1024  # labelled children kept at hand (route templates x methods x statuses)


class _BodyTooLarge(HTTPException):
    """Raised from ``receive``: FastAPI re-raises HTTPExceptions met while reading a body."""

    def __init__(self) -> None:
        super().__init__(413, "Request body too large")


class ApiMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, slow_request_ms: float) -> None:
        self.app = app
        self.max_body = max_body_bytes
        self.slow_ms = slow_request_ms
        # ``labels()`` takes a lock and builds a tuple per call: keep the children instead.
        self._series: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        request_id: bytes | None = None
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id" and _REQUEST_ID.match(value):
                request_id = value
            elif name == b"content-length":
                length = int(value) if value.isdigit() else -1
        if request_id is None:
            request_id = os.urandom(8).hex().encode()
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["started"] = True
                state["status"] = message["status"]
                elapsed = (time.perf_counter() - start) * 1000
                headers = list(message.get("headers", ()))
                if any(
                    name == b"content-type" and value.startswith(_EVENT_STREAM)
                    for name, value in headers
                ):
                    # A live stream lasts as long as its client: its latency is the time to
                    # the start of the answer, not its length (no "slow request" either).
                    state["stream_s"] = elapsed / 1000
                headers.append((b"x-request-id", request_id))
                headers.append((b"x-process-time", b"%.3f" % elapsed))
                message["headers"] = headers
            await send(message)

        async def send_error(status: int, code: str, text: str) -> None:
            body = error_body(code, text)
            await send_stamped(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})

        try:
            if length is not None and (length < 0 or length > self.max_body):
                raise _BodyTooLarge
            if scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
                await self.app(scope, receive, send_stamped)
            else:
                await self.app(scope, self._limited(receive), send_stamped)
        except _BodyTooLarge:
            if not state["started"]:
                await send_error(413, "ERR_PAYLOAD_TOO_LARGE", "Request body too large")
        except Exception:
            log.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if not state["started"]:
                await send_error(500, "ERR_INTERNAL", "Internal server error")
        finally:
            elapsed_s = state.get("stream_s") or time.perf_counter() - start
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            latency, requests = self._metrics(template, scope["method"], state["status"])
            latency.observe(elapsed_s)
            requests.inc()
            if elapsed_s * 1000 > self.slow_ms:
                log.warning(
                    "slow request %s %s -> %s in %.1f ms (request id %s)",
                    scope["method"],
                    template,
                    state["status"],
                    elapsed_s * 1000,
                    request_id.decode(),
                )

    def _metrics(self, template: str, method: str, status: int) -> tuple[Histogram, Counter]:
        key = (template, method, status)
        series = self._series.get(key)
        if series is None:
            series = (
                HTTP_LATENCY.labels(template, method),
                HTTP_REQUESTS.labels(template, method, str(status)),
            )
            if len(self._series) < _MAX_SERIES:
                self._series[key] = series
        return series

    def _limited(self, receive: Receive) -> Receive:
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_body:
                    raise _BodyTooLarge
            return message

        return limited
