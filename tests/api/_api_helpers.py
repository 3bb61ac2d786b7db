"""The route inventory and data helpers for the API tests (rows written straight into the DB)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from services.common import infra

# --- the route inventory -------------------------------------------------------------

# (method, path template, example path, required scope; None = any valid token)
PROTECTED: list[tuple[str, str, str, str | None]] = [
    ("GET", "/api/v1/assets", "/api/v1/assets", "prices:read"),
    ("GET", "/api/v1/assets/{symbol}", "/api/v1/assets/BTC-USD", "prices:read"),
    ("GET", "/api/v1/assets/{symbol}/bars", "/api/v1/assets/BTC-USD/bars", "prices:read"),
    ("GET", "/api/v1/predictions/{symbol}", "/api/v1/predictions/BTC-USD", "predictions:read"),
    (
        "GET",
        "/api/v1/predictions/{symbol}/history",
        "/api/v1/predictions/BTC-USD/history",
        "predictions:read",
    ),
    (
        "GET",
        "/api/v1/predictions/{symbol}/accuracy",
        "/api/v1/predictions/BTC-USD/accuracy",
        "predictions:read",
    ),
    ("GET", "/api/v1/models", "/api/v1/models", "models:read"),
    ("GET", "/api/v1/models/champions", "/api/v1/models/champions", "models:read"),
    ("GET", "/api/v1/models/{version_id}", "/api/v1/models/1", "models:read"),
    ("POST", "/api/v1/models/retrain", "/api/v1/models/retrain", "models:write"),
    ("POST", "/api/v1/auth/revoke", "/api/v1/auth/revoke", None),
]
# Live streams: the scope depends on the channels asked for (tests/api/stream covers them).
STREAMS = {("GET", "/api/v1/stream/sse")}
PUBLIC = {
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/refresh"),
    ("GET", "/.well-known/jwks.json"),
}


@contextmanager
def serve_in_thread(app: FastAPI, start_timeout_s: float = 30.0) -> Iterator[str]:
    """``app`` under uvicorn on a free port (lifespan on), in a thread with its own event
    loop; yields its base URL and stops the server on the way out."""
    port = infra.free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout_s
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the API server did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_error(r: httpx.Response, status: int, code: str) -> None:
    """``r`` is the API's error shape with this status and catalogue code."""
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


# --- data helpers ---------------------------------------------------------------------


def add_asset(engine: Engine, symbol: str, **cols: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO assets (symbol, name, asset_class, active) "
                "VALUES (:s, :n, :c, :a) ON CONFLICT DO NOTHING"
            ),
            {
                "s": symbol,
                "n": cols.get("name", symbol),
                "c": cols.get("asset_class", "crypto"),
                "a": cols.get("active", True),
            },
        )


def add_prediction(
    engine: Engine,
    symbol: str,
    *,
    interval: str = "1d",
    horizon: int = 1,
    as_of: datetime | None = None,
    price: float = 100.0,
    model: str = "arima",
    actual: float | None = None,
    naive_error: float | None = None,
    generated_at: datetime | None = None,
    intervals: list[dict[str, float]] | None = None,
) -> dict[str, Any]:
    as_of = as_of or datetime(2026, 1, 10, tzinfo=UTC)
    step = timedelta(hours=1) if interval == "1h" else timedelta(days=1)
    row = {
        "symbol": symbol,
        "interval": interval,
        "horizon": horizon,
        "as_of": as_of,
        "target_time": as_of + step * horizon,
        "predicted_price": price,
        "lower_bound": price * 0.9,
        "upper_bound": price * 1.1,
        "model": model,
        "model_version": f"{model}-v1",
        "fallback_reason": None,
        "generated_at": generated_at or as_of + timedelta(minutes=1),
        "actual_price": actual,
        "abs_error": abs(actual - price) if actual is not None else None,
        "naive_abs_error": naive_error,
        "intervals": None if intervals is None else json.dumps(intervals),
    }
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO predictions (symbol, interval, horizon, as_of, target_time, "
                "predicted_price, lower_bound, upper_bound, model, model_version, "
                "fallback_reason, generated_at, actual_price, abs_error, naive_abs_error, "
                "intervals) "
                "VALUES (:symbol, :interval, :horizon, :as_of, :target_time, :predicted_price, "
                ":lower_bound, :upper_bound, :model, :model_version, :fallback_reason, "
                ":generated_at, :actual_price, :abs_error, :naive_abs_error, "
                "CAST(:intervals AS jsonb))"
            ),
            row,
        )
    return row


def set_status(
    engine: Engine, symbol: str, status: str, required: int | None, available: int | None
) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO prediction_status (symbol, interval, status, required_days, "
                "available_days, detail) VALUES (:s, '1d', :st, :r, :a, 'test') "
                "ON CONFLICT (symbol, interval) DO UPDATE SET status = EXCLUDED.status, "
                "required_days = EXCLUDED.required_days, "
                "available_days = EXCLUDED.available_days, updated_at = now()"
            ),
            {"s": symbol, "st": status, "r": required, "a": available},
        )
