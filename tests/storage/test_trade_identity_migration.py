"""Migration 0007 (trade identity) on a database with data: existing ticks and bars are kept,
then distinct trades of one millisecond are distinct rows, counted in the bars, and a trade
written twice is stored once; downgrade folds them back to the old key."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from services.common.db import alembic_config, migrate
from services.common.schemas import Tick
from services.ingestion.sink import TickSink

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _bars(conn: sa.Connection, symbol: str) -> tuple[int, float]:
    row = conn.execute(
        sa.text("SELECT sum(trade_count), sum(volume) FROM price_1m WHERE symbol = :s"),
        {"s": symbol},
    ).one()
    return int(row[0] or 0), float(row[1] or 0)


def test_upgrade_keeps_data_then_keeps_every_trade(
    scratch_database: Callable[..., AbstractContextManager[str]],
) -> None:
    from alembic import command

    with scratch_database("pricecast_tid", migrated=False) as url:
        migrate(url, "0006_forecast_levels")
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            for i in range(3):
                conn.execute(
                    sa.text(
                        "INSERT INTO price_ticks (symbol, ts, price, volume, source)"
                        " VALUES ('OLD-USD', :ts, 10, 2, 'csv')"
                    ),
                    {"ts": T0 + timedelta(seconds=i)},
                )
            before = _bars(conn, "OLD-USD")
        assert before == (3, 6.0)
        engine.dispose()
        migrate(url)  # 0007
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(
                sa.text("SELECT count(*), min(trade_id), max(trade_id) FROM price_ticks")
            ).one() == (3, "", "")
            assert _bars(conn, "OLD-USD") == before
        sink = TickSink(engine)
        same_ms = [Tick("TID-USD", T0, 100.0, 0.5, "binance", str(i)) for i in (7, 8, 9)]
        assert sink.write(same_ms) == 3
        assert sink.write(same_ms[:2]) == 0  # redelivered: stored once
        sink.close()
        with engine.connect() as conn:
            assert _bars(conn, "TID-USD") == (3, 1.5)
        engine.dispose()
        command.downgrade(alembic_config(url), "0006_forecast_levels")  # type: ignore[arg-type]
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT count(*) FROM price_ticks WHERE symbol = 'TID-USD'")
            ).scalar_one()
            assert rows == 1  # one row per old key; the bars keep counting all three
            assert _bars(conn, "TID-USD") == (3, 1.5)
        engine.dispose()
        migrate(url)
