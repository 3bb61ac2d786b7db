"""The one query layer for OHLCV bars (``price_1m``, ``price_1h``, ``price_1d``).

Prediction and the API read bars only through this module, never raw ticks. The relations
have the same columns and results on both storage paths (TimescaleDB continuous aggregates or
the plain-PostgreSQL incrementally maintained tables), so nothing here depends on the path.

A year of hourly bars is ~8,800 rows: they travel as one binary array per column (see
``get_bar_columns``), not as 70,000 text values for psycopg2 to parse one by one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import sqlalchemy as sa

RELATIONS: Final[dict[str, str]] = {"1m": "price_1m", "1h": "price_1h", "1d": "price_1d"}
INTERVALS: Final[tuple[str, ...]] = tuple(RELATIONS)
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar. ``bucket`` is the UTC start of the interval; ``vwap`` is None when the
    bar's volume is zero."""

    bucket: datetime
    open: float
    high: float
    low: float
    close: float
    volume: float
    trade_count: int
    vwap: float | None


def relation(interval: str) -> str:
    """The relation holding ``interval`` bars (whitelisted: safe to put in SQL)."""
    try:
        return RELATIONS[interval]
    except KeyError:
        raise ValueError(f"unknown interval {interval!r}; expected one of {INTERVALS}") from None


def _fetch(conn: sa.Connection, sql: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    cursor = conn.connection.cursor()
    try:
        cursor.execute(sql, params)
        return list(cursor.fetchall())
    finally:
        cursor.close()


# The server packs each column into one binary array (array_send): psycopg2 only speaks the
# text protocol, and parsing ~70k floats and timestamps as text costs several times the query.
# Decoding the binary arrays is one numpy call per column.
_PACKED_COLUMNS: Final = (
    ("bucket", "extract(epoch FROM bucket)::int8", ">i8"),
    ("open", "open", ">f8"),
    ("high", "high", ">f8"),
    ("low", "low", ">f8"),
    ("close", "close", ">f8"),
    ("volume", "volume", ">f8"),
    ("trade_count", "trade_count", ">i8"),
    ("vwap", "coalesce(vwap, 'NaN')", ">f8"),
)
_ARRAY_HEADER_BYTES: Final = 20  # ndim, flags, element oid, length, lower bound


@dataclass(frozen=True, slots=True)
class BarColumns:
    """Bars as columns (numpy arrays, ascending by bucket): what models and JSON encoders
    want. ``bucket`` is epoch seconds (int64, UTC); ``vwap`` is NaN where volume is zero."""

    bucket: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    trade_count: np.ndarray
    vwap: np.ndarray

    def __len__(self) -> int:
        return int(self.bucket.shape[0])

    def to_bars(self) -> list[Bar]:
        buckets = [_EPOCH + timedelta(seconds=s) for s in self.bucket.tolist()]
        vwap = [None if v != v else v for v in self.vwap.tolist()]  # NaN -> None
        return list(
            map(
                Bar,
                buckets,
                self.open.tolist(),
                self.high.tolist(),
                self.low.tolist(),
                self.close.tolist(),
                self.volume.tolist(),
                self.trade_count.tolist(),
                vwap,
            )
        )


def _decode(raw: bytes | memoryview | None, dtype: str) -> np.ndarray:
    if raw is None or len(raw) <= _ARRAY_HEADER_BYTES:
        return np.empty(0, dtype=dtype[1:])
    element = np.dtype([("len", ">i4"), ("v", dtype)])
    values = np.frombuffer(raw, dtype=element, offset=_ARRAY_HEADER_BYTES)["v"]
    return values.astype(dtype[1:])  # native byte order


def get_bar_columns(
    conn: sa.Connection,
    symbol: str,
    interval: str,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
) -> BarColumns:
    """Like :func:`get_bars`, as numpy columns."""
    rel = relation(interval)
    if limit is not None and limit <= 0:
        raise ValueError("limit must be positive")
    where = ["symbol = %(symbol)s"]
    params: dict[str, Any] = {"symbol": symbol}
    if start is not None:
        where.append("bucket >= %(start)s")
        params["start"] = start
    if end is not None:
        where.append("bucket < %(end)s")
        params["end"] = end
    order = "DESC" if limit is not None and start is None else "ASC"
    inner = f"SELECT * FROM {rel} WHERE {' AND '.join(where)} ORDER BY bucket {order}"
    if limit is not None:
        inner += " LIMIT %(limit)s"
        params["limit"] = int(limit)
    packed = ", ".join(f"array_send(array_agg({expr}))" for _, expr, _ in _PACKED_COLUMNS)
    row = _fetch(conn, f"SELECT {packed} FROM ({inner}) b", params)[0]
    cols = {name: _decode(raw, dt) for (name, _, dt), raw in zip(_PACKED_COLUMNS, row, strict=True)}
    # Aggregation order follows the subquery in practice but SQL does not promise it:
    # sort here (stable, near-free on sorted input).
    order_idx = np.argsort(cols["bucket"], kind="stable")
    if not np.array_equal(order_idx, np.arange(order_idx.shape[0])):
        cols = {name: col[order_idx] for name, col in cols.items()}
    return BarColumns(**cols)


def get_bars(
    conn: sa.Connection,
    symbol: str,
    interval: str,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int | None = None,
) -> list[Bar]:
    """Bars of ``symbol`` with ``start <= bucket < end``, ascending by bucket.

    With ``limit`` and no ``start`` the *newest* ``limit`` bars before ``end`` are returned
    (what a forecaster wants); with ``start`` the first ``limit`` bars from ``start``.
    """
    return get_bar_columns(conn, symbol, interval, start, end, limit).to_bars()


def latest_bar(conn: sa.Connection, symbol: str, interval: str) -> Bar | None:
    """The newest bar of ``symbol`` (it may still be filling), or None."""
    bars = get_bars(conn, symbol, interval, limit=1)
    return bars[0] if bars else None


def history_days(conn: sa.Connection, symbol: str) -> int:
    """Days of history of ``symbol``: the number of distinct UTC days with a daily bar."""
    rows = _fetch(
        conn, "SELECT count(*) FROM price_1d WHERE symbol = %(symbol)s", {"symbol": symbol}
    )
    return int(rows[0][0])
