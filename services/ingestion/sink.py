"""Storing ticks in ``price_ticks``: one transaction per batch, idempotent on the natural key.

The sink takes a batch as COPY text lines (:func:`services.ingestion.batch.copy_line`, or
the writer's :func:`~services.ingestion.batch.decode_batch`). A batch is COPYed straight
into ``price_ticks`` when none of it is stored yet (the common case); otherwise it is COPYed
into a session temp table and ``INSERT .. SELECT .. ON CONFLICT DO NOTHING`` moves it (natural
key ``(symbol, ts, source, trade_id)``: ``trade_id`` is the venue's id of a trade, empty for
ticks without one): a tick delivered twice, in one batch or in two, is stored once (the first of
a batch's copies wins), and distinct trades of the same millisecond are distinct rows. New
symbols are upserted into ``assets`` in the same transaction. Bars are the storage layer's
business (its trigger or continuous aggregates).

Connection: the sink keeps one connection (taken from the engine's pool, in autocommit mode)
for all its batches and is used by one thread at a time. A batch without new symbols is then
a single ``COPY`` statement, which is its own transaction: one round trip, committed (durably:
``synchronous_commit`` is untouched) when the statement completes, or not at all. Anything
needing more statements runs them between an explicit ``BEGIN`` and ``COMMIT``. A connection
that fails (server gone, network cut) is discarded; the next batch takes a fresh one.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

import psycopg2
import psycopg2.errors
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.schemas import Tick
from services.ingestion.batch import copy_line

log = logging.getLogger(__name__)

TEMP_TABLE = "pricecast_ticks_in"
CREATE_TEMP = (
    f"CREATE TEMP TABLE IF NOT EXISTS {TEMP_TABLE} (symbol text, ts timestamptz,"
    " price double precision, volume double precision, source text, trade_id text)"
    " ON COMMIT DELETE ROWS"
)
MOVE = (
    "INSERT INTO price_ticks (symbol, ts, price, volume, source, trade_id)"
    f" SELECT symbol, ts, price, volume, source, trade_id FROM {TEMP_TABLE}"
    " ON CONFLICT DO NOTHING"
)
UPSERT_ASSETS = (
    "INSERT INTO assets (symbol, first_seen)"
    " SELECT * FROM unnest(%s::text[], %s::timestamptz[])"
    " ON CONFLICT (symbol) DO UPDATE SET first_seen = LEAST(assets.first_seen, EXCLUDED.first_seen)"
)
COPY_DIRECT = "COPY price_ticks (symbol, ts, price, volume, source, trade_id) FROM STDIN"
COPY_TEMP = f"COPY {TEMP_TABLE} (symbol, ts, price, volume, source, trade_id) FROM STDIN"
MERGE_AFTER_CONFLICT = 5
INSERT_ONE = (
    "INSERT INTO price_ticks (symbol, ts, price, volume, source, trade_id)"
    " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING"
)
# Errors after which the connection is not trusted again.
CONNECTION_LOST = (psycopg2.OperationalError, psycopg2.InterfaceError)


def copy_rows(ticks: Sequence[Tick]) -> list[str]:
    """The COPY text lines of ``ticks``."""
    return [copy_line(tick) for tick in ticks]


def first_seen(rows: Sequence[str], symbols: set[str]) -> dict[str, datetime]:
    """The oldest timestamp of each of ``symbols`` among the COPY lines ``rows``."""
    out: dict[str, datetime] = {}
    for row in rows:
        symbol, _, rest = row.partition("\t")
        if symbol in symbols:
            ts = datetime.fromisoformat(rest[: rest.index("\t")])
            first = out.get(symbol)
            if first is None or ts < first:
                out[symbol] = ts
    return out


class TickSink:
    """Writes batches of validated ticks; keeps a cache of symbols known to be in ``assets``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.known_assets: set[str] = set()
        self._merge_batches_left = 0
        self._raw: Any = None  # the pooled connection proxy the sink holds

    def load_known_assets(self) -> None:
        with self.engine.connect() as conn:
            self.known_assets.update(conn.execute(sa.text("SELECT symbol FROM assets")).scalars())

    # --- the connection ----------------------------------------------------------------
    def _connection(self) -> Any:
        if self._raw is None:
            raw: Any = self.engine.raw_connection()
            try:
                raw.driver_connection.autocommit = True
            except BaseException:
                raw.invalidate()
                raise
            self._raw = raw
        return self._raw.driver_connection

    def _discard(self) -> None:
        raw, self._raw = self._raw, None
        if raw is not None:
            raw.invalidate()  # closes it; the pool opens a fresh one when asked

    def close(self) -> None:
        """Give the connection back to the pool (as the pool lent it: not autocommit)."""
        raw, self._raw = self._raw, None
        if raw is None:
            return
        try:
            raw.driver_connection.autocommit = False
            raw.close()
        except CONNECTION_LOST:
            raw.invalidate()

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        """A cursor on the sink's connection; the connection is dropped if it fails."""
        conn = self._connection()
        try:
            with conn.cursor() as cur:
                yield cur
        except CONNECTION_LOST:
            self._discard()
            raise

    @contextmanager
    def _transaction(self, cur: Any) -> Iterator[None]:
        """``BEGIN`` .. ``COMMIT``; ``ROLLBACK`` on anything else (unless the connection is
        gone, which ends the transaction as well)."""
        cur.execute("BEGIN")
        try:
            yield
            cur.execute("COMMIT")
        except BaseException:
            if not cur.connection.closed:
                with suppress(*CONNECTION_LOST):
                    cur.execute("ROLLBACK")
            raise

    # --- writing -----------------------------------------------------------------------
    def write(self, ticks: Sequence[Tick]) -> int:
        """Store ``ticks`` (see :meth:`write_rows`)."""
        return self.write_rows(copy_rows(ticks))

    def write_rows(self, rows: Sequence[str], symbols: Iterable[str] | None = None) -> int:
        """Store a batch of COPY lines in one transaction; returns how many were new. Raises
        on failure (nothing is stored then). ``symbols``: the batch's symbols, if known.

        Fast path: the batch is COPYed straight into ``price_ticks`` (with the upsert of its
        new symbols in the same transaction, if any). If any tick is already stored (a
        redelivery) or appears twice in the batch, the COPY fails with a unique violation,
        nothing of it stays, and the batch takes the conflict path: COPY into a temp table,
        ``INSERT .. ON CONFLICT DO NOTHING``. After a conflict the next few batches take the
        conflict path directly (redeliveries come in runs).
        """
        if not rows:
            return 0
        data = "".join(rows)
        if symbols is None:
            symbols = {row_text[: row_text.index("\t")] for row_text in rows}
        new_symbols = set(symbols).difference(self.known_assets)
        new_assets = first_seen(rows, new_symbols) if new_symbols else {}
        with self._cursor() as cur:
            stored = None
            if self._merge_batches_left > 0:
                self._merge_batches_left -= 1
            else:
                try:
                    stored = self._copy_direct(cur, rows, data, new_assets)
                except psycopg2.errors.UniqueViolation:
                    self._merge_batches_left = MERGE_AFTER_CONFLICT
            if stored is None:
                with self._transaction(cur):
                    self._upsert_assets(cur, new_assets)
                    cur.execute(CREATE_TEMP)
                    cur.copy_expert(COPY_TEMP, io.StringIO(data), size=len(data) + 1)
                    cur.execute(MOVE)
                    stored = int(cur.rowcount)
        self.known_assets.update(new_assets)
        return stored

    def _copy_direct(
        self, cur: Any, rows: Sequence[str], data: str, new_assets: dict[str, datetime]
    ) -> int:
        # One read of the whole buffer: the thread takes the GIL back as rarely as possible.
        buf = io.StringIO(data)
        if not new_assets:
            cur.copy_expert(COPY_DIRECT, buf, size=len(data) + 1)  # one statement: atomic
            return len(rows)
        with self._transaction(cur):
            self._upsert_assets(cur, new_assets)
            cur.copy_expert(COPY_DIRECT, buf, size=len(data) + 1)
            return len(rows)

    @staticmethod
    def _upsert_assets(cur: Any, new_assets: dict[str, datetime]) -> None:
        if new_assets:
            cur.execute(UPSERT_ASSETS, (list(new_assets), list(new_assets.values())))

    def write_each(self, ticks: Sequence[Tick]) -> tuple[int, list[tuple[int, str]]]:
        """Slow path after a batch failed on data: one savepoint per tick, one transaction.
        Returns the count stored and the (index, error) of each tick the database refused."""
        refused: list[tuple[int, str]] = []
        inserted = 0
        new_symbols = {tick.symbol for tick in ticks}.difference(self.known_assets)
        new_assets: dict[str, datetime] = {}
        for tick in ticks:
            if tick.symbol in new_symbols and (
                tick.symbol not in new_assets or tick.ts < new_assets[tick.symbol]
            ):
                new_assets[tick.symbol] = tick.ts
        with self._cursor() as cur, self._transaction(cur):
            self._upsert_assets(cur, new_assets)
            for index, tick in enumerate(ticks):
                cur.execute("SAVEPOINT one_tick")
                try:
                    row = (
                        tick.symbol,
                        tick.ts,
                        tick.price,
                        tick.volume,
                        tick.source,
                        tick.trade_id,
                    )
                    cur.execute(INSERT_ONE, row)
                    inserted += int(cur.rowcount)
                    cur.execute("RELEASE SAVEPOINT one_tick")
                except (psycopg2.DataError, psycopg2.IntegrityError) as exc:
                    cur.execute("ROLLBACK TO SAVEPOINT one_tick")
                    refused.append((index, str(exc).strip().splitlines()[0][:200]))
        self.known_assets.update(new_assets)
        return inserted, refused
