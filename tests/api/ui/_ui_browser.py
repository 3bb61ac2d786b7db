"""The dashboard's browser tests: the API on a real uvicorn server in a thread, headless Debian
chromium through Playwright, and the steps every test shares."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import redis
from _api_helpers import serve_in_thread
from _ui_seed import in_thread
from playwright.sync_api import Page, expect
from sqlalchemy.engine import Engine

from services.api.main import create_app
from services.common.config import Settings
from services.common.kafka import ensure_topics

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
CLIENT_ID = "dashboard-viewer"
SECRET = "viewer-secret-for-tests-only"
WAIT_MS = 30_000  # bounded waits for conditions, never timed assertions
LIVE_WAIT_MS = 60_000  # the stream, or polling (every 5 s; every 30 s while the stream is live)


@dataclass
class Server:
    base: str
    settings: Settings


@contextmanager
def serve(settings: Settings) -> Iterator[Server]:
    """``create_app`` under uvicorn on a free port, in a thread with its own event loop; the
    app's lifespan (whatever it starts, the live stream's feed included) runs on that loop."""
    in_thread(ensure_topics(settings))
    with serve_in_thread(create_app(settings)) as base:
        yield Server(base, settings)


@dataclass
class Dashboard:
    server: Server
    engine: Engine
    redis: redis.Redis
    as_of: datetime
    last_price: float

    @property
    def base(self) -> str:
        return self.server.base

    @property
    def url(self) -> str:
        return f"{self.server.base}/ui/"


def sign_in(page: Page, dashboard: Dashboard) -> None:
    page.goto(dashboard.url)
    page.get_by_label("Client id").fill(CLIENT_ID)
    page.get_by_label("Client secret").fill(SECRET)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#assets-table tbody tr")).to_have_count(2, timeout=WAIT_MS)


def assert_clean(page: Page) -> None:
    assert page.evaluate("window.__csp") == []
    assert page.problems == []  # type: ignore[attr-defined]
    assert page.evaluate("localStorage.length") == 0
