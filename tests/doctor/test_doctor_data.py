"""Data trust: bar maintenance, stale prices, insufficient history, accuracy degradation."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.doctor.model import Finding

Diagnose = Callable[..., dict[str, Any]]
Check = Callable[[str], Finding]


@pytest.fixture
def check(settings: Settings, diagnose_map: Diagnose) -> Check:
    """``check("data.stale_prices")``: that one check's finding under the test's settings."""
    return lambda name: diagnose_map(settings, name)[name]


def _asset(conn: sa.Connection, symbol: str, active: bool = True) -> None:
    conn.execute(
        sa.text("INSERT INTO assets (symbol, active) VALUES (:s, :a)"), {"s": symbol, "a": active}
    )


def _execute(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(sa.text(sql))


def _tick(conn: sa.Connection, symbol: str, age: str) -> None:
    conn.execute(
        sa.text(
            "INSERT INTO price_ticks (symbol, ts, price, volume, source) "
            "VALUES (:s, now() - CAST(:age AS interval), 100, 1, 'test')"
        ),
        {"s": symbol, "age": age},
    )


def test_stale_prices_named_per_symbol(clean_db: Engine, check: Check) -> None:
    with clean_db.begin() as conn:
        for symbol in ("BTC-USD", "ETH-USD", "NEW-USD", "OLD-USD"):
            _asset(conn, symbol, active=symbol != "OLD-USD")
        _tick(conn, "BTC-USD", "10 seconds")
        _tick(conn, "ETH-USD", "2 hours")
        _tick(conn, "OLD-USD", "30 days")
    stale = check("data.stale_prices")
    assert stale.status == "fail"
    assert "2/3 active assets stale" in stale.evidence
    assert "ETH-USD 2.0 h" in stale.evidence and "NEW-USD no ticks" in stale.evidence
    assert "BTC-USD" not in stale.evidence and "OLD-USD" not in stale.evidence
    assert "kafka.consumer_lag" in stale.fix and "ERR_EXT" in stale.fix

    _execute(clean_db, "UPDATE assets SET active = false WHERE symbol <> 'BTC-USD'")
    fresh = check("data.stale_prices")
    assert fresh.status == "ok" and "1 active assets" in fresh.evidence


def test_no_assets_warns(clean_db: Engine, check: Check) -> None:
    stale = check("data.stale_prices")
    assert stale.status == "warn" and "no active assets" in stale.evidence


def test_insufficient_history_and_prediction_errors(clean_db: Engine, check: Check) -> None:
    _execute(
        clean_db,
        "INSERT INTO prediction_status (symbol, interval, status, required_days, "
        "available_days) VALUES ('NEW-USD', '1d', 'insufficient_history', 30, 10), "
        "('BTC-USD', '1d', 'ok', NULL, NULL)",
    )
    found = check("data.insufficient_history")
    assert found.status == "warn"
    assert found.evidence == "NEW-USD 1d: Required 30 days, Available 10 days"
    assert "pricecast backfill" in found.fix

    _execute(
        clean_db,
        "INSERT INTO prediction_status (symbol, interval, status, detail) "
        "VALUES ('ETH-USD', '1h', 'error', 'model failed to load')",
    )
    errors = check("data.insufficient_history")
    assert errors.status == "fail" and "model failed to load" in errors.evidence
    assert "ERR_PRED_003" in errors.fix


def _scored(conn: sa.Connection, symbol: str, model: str, n: int, err: float, naive: float) -> None:
    conn.execute(
        sa.text(
            """
            INSERT INTO predictions (symbol, interval, horizon, as_of, target_time,
                predicted_price, lower_bound, upper_bound, model, model_version,
                actual_price, abs_error, naive_abs_error)
            SELECT :s, '1d', 1, d, d + interval '1 day', 100, 90, 110, :m, 'v1',
                   100 + :e, :e, :n
            FROM generate_series(now() - make_interval(days => :k), now() - interval '1 day',
                                 interval '1 day') AS d
            """
        ),
        {"s": symbol, "m": model, "e": err, "n": naive, "k": n},
    )


def test_model_accuracy_degradation(clean_db: Engine, check: Check) -> None:
    metrics = {"mase": 0.9, "per_series": {"BTC-USD": {"mase": 0.5}}}
    with clean_db.begin() as conn:
        _asset(conn, "BTC-USD")
        _asset(conn, "ETH-USD")
        conn.execute(
            sa.text(
                "INSERT INTO model_versions (model, scope, interval, version, status, metrics, "
                "promoted_at) VALUES ('lstm', '*', '1d', 1, 'champion', CAST(:m AS jsonb), now())"
            ),
            {"m": json.dumps(metrics)},
        )
        _scored(conn, "BTC-USD", "lstm", 25, err=2.0, naive=2.0)  # MASE 1.0 vs 0.5: x2
        _scored(conn, "ETH-USD", "arima", 25, err=1.0, naive=1.0)  # MASE 1.0 vs naive 1.0
    found = check("models.accuracy")
    assert found.status == "warn"
    assert "BTC-USD 1d lstm: MASE 1.00 vs validation 0.50 (x2.0, n=25)" in found.evidence
    assert "ETH-USD" not in found.evidence
    assert "pricecast train --symbols" in found.fix and "rollback" in found.fix

    _execute(
        clean_db,
        "INSERT INTO retrain_requests (symbol, interval, reason) VALUES ('BTC-USD', '1d', 'drift')",
    )
    queued = check("models.accuracy")
    assert "retrain queued" in queued.evidence


def test_model_accuracy_too_few_samples_is_ok(clean_db: Engine, check: Check) -> None:
    with clean_db.begin() as conn:
        _asset(conn, "BTC-USD")
        _scored(conn, "BTC-USD", "arima", 5, err=9.0, naive=1.0)
    found = check("models.accuracy")
    assert found.status == "ok" and "no asset has 20+ scored forecasts" in found.evidence


def test_storage_path_and_disabled_maintenance(clean_db: Engine, check: Check) -> None:
    with clean_db.begin() as conn:
        _tick(conn, "BTC-USD", "5 seconds")
        path = conn.execute(
            sa.text("SELECT value FROM pricecast_meta WHERE key = 'storage_path'")
        ).scalar()
    ok = check("storage.aggregates")
    assert ok.status == "ok" and f"path {path}" in ok.evidence
    if path != "postgres":
        return  # the trigger exists on the plain path only
    _execute(clean_db, "ALTER TABLE price_ticks DISABLE TRIGGER pricecast_bars_maintain")
    try:
        off = check("storage.aggregates")
    finally:
        _execute(clean_db, "ALTER TABLE price_ticks ENABLE TRIGGER pricecast_bars_maintain")
    assert off.status == "fail" and "disabled" in off.evidence
    assert "ENABLE TRIGGER pricecast_bars_maintain" in off.fix


def test_model_coverage_names_series_off_their_level(clean_db: Engine, check: Check) -> None:
    with clean_db.begin() as conn:
        for symbol, coverage in (("BTC-USD", 0.62), ("ETH-USD", 0.81)):
            for horizon in (1, 2):
                conn.execute(
                    sa.text(
                        "INSERT INTO forecast_calibration (symbol, interval, horizon, level, "
                        "alpha, scored, misses, coverage, last_target) VALUES "
                        "(:s, '1d', :h, 0.8, 0.1, 40, 15, :c, now())"
                    ),
                    {"s": symbol, "h": horizon, "c": coverage},
                )
    found = check("models.coverage")
    assert found.status == "warn"
    assert "BTC-USD 1d: 62% at 0.8" in found.evidence and "ETH-USD" not in found.evidence
    assert "forecast_calibration" in found.fix
    _execute(clean_db, "DELETE FROM forecast_calibration WHERE symbol = 'BTC-USD'")
    ok = check("models.coverage")
    assert ok.status == "ok" and "1 series cover 70%-90%" in ok.evidence
