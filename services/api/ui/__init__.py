"""The web dashboard: static files under ``/ui/`` with a strict Content Security Policy.

The page is plain JavaScript modules (``static/``); the charting library is installed by
``make ui`` (npm, pinned by ``web/package-lock.json``) into ``static/vendor/``, which git
ignores. Only ``/ui/`` answers carry the dashboard's security headers: every other route of
the API keeps its own headers unchanged.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
VENDOR_FILE = STATIC_DIR / "vendor" / "lightweight-charts.js"
MOUNT = "/ui"

# A Host header is reflected into connect-src only when it is a plain host[:port].
_HOST = re.compile(rb"^[A-Za-z0-9.-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")

_BASE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; "
    "object-src 'none'; connect-src 'self'"
)


def content_security_policy(host: bytes | None) -> bytes:
    """The dashboard's CSP: scripts, styles and fetches from this origin only (its WebSocket
    stream included), no inline script or style, no framing."""
    policy = _BASE_POLICY.encode()
    if host and _HOST.match(host):
        policy += b" ws://" + host + b" wss://" + host
    return policy


_STATIC_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=(), payment=()"),
    # Revalidate every time (ETag / Last-Modified make that cheap): a new release is seen
    # at once and no stale page keeps talking to a newer API.
    (b"cache-control", b"no-cache"),
)


class DashboardHeaders:
    """Wraps the static files app: every answer under ``/ui`` gets the dashboard's headers,
    and the request is counted under the route ``/ui`` (not "unmatched") in the metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.route: Any = None  # the Mount, once mounted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.route is not None:
            scope["route"] = self.route  # read back by ApiMiddleware for the route label
        host = next((value for name, value in scope["headers"] if name == b"host"), None)
        csp = content_security_policy(host)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() != b"cache-control"
                ]
                headers.append((b"content-security-policy", csp))
                headers.extend(_STATIC_HEADERS)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_ui(app: FastAPI) -> None:
    """Serve the dashboard at ``/ui/``; warn (once, at start) when the chart library is not
    built, in which case the page says so instead of drawing charts."""
    if not VENDOR_FILE.is_file():
        log.warning("dashboard chart library missing (%s): run `make ui`", VENDOR_FILE)
    dashboard = DashboardHeaders(StaticFiles(directory=STATIC_DIR, html=True))
    app.mount(MOUNT, dashboard, name="ui")
    dashboard.route = app.router.routes[-1]
