"""The tick sink against the real PostgreSQL: fast COPY, conflict path, assets, reconnection."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg2
import pytest
import sqlalchemy as sa
from ingest_helpers import count_ticks
from sqlalchemy.engine import Engine

from services.common.kafka import dumps
from services.common.schemas import Tick
from services.ingestion.batch import copy_line, decode_batch
from services.ingestion.sink import MERGE_AFTER_CONFLICT, TickSink

T0 = datetime(2025, 4, 1, tzinfo=UTC)


def ticks(symbol: str, n: int, start: datetime = T0, price: float = 10.0) -> list[Tick]:
    return [
        Tick(symbol, start + timedelta(milliseconds=250 * i), price + i, 1.0, "test")
        for i in range(n)
    ]


def rows(batch: list[Tick]) -> list[str]:
    return [copy_line(t) for t in batch]


@pytest.fixture
def sink(clean_db: Engine) -> Iterator[TickSink]:
    s = TickSink(clean_db)
    yield s
    s.close()


def stored(engine: Engine, symbol: str) -> list[tuple[datetime, float]]:
    with engine.connect() as conn:
        return [
            (r[0], r[1])
            for r in conn.execute(
                sa.text("SELECT ts, price FROM price_ticks WHERE symbol = :s ORDER BY ts"),
                {"s": symbol},
            )
        ]


def test_wire_rows_store_the_instant_they_name(clean_db: Engine, sink: TickSink) -> None:
    batch = ticks("SW-USD", 4, T0 + timedelta(microseconds=123_456))
    raws: list[bytes | None] = [dumps(t.wire()) for t in batch]
    decode_batch(raws, T0 + timedelta(days=1))  # warm the validator's symbol cache
    decoded = decode_batch(raws, T0 + timedelta(days=1))
    assert "Z\t" in decoded.rows[0]  # the wire text went through
    assert sink.write_rows(decoded.rows, decoded.newest) == 4
    assert stored(clean_db, "SW-USD") == [(t.ts, t.price) for t in batch]


def test_redelivery_and_in_batch_duplicates_are_stored_once(
    clean_db: Engine, sink: TickSink
) -> None:
    batch = ticks("SD-USD", 50)
    assert sink.write_rows(rows(batch[:30])) == 30
    # Again (a redelivery), overlapping new ticks, and one tick twice in the batch with a
    # different price: the stored ticks keep their first price.
    again = [*batch[20:], batch[40]._replace(price=999.0)]
    assert sink.write_rows(rows(again)) == 20
    assert sink.write_rows(rows(batch)) == 0
    assert stored(clean_db, "SD-USD") == [(t.ts, t.price) for t in batch]
    # A fresh batch after the conflicts (merge path for a few batches) is stored whole.
    fresh = ticks("SD-USD", 10, T0 + timedelta(days=1))
    assert sink.write_rows(rows(fresh)) == 10
    # An in-batch duplicate on the direct path falls back to the merge path, first one wins.
    for k in range(MERGE_AFTER_CONFLICT):
        assert sink.write_rows(rows(ticks("SX-USD", 1, T0 - timedelta(days=30 + k)))) == 1
    assert sink._merge_batches_left == 0  # back on the direct path
    dup = ticks("SE-USD", 3)
    assert sink.write_rows(rows([*dup, dup[1]._replace(price=555.0)])) == 3
    assert sink._merge_batches_left == MERGE_AFTER_CONFLICT
    assert stored(clean_db, "SE-USD") == [(t.ts, t.price) for t in dup]


def test_new_symbols_become_assets_with_their_oldest_tick(clean_db: Engine, sink: TickSink) -> None:
    batch = ticks("SA-USD", 5, T0 + timedelta(hours=1))
    older = ticks("SA-USD", 1, T0)  # not first in the batch, but the oldest
    sink.write_rows(rows(batch + older + ticks("SB-USD", 2)))
    with clean_db.connect() as conn:
        seen: dict[str, datetime] = dict(
            conn.execute(
                sa.text("SELECT symbol, first_seen FROM assets WHERE symbol LIKE 'S_-USD'")
            ).all()
        )
    assert seen == {"SA-USD": T0, "SB-USD": T0}
    assert {"SA-USD", "SB-USD"} <= sink.known_assets


def test_a_lost_connection_fails_one_write_then_the_sink_reconnects(
    clean_db: Engine, sink: TickSink
) -> None:
    assert sink.write_rows(rows(ticks("SL-USD", 3))) == 3
    pid = sink._connection().get_backend_pid()
    with clean_db.connect() as conn:
        assert conn.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
    batch = ticks("SL-USD", 3, T0 + timedelta(days=1))
    with pytest.raises((psycopg2.OperationalError, psycopg2.InterfaceError)):
        sink.write_rows(rows(batch))
    assert sink.write_rows(rows(batch)) == 3  # nothing of the failed write stayed
    assert count_ticks(clean_db, "symbol = 'SL-USD'") == 6
