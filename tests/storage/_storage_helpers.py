"""Storage test helpers: the ingestion writer's insert pattern and TimescaleDB settling."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.db import TickRow, copy_ticks, tick_tsv


def is_timescale(engine: Engine) -> bool:
    with engine.connect() as conn:
        return (
            conn.execute(
                sa.text("SELECT value FROM pricecast_meta WHERE key = 'storage_path'")
            ).scalar()
            == "timescaledb"
        )


def settle(engine: Engine, since: datetime | None = None) -> None:
    """TimescaleDB: materialise every level from ``since`` on (all of it by default), what the
    refresh policies do within their schedule, so late ticks behind the watermark show. (After
    retention, pass ``since``: a refresh reaching the dropped range would recompute it from
    ticks that are gone.) Plain path: bars are already exact."""
    if not is_timescale(engine):
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for level in ("1m", "1h", "1d"):
            conn.execute(
                # one atomic pass: the default batches of 10 buckets cost ~5 ms each
                sa.text(
                    f"CALL refresh_continuous_aggregate('pricecast_cagg_{level}', "
                    "CAST(:s AS timestamptz), NULL, "
                    """options => '{"buckets_per_batch": 0}')"""
                ),
                {"s": since},
            )


def read_bars(engine: Engine, interval: str) -> dict[tuple[str, datetime], tuple[Any, ...]]:
    """Every bar of ``interval`` keyed by (symbol, bucket)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT symbol, bucket, open, high, low, close, volume, trade_count, vwap "
                f"FROM price_{interval}"
            )
        )
        return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def write_batch(engine: Engine, ticks: Iterable[TickRow]) -> int:
    """The ingestion writer's pattern: COPY into a temp table, INSERT .. ON CONFLICT DO
    NOTHING, one transaction. Returns the number of rows really inserted."""
    with engine.begin() as conn:
        return copy_ticks(conn, tick_tsv(ticks), on_conflict=True)
