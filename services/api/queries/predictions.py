"""Predictions: the latest forecast (cache-miss path), its history and accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.api.params import Paging
from services.api.queries.paging import Where, page
from services.common.schemas import PredictionRecord, PredictionStatus

RECORD_COLUMNS = (
    "symbol, interval, horizon, as_of, target_time, predicted_price, lower_bound, "
    "upper_bound, model, model_version, fallback_reason, generated_at, intervals"
)

# One round trip: is the symbol known, its latest forecast, and why there may be none.
_LATEST = sa.text(
    f"""
    SELECT EXISTS (SELECT 1 FROM assets WHERE symbol = :symbol) AS known,
           p.*, st.status AS st_status, st.required_days, st.available_days, st.detail,
           st.updated_at AS st_updated_at
    FROM (SELECT 1) one
    LEFT JOIN LATERAL (
        SELECT {RECORD_COLUMNS} FROM predictions
        WHERE symbol = :symbol AND interval = :interval AND horizon = :horizon
        ORDER BY as_of DESC LIMIT 1
    ) p ON true
    LEFT JOIN prediction_status st ON st.symbol = :symbol AND st.interval = :interval
    """
)


@dataclass(frozen=True)
class Latest:
    known: bool
    record: PredictionRecord | None
    status: PredictionStatus | None
    status_updated_at: datetime | None


def _utc(value: datetime | None) -> datetime | None:
    return value.astimezone(UTC) if value is not None else None


def record_from_row(row: Any) -> PredictionRecord:
    return PredictionRecord(
        symbol=row["symbol"],
        interval=row["interval"],
        horizon=row["horizon"],
        as_of=_utc(row["as_of"]),
        target_time=_utc(row["target_time"]),
        predicted_price=row["predicted_price"],
        lower_bound=row["lower_bound"],
        upper_bound=row["upper_bound"],
        model=row["model"],
        model_version=row["model_version"],
        fallback_reason=row["fallback_reason"],
        generated_at=_utc(row["generated_at"]),
        intervals=row["intervals"],
    )


def latest(conn: Connection, symbol: str, interval: str, horizon: int) -> Latest:
    row = (
        conn.execute(_LATEST, {"symbol": symbol, "interval": interval, "horizon": horizon})
        .mappings()
        .one()
    )
    record = record_from_row(row) if row["as_of"] is not None else None
    status = None
    if row["st_status"] is not None:
        status = PredictionStatus(
            symbol=symbol,
            interval=interval,
            status=row["st_status"],
            required_days=row["required_days"],
            available_days=row["available_days"],
            detail=row["detail"],
        )
    return Latest(bool(row["known"]), record, status, _utc(row["st_updated_at"]))


def history(
    conn: Connection,
    symbol: str,
    interval: str,
    horizon: int | None,
    paging: Paging,
    *,
    start: datetime | None,
    end: datetime | None,
) -> tuple[int, list[dict[str, Any]]]:
    where = Where("symbol = :symbol", "interval = :interval", symbol=symbol, interval=interval)
    where.add("horizon = :horizon", horizon=horizon)
    where.add("as_of >= :start", start=start)
    where.add("as_of < :end", end=end)
    columns = f"{RECORD_COLUMNS}, actual_price, abs_error, naive_abs_error"
    order_by = "as_of DESC, horizon"
    total, rows = page(conn, "predictions", columns, where, order_by, paging)
    for item in rows:
        for col in ("as_of", "target_time", "generated_at"):
            item[col] = _utc(item[col])
    return total, rows


_ACCURACY = """
    SELECT {group} AS model,
           count(*) AS evaluated,
           avg(abs_error) AS mae,
           100 * avg(abs_error / nullif(abs(actual_price), 0)) AS mape,
           avg(abs_error) / nullif(avg(naive_abs_error), 0) AS mase,
           avg(CASE WHEN actual_price BETWEEN lower_bound AND upper_bound
                    THEN 1.0 ELSE 0.0 END) AS coverage
    FROM predictions
    WHERE {where}
    {group_by}
"""


# The calibration table: nominal level against observed coverage, with the interval score
# (Winkler) and MSIS (the score over the naive forecast's MAE on the same targets).
_BY_LEVEL = """
    SELECT {group} AS model, (b->>'level')::float8 AS level, count(*) AS evaluated,
           avg(CASE WHEN actual_price BETWEEN (b->>'lower')::float8 AND (b->>'upper')::float8
                    THEN 1.0 ELSE 0.0 END) AS coverage,
           avg((b->>'upper')::float8 - (b->>'lower')::float8
               + 2 / (1 - (b->>'level')::float8)
                   * greatest((b->>'lower')::float8 - actual_price, 0)
               + 2 / (1 - (b->>'level')::float8)
                   * greatest(actual_price - (b->>'upper')::float8, 0)) AS interval_score,
           avg(naive_abs_error) AS naive_mae
    FROM predictions CROSS JOIN LATERAL jsonb_array_elements(intervals) b
    WHERE {where} AND intervals IS NOT NULL
    GROUP BY {group_by} ORDER BY 1, 2
"""


def _levels(conn: Connection, clause: str, params: dict[str, Any], per_model: bool) -> Any:
    group, group_by = ("model", "model, 2") if per_model else ("'all'", "2")
    sql = _BY_LEVEL.format(group=group, where=clause, group_by=group_by)
    out: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(sa.text(sql), params).mappings():
        score = None if row["interval_score"] is None else float(row["interval_score"])
        naive = None if row["naive_mae"] is None else float(row["naive_mae"])
        out.setdefault(str(row["model"]), []).append(
            {
                "level": float(row["level"]),
                "evaluated": int(row["evaluated"]),
                "coverage": None if row["coverage"] is None else float(row["coverage"]),
                "interval_score": score,
                "msis": score / naive if score is not None and naive else None,
            }
        )
    return out


def accuracy(
    conn: Connection, symbol: str, interval: str, horizon: int | None, window_days: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Overall and per-model error of forecasts whose actual price is known, each with its
    calibration table per level (``by_level``)."""
    where = [
        "symbol = :symbol",
        "interval = :interval",
        "actual_price IS NOT NULL",
        "abs_error IS NOT NULL",
        "target_time >= now() - make_interval(days => :days)",
    ]
    params: dict[str, Any] = {"symbol": symbol, "interval": interval, "days": window_days}
    if horizon is not None:
        where.append("horizon = :horizon")
        params["horizon"] = horizon
    clause = " AND ".join(where)
    overall = (
        conn.execute(sa.text(_ACCURACY.format(group="'all'", where=clause, group_by="")), params)
        .mappings()
        .one()
    )
    per_model = conn.execute(
        sa.text(
            _ACCURACY.format(group="model", where=clause, group_by="GROUP BY model ORDER BY model")
        ),
        params,
    ).mappings()
    overall_levels = _levels(conn, clause, params, per_model=False)
    model_levels = _levels(conn, clause, params, per_model=True)
    rows = [_floats(row) for row in per_model]
    for row in rows:
        row["by_level"] = model_levels.get(row["model"], [])
    return {**_floats(overall), "by_level": overall_levels.get("all", [])}, rows


def _floats(row: Any) -> dict[str, Any]:
    out = dict(row)
    for key in ("mae", "mape", "mase", "coverage"):
        if out.get(key) is not None:
            out[key] = float(out[key])
    out["evaluated"] = int(out["evaluated"] or 0)
    return out
