"""Database access of the prediction service (sync SQLAlchemy; callers run it in threads)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from services.common.schemas import PredictionRecord, PredictionStatus
from services.prediction.records import Outcome

_status = sa.table(
    "prediction_status",
    sa.column("symbol"),
    sa.column("interval"),
    sa.column("status"),
    sa.column("required_days"),
    sa.column("available_days"),
    sa.column("detail"),
    sa.column("updated_at"),
)


def _prediction_row(record: PredictionRecord) -> dict[str, object]:
    return {
        "symbol": record.symbol,
        "interval": record.interval,
        "horizon": record.horizon,
        "as_of": record.as_of,
        "target_time": record.target_time,
        "predicted_price": record.predicted_price,
        "lower_bound": record.lower_bound,
        "upper_bound": record.upper_bound,
        "model": record.model,
        "model_version": record.model_version,
        "fallback_reason": record.fallback_reason,
        "generated_at": record.generated_at,
        "intervals": json.dumps([band.model_dump() for band in record.intervals])
        if record.intervals
        else None,
    }


_UPSERT_PREDICTIONS = sa.text(
    """
    INSERT INTO predictions (symbol, interval, horizon, as_of, target_time, predicted_price,
        lower_bound, upper_bound, model, model_version, fallback_reason, generated_at,
        intervals)
    SELECT * FROM unnest(CAST(:symbol AS text[]), CAST(:interval AS text[]),
        CAST(:horizon AS int[]), CAST(:as_of AS timestamptz[]),
        CAST(:target_time AS timestamptz[]), CAST(:predicted_price AS float8[]),
        CAST(:lower_bound AS float8[]), CAST(:upper_bound AS float8[]), CAST(:model AS text[]),
        CAST(:model_version AS text[]), CAST(:fallback_reason AS text[]),
        CAST(:generated_at AS timestamptz[]), CAST(:intervals AS jsonb[]))
    ON CONFLICT (symbol, interval, horizon, as_of) DO UPDATE SET
        target_time = excluded.target_time,
        predicted_price = excluded.predicted_price,
        lower_bound = excluded.lower_bound,
        upper_bound = excluded.upper_bound,
        model = excluded.model,
        model_version = excluded.model_version,
        fallback_reason = excluded.fallback_reason,
        generated_at = excluded.generated_at,
        intervals = excluded.intervals,
        abs_error = abs(predictions.actual_price - excluded.predicted_price)
    """
)


def upsert_predictions(conn: sa.Connection, records: Sequence[PredictionRecord]) -> None:
    """Idempotent on the primary key: re-forecasting a bar overwrites it (and rescores it).

    One statement for the whole batch (arrays through ``unnest``): an executemany of
    hundreds of rows cost ~10x more.
    """
    if not records:
        return
    rows = [_prediction_row(record) for record in records]
    conn.execute(_UPSERT_PREDICTIONS, {col: [row[col] for row in rows] for col in rows[0]})


def upsert_statuses(conn: sa.Connection, statuses: Sequence[PredictionStatus]) -> None:
    if not statuses:
        return
    stmt = pg_insert(_status)
    ex = stmt.excluded
    stmt = stmt.on_conflict_do_update(
        index_elements=["symbol", "interval"],
        set_={
            "status": ex.status,
            "required_days": ex.required_days,
            "available_days": ex.available_days,
            "detail": ex.detail,
            "updated_at": sa.func.now(),
        },
    )
    rows = [
        {
            "symbol": status.symbol,
            "interval": status.interval,
            "status": status.status,
            "required_days": status.required_days,
            "available_days": status.available_days,
            "detail": status.detail,
        }
        for status in statuses
    ]
    conn.execute(stmt, rows)


def save_outcomes(conn: sa.Connection, outcomes: Iterable[Outcome]) -> None:
    """Predictions and statuses of a batch, in the caller's transaction."""
    outcomes = list(outcomes)
    upsert_predictions(conn, [record for outcome in outcomes for record in outcome.records])
    # One status per key: the newest bar's outcome wins.
    latest: dict[tuple[str, str], Outcome] = {}
    for outcome in outcomes:
        key = (outcome.symbol, outcome.interval)
        if key not in latest or outcome.as_of >= latest[key].as_of:
            latest[key] = outcome
    upsert_statuses(conn, [outcome.status for outcome in latest.values()])


def forecast_complete(
    conn: sa.Connection, symbol: str, interval: str, as_of: datetime, n_horizons: int
) -> bool:
    """Every horizon of the forecast from ``as_of`` is stored (the durable end of the work)."""
    count = conn.execute(
        sa.text(
            "SELECT count(*) FROM predictions WHERE symbol = :s AND interval = :i "
            "AND as_of = :a AND horizon BETWEEN 1 AND :n"
        ),
        {"s": symbol, "i": interval, "a": as_of, "n": n_horizons},
    ).scalar_one()
    return int(count) >= n_horizons


def newest_as_of(conn: sa.Connection, symbol: str, interval: str) -> datetime | None:
    value: datetime | None = conn.execute(
        sa.text(
            "SELECT max(as_of) FROM predictions WHERE symbol = :s AND interval = :i AND horizon = 1"
        ),
        {"s": symbol, "i": interval},
    ).scalar()
    return value


def previous_tick_ts(conn: sa.Connection, symbol: str, before: datetime) -> datetime | None:
    """Timestamp of the newest stored tick of ``symbol`` before ``before``."""
    value: datetime | None = conn.execute(
        sa.text("SELECT max(ts) FROM price_ticks WHERE symbol = :s AND ts < :b"),
        {"s": symbol, "b": before},
    ).scalar()
    return value


def unstored(conn: sa.Connection, needs: dict[str, datetime]) -> set[str]:
    """Symbols whose tick at ``needs[symbol]`` (or a later one) the writer has not stored yet.

    The writer stores a partition in order, one transaction per batch, so once the tick that
    closed a bar is stored, every tick before it on the partition is stored too.
    """
    if not needs:
        return set()
    symbols = list(needs)
    rows = conn.execute(
        sa.text(
            "SELECT n.symbol FROM unnest(CAST(:symbols AS text[]), CAST(:ts AS timestamptz[])) "
            "AS n(symbol, ts) WHERE NOT EXISTS (SELECT 1 FROM price_ticks p "
            "WHERE p.symbol = n.symbol AND p.ts >= n.ts)"
        ),
        {"symbols": symbols, "ts": [needs[symbol] for symbol in symbols]},
    ).scalars()
    return set(rows)


def active_symbols(conn: sa.Connection) -> list[str]:
    """Active assets, plus every symbol that has a prediction status."""
    rows = conn.execute(
        sa.text(
            "SELECT symbol FROM assets WHERE active UNION "
            "SELECT DISTINCT symbol FROM prediction_status ORDER BY 1"
        )
    ).scalars()
    return list(rows)


def symbols_with_history(conn: sa.Connection, interval: str, min_days: int) -> list[str]:
    """Active symbols whose last forecast of ``interval`` saw at least ``min_days`` of history."""
    rows = conn.execute(
        sa.text(
            "SELECT st.symbol FROM prediction_status st LEFT JOIN assets a ON a.symbol = st.symbol "
            "WHERE st.interval = :i AND st.status = 'ok' AND st.available_days >= :n "
            "AND coalesce(a.active, true) ORDER BY 1"
        ),
        {"i": interval, "n": min_days},
    ).scalars()
    return list(rows)


def newest_versions(
    conn: sa.Connection, symbols: Sequence[str], interval: str
) -> dict[str, tuple[datetime, str]]:
    """Per symbol: the bar of its newest stored forecast of ``interval`` and its version."""
    if not symbols:
        return {}
    rows = conn.execute(
        sa.text(
            "SELECT s.symbol, p.as_of, p.model_version "
            "FROM unnest(CAST(:symbols AS text[])) AS s(symbol) CROSS JOIN LATERAL ("
            "  SELECT as_of, model_version FROM predictions WHERE symbol = s.symbol"
            "  AND interval = :i AND horizon = 1 ORDER BY as_of DESC LIMIT 1) p"
        ),
        {"symbols": list(symbols), "i": interval},
    ).all()
    return {str(symbol): (as_of, str(version)) for symbol, as_of, version in rows}


def latest_forecasts(
    conn: sa.Connection, symbols: Sequence[str], interval: str
) -> list[PredictionRecord]:
    """The newest stored forecast (every horizon) of each symbol for ``interval``."""
    if not symbols:
        return []
    rows = conn.execute(
        sa.text(
            "SELECT p.symbol, p.interval, p.horizon, p.as_of, p.target_time, p.predicted_price, "
            "p.lower_bound, p.upper_bound, p.model, p.model_version, p.fallback_reason, "
            "p.generated_at, p.intervals FROM predictions p JOIN ("
            "  SELECT symbol, max(as_of) AS as_of FROM predictions"
            "  WHERE symbol = ANY(:symbols) AND interval = :i AND horizon = 1 GROUP BY symbol"
            ") m ON m.symbol = p.symbol AND m.as_of = p.as_of "
            "WHERE p.interval = :i ORDER BY p.symbol, p.horizon"
        ),
        {"symbols": list(symbols), "i": interval},
    ).mappings()
    return [PredictionRecord.model_validate(dict(row)) for row in rows]


def statuses(conn: sa.Connection, symbols: Sequence[str]) -> list[PredictionStatus]:
    rows = conn.execute(
        sa.text(
            "SELECT symbol, interval, status, required_days, available_days, detail "
            "FROM prediction_status WHERE symbol = ANY(:symbols)"
        ),
        {"symbols": list(symbols)},
    ).mappings()
    return [PredictionStatus.model_validate(dict(row)) for row in rows]
