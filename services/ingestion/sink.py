"""Storing ticks in ``price_ticks``: one transaction per batch, idempotent on the natural key.

A batch is COPYed straight into ``price_ticks`` when none of it is stored yet (the common
case); otherwise it is COPYed into a session temp table and ``INSERT .. SELECT .. ON CONFLICT
DO NOTHING`` moves it (natural key ``(symbol, ts, source)``): a tick delivered twice, in one
batch or in two, is stored once. New symbols are upserted into ``assets`` in the same
transaction. Bars are the storage layer's business (its trigger or continuous aggregates).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.ingestion.validation import Tick

log = logging.getLogger(__name__)

TEMP_TABLE = "pricecast_ticks_in"
CREATE_TEMP = (
    f"CREATE TEMP TABLE IF NOT EXISTS {TEMP_TABLE} (symbol text, ts timestamptz,"
    " price double precision, volume double precision, source text) ON COMMIT DELETE ROWS"
)
MOVE = (
    "INSERT INTO price_ticks (symbol, ts, price, volume, source)"
    f" SELECT symbol, ts, price, volume, source FROM {TEMP_TABLE} ON CONFLICT DO NOTHING"
)
UPSERT_ASSETS = (
    "INSERT INTO assets (symbol, first_seen)"
    " SELECT * FROM unnest(%s::text[], %s::timestamptz[])"
    " ON CONFLICT (symbol) DO UPDATE SET first_seen = LEAST(assets.first_seen, EXCLUDED.first_seen)"
)
COPY_DIRECT = "COPY price_ticks (symbol, ts, price, volume, source) FROM STDIN"
MERGE_AFTER_CONFLICT = 5
INSERT_ONE = (
    "INSERT INTO price_ticks (symbol, ts, price, volume, source) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT DO NOTHING"
)


def copy_rows(ticks: Sequence[Tick]) -> io.StringIO:
    """COPY text format; symbol and source passed validation, so they need no escaping."""
    buf = io.StringIO()
    buf.write(
        "".join(
            f"{t.symbol}\t{t.ts.isoformat()}\t{t.price!r}\t{t.volume!r}\t{t.source}\n"
            for t in ticks
        )
    )
    buf.seek(0)
    return buf


def dedupe(ticks: Sequence[Tick]) -> Sequence[Tick]:
    """The ticks with each natural key once (first wins, as ON CONFLICT DO NOTHING would)."""
    seen: set[tuple[str, object, str]] = set()
    out: list[Tick] = []
    for t in ticks:
        key = (t.symbol, t.ts, t.source)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out if len(out) != len(ticks) else ticks


class TickSink:
    """Writes batches of validated ticks; keeps a cache of symbols known to be in ``assets``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.known_assets: set[str] = set()
        self._merge_batches_left = 0

    def load_known_assets(self) -> None:
        with self.engine.connect() as conn:
            self.known_assets.update(conn.execute(sa.text("SELECT symbol FROM assets")).scalars())

    def _new_assets(self, ticks: Sequence[Tick]) -> dict[str, datetime]:
        new: dict[str, datetime] = {}
        known = self.known_assets
        for t in ticks:
            if t.symbol not in known:
                first = new.get(t.symbol)
                if first is None or t.ts < first:
                    new[t.symbol] = t.ts
        return new

    def write(self, ticks: Sequence[Tick]) -> int:
        """Store ``ticks`` in one transaction; returns how many were new. Raises on failure
        (nothing is stored then).

        Fast path: the batch (deduplicated in memory) is COPYed straight into ``price_ticks``
        inside a savepoint. If any tick is already stored (a redelivery), the COPY fails with
        a unique violation, is rolled back to the savepoint, and the batch takes the conflict
        path: COPY into a temp table, ``INSERT .. ON CONFLICT DO NOTHING``. After a conflict
        the next few batches take the conflict path directly (redeliveries come in runs).
        """
        if not ticks:
            return 0
        unique = dedupe(ticks)
        with self._transaction(unique) as cur:
            return self._copy_or_merge(cur, unique)

    @contextmanager
    def _transaction(self, ticks: Sequence[Tick]) -> Iterator[Any]:
        """One transaction on a raw connection; first registers the batch's new assets.
        Commits when the block succeeds, rolls back on anything else."""
        new_assets = self._new_assets(ticks)
        raw = self.engine.raw_connection()
        try:
            cur: Any = raw.cursor()
            try:
                if new_assets:
                    cur.execute(UPSERT_ASSETS, (list(new_assets), list(new_assets.values())))
                yield cur
                raw.commit()
            except BaseException:
                raw.rollback()
                raise
            finally:
                cur.close()
        finally:
            raw.close()
        self.known_assets.update(new_assets)

    def _copy_or_merge(self, cur: Any, ticks: Sequence[Tick]) -> int:
        if self._merge_batches_left > 0:
            self._merge_batches_left -= 1
        else:
            cur.execute("SAVEPOINT direct_copy")
            try:
                cur.copy_expert(COPY_DIRECT, copy_rows(ticks))
                cur.execute("RELEASE SAVEPOINT direct_copy")
                return len(ticks)
            except psycopg2.errors.UniqueViolation:
                cur.execute("ROLLBACK TO SAVEPOINT direct_copy")
                self._merge_batches_left = MERGE_AFTER_CONFLICT
        cur.execute(CREATE_TEMP)
        cur.copy_expert(f"COPY {TEMP_TABLE} FROM STDIN", copy_rows(ticks))
        cur.execute(MOVE)
        return int(cur.rowcount)

    def write_each(self, ticks: Sequence[Tick]) -> tuple[int, list[tuple[int, str]]]:
        """Slow path after a batch failed on data: one savepoint per tick. Returns the count
        stored and the (index, error) of each tick the database refused."""
        refused: list[tuple[int, str]] = []
        inserted = 0
        with self._transaction(ticks) as cur:
            for i, t in enumerate(ticks):
                cur.execute("SAVEPOINT one_tick")
                try:
                    cur.execute(INSERT_ONE, (t.symbol, t.ts, t.price, t.volume, t.source))
                    inserted += int(cur.rowcount)
                    cur.execute("RELEASE SAVEPOINT one_tick")
                except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT one_tick")
                    refused.append((i, str(exc).strip().splitlines()[0][:200]))
        return inserted, refused
