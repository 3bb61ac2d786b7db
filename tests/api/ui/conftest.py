"""Browser fixtures: the API on a real server (real PostgreSQL, Redis and broker), seeded with
BTC-USD (60 days of hourly bars, a 1h forecast run with three levels, scored history, model
versions) and NEW-USD (10 days: ERR_PRED_001), and a headless chromium page at 1280x800.
A failing test leaves a screenshot in tests/api/ui/artifacts/."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from _ui_browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, CLIENT_ID, SECRET, Dashboard, serve
from _ui_seed import (
    add_asset,
    add_models,
    add_ticks,
    cache_records,
    forecast_records,
    hour_floor,
    set_insufficient,
    store_records,
)
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy.engine import Engine

from services.api.core.security import hash_secret
from services.api.queries.auth import create_client
from services.api.ui import VENDOR_FILE
from services.common.config import Settings

TOPICS = ("topic_prices", "topic_prices_dlq", "topic_predictions", "topic_model_events")


@pytest.fixture
def dashboard(
    api_settings: Settings, clean_db: Engine, redis_client: redis.Redis
) -> Iterator[Dashboard]:
    assert VENDOR_FILE.is_file(), "the chart library is not built: run `make ui`"
    tag = uuid.uuid4().hex[:8]  # topics of its own on the session's broker
    settings = api_settings.model_copy(
        update={
            "rate_limit_per_minute": 100_000,
            **{t: f"{getattr(api_settings, t)}-{tag}" for t in TOPICS},
        }
    )
    now = datetime.now(UTC)
    add_asset(clean_db, "BTC-USD", "Bitcoin")
    add_asset(clean_db, "NEW-USD", "Newcoin")
    last = add_ticks(clean_db, "BTC-USD", 60 * 24, start_price=40_000.0, end=now)
    add_ticks(clean_db, "NEW-USD", 10 * 24, start_price=2.0, end=now)
    as_of = hour_floor(now) - timedelta(hours=1)
    for day in range(30, 0, -1):  # a month of scored one-step forecasts
        past = as_of - timedelta(days=day)
        store_records(
            clean_db, forecast_records("BTC-USD", past, last, horizons=1), actual=last * 1.002
        )
    run = forecast_records("BTC-USD", as_of, last)
    store_records(clean_db, run)
    cache_records(redis_client, run)
    set_insufficient(clean_db, "NEW-USD", required=30, available=10)
    add_models(clean_db, "BTC-USD")
    with clean_db.begin() as conn:
        create_client(
            conn,
            CLIENT_ID,
            hash_secret(SECRET),
            ["prices:read", "predictions:read", "models:read"],
            "dashboard tests",
        )
    with serve(settings) as server:
        yield Dashboard(server, clean_db, redis_client, as_of, last)


# Per module, not per session: Playwright's sync API holds an event loop on the main thread
# while it runs, and async tests after these must find none.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    pg.on(
        "console",
        lambda m: (
            problems.append(f"console: {m.text}")
            if m.type == "error" and "Content Security Policy" in m.text
            else None
        ),
    )
    pg.add_init_script(
        "window.__csp = [];"
        "document.addEventListener('securitypolicyviolation',"
        " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));"
    )
    pg.problems = problems  # type: ignore[attr-defined]
    yield pg
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report
