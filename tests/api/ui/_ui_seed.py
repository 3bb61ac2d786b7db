"""The data the dashboard's tests show, written as the services write it: ticks through COPY
(bar maintenance runs as for live ticks), forecast runs stored, cached and published, the
ERR_PRED_001 state, model versions."""

from __future__ import annotations

import asyncio
import io
import json
import math
import random
import threading
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.cache import prediction_key
from services.common.config import Settings
from services.common.db import copy_ticks
from services.common.kafka import make_producer

LEVELS = (0.5, 0.8, 0.95)
Z = {0.5: 0.674, 0.8: 1.2816, 0.95: 1.96}


def in_thread(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion on a loop of its own (the tests here are synchronous)."""
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(coro)))
    thread.start()
    thread.join(60)
    return out[0] if out else None


async def _publish(settings: Settings, records: list[dict[str, Any]]) -> None:
    producer = make_producer(settings, linger_ms=0)
    await producer.start()
    try:
        for r in records:
            await producer.send_and_wait(
                settings.topic_predictions, json.dumps(r).encode(), key=r["symbol"].encode()
            )
    finally:
        await producer.stop()


def publish_records(settings: Settings, records: list[dict[str, Any]]) -> None:
    """What the prediction service publishes on ``predictions`` (the live stream's feed)."""
    in_thread(_publish(settings, records))


def hour_floor(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def add_ticks(
    engine: Engine, symbol: str, hours: int, *, start_price: float, end: datetime
) -> float:
    """Three ticks per hour for ``hours`` hours up to ``end`` (a seeded random walk with a
    slow wave, so candles have bodies and wicks); through COPY, so the bar maintenance runs as
    for live ticks. Returns the last price."""
    rng = random.Random(symbol)
    buf = io.StringIO()
    price = start_price
    first = hour_floor(end) - timedelta(hours=hours - 1)
    for i in range(hours):
        hour = first + timedelta(hours=i)
        drift = math.sin(i / 90.0) * 0.0008
        for minute in (5, 25, 50):
            price *= math.exp(drift + rng.gauss(0, 0.0025))
            ts = hour + timedelta(minutes=minute)
            buf.write(f"{symbol}\t{ts.isoformat()}\t{price:.4f}\t1\ttest\n")
    with engine.begin() as conn:
        copy_ticks(conn, buf.getvalue())
    return price


def add_asset(engine: Engine, symbol: str, name: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO assets (symbol, name, asset_class, active) "
                "VALUES (:s, :n, 'crypto', true) ON CONFLICT DO NOTHING"
            ),
            {"s": symbol, "n": name},
        )


def forecast_records(
    symbol: str,
    as_of: datetime,
    last: float,
    *,
    horizons: int = 24,
    model: str = "lstm",
    version: str = "lstm-v3",
    drift: float = 0.001,
    generated_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The 1h forecast run as the prediction service records it (per-level ``intervals`` and
    ``stale`` included, as the contract has them)."""
    generated = generated_at or datetime.now(UTC)
    out = []
    for h in range(1, horizons + 1):
        mid = last * (1 + drift * h)
        sigma = last * 0.004 * math.sqrt(h)
        intervals = [
            {
                "level": lv,
                "lower": round(mid - Z[lv] * sigma, 4),
                "upper": round(mid + Z[lv] * sigma, 4),
            }
            for lv in LEVELS
        ]
        out.append(
            {
                "symbol": symbol,
                "interval": "1h",
                "horizon": h,
                "as_of": as_of.isoformat(),
                "target_time": (as_of + timedelta(hours=h)).isoformat(),
                "predicted_price": round(mid, 4),
                "lower_bound": intervals[1]["lower"],
                "upper_bound": intervals[1]["upper"],
                "confidence_level": 0.8,
                "model": model,
                "model_version": version,
                "fallback_reason": None,
                "generated_at": generated.isoformat(),
                "intervals": intervals,
                "stale": False,
                "as_of_age_s": (generated - as_of - timedelta(hours=1)).total_seconds(),
            }
        )
    return out


def cache_records(client: redis.Redis, records: list[dict[str, Any]]) -> None:
    """What the prediction service caches under ``prediction:{symbol}:{interval}:{horizon}``."""
    for r in records:
        key = prediction_key(r["symbol"], r["interval"], r["horizon"])
        client.set(key, json.dumps(r).encode(), ex=3600)


def store_records(
    engine: Engine, records: list[dict[str, Any]], actual: float | None = None
) -> None:
    cols = (
        "symbol, interval, horizon, as_of, target_time, predicted_price, lower_bound, "
        "upper_bound, model, model_version, fallback_reason, generated_at, actual_price, "
        "abs_error, naive_abs_error"
    )
    rows = [
        {
            **{
                k: r[k]
                for k in r
                if k not in ("intervals", "stale", "as_of_age_s", "confidence_level")
            },
            "actual_price": actual,
            "abs_error": abs(actual - r["predicted_price"]) if actual is not None else None,
            "naive_abs_error": abs(actual) * 0.006 if actual is not None else None,
        }
        for r in records
    ]
    values = ", ".join(f":{c.strip()}" for c in cols.split(","))
    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO predictions ({cols}) VALUES ({values})"), rows)


def set_insufficient(engine: Engine, symbol: str, required: int, available: int) -> None:
    with engine.begin() as conn:
        for interval in ("1h", "1d"):
            conn.execute(
                sa.text(
                    "INSERT INTO prediction_status (symbol, interval, status, required_days, "
                    "available_days, detail) VALUES (:s, :i, 'insufficient_history', :r, :a, "
                    "'short history')"
                ),
                {"s": symbol, "i": interval, "r": required, "a": available},
            )


def add_models(engine: Engine, symbol: str) -> None:
    now = datetime.now(UTC)
    rows = [
        (
            "lstm",
            2,
            "retired",
            {"val_mase": 0.99, "val_mape": 1.9},
            now - timedelta(days=20),
            now - timedelta(days=3),
        ),
        ("lstm", 3, "champion", {"val_mase": 0.95, "val_mape": 1.7}, now - timedelta(days=3), None),
        (
            "arima",
            1,
            "champion",
            {"val_mase": 0.98, "val_mape": 1.8},
            now - timedelta(days=9),
            None,
        ),
    ]
    with engine.begin() as conn:
        for model, version, status, metrics, promoted, retired in rows:
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (model, scope, interval, version, status, metrics, "
                    "promoted_at, retired_at) VALUES (:m, :s, '1h', :v, :st, CAST(:mt AS jsonb), "
                    ":p, :r)"
                ),
                {
                    "m": model,
                    "s": symbol,
                    "v": version,
                    "st": status,
                    "mt": json.dumps(metrics),
                    "p": promoted,
                    "r": retired,
                },
            )
