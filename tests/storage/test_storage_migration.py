"""Migration 0002 on every path: relation shape, downgrade and re-upgrade."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from _storage_helpers import is_timescale
from sqlalchemy.engine import Engine

from services.common.db import alembic_config, migrate

PUBLIC = ["symbol", "bucket", "open", "high", "low", "close", "volume", "trade_count", "vwap"]
TYPES = (
    ["text", "timestamp with time zone"] + ["double precision"] * 5 + ["bigint", "double precision"]
)


COLUMNS = sa.text(
    "SELECT column_name, data_type FROM information_schema.columns "
    "WHERE table_name = :r ORDER BY ordinal_position"
)


def columns(engine: Engine, rel: str) -> list[tuple[str, str]]:
    """``(name, type)`` of every column of the relation ``rel``, in order."""
    with engine.connect() as conn:
        return [(name, data_type) for name, data_type in conn.execute(COLUMNS, {"r": rel})]


def test_bar_relations_have_the_contract_columns(storage: Engine) -> None:
    for level in ("1m", "1h", "1d"):
        assert columns(storage, f"price_{level}") == list(zip(PUBLIC, TYPES, strict=True))


def test_downgrade_and_upgrade_again(storage: Engine) -> None:
    from alembic import command

    url = storage.url.render_as_string(hide_password=False)
    storage.dispose()
    cfg = alembic_config(url)
    command.downgrade(cfg, "0001_core")  # type: ignore[arg-type]
    with storage.connect() as conn:
        assert conn.execute(sa.text("SELECT to_regclass('price_1h')")).scalar() is None
        assert (
            conn.execute(
                sa.text("SELECT count(*) FROM pricecast_meta WHERE key='storage_path'")
            ).scalar()
            == 0
        )
    migrate(url)
    assert [c for c, _ in columns(storage, "price_1h")] == PUBLIC


def test_tick_key_orders_like_ts_then_source_bytewise(storage: Engine) -> None:
    """TimescaleDB: first()/last() order by pricecast_tick_key(ts, source); its bytewise
    order must be (ts, source COLLATE "C"), the plain path's order."""
    if not is_timescale(storage):
        pytest.skip("pricecast_tick_key exists on the TimescaleDB path only")
    values = [
        ("1969-12-31 23:59:59.999999+00", "a"),
        ("1999-12-31 23:59:59.999999+00", "b"),
        ("2000-01-01 00:00:00+00", "a"),
        ("2024-03-09 22:00:00.000001+00", ""),
        ("2024-03-09 22:00:00.000001+00", "B"),
        ("2024-03-09 22:00:00.000001+00", "a"),
        ("2024-03-09 22:00:00.000001+00", "a\\x41"),
        ("2024-03-09 22:00:00.000001+00", "ab"),
        ("2024-03-09 22:00:00.000001+00", "b"),
        ("2024-03-09 22:00:00.000001+00", "é"),
        ("2024-03-09 22:00:00.000002+00", "\\"),
        ("2250-01-01 00:00:00+00", "a"),
    ]
    rows = ", ".join(f"('{ts}'::timestamptz, '{src}')" for ts, src in reversed(values))
    with storage.connect() as conn:
        by_key = conn.execute(
            sa.text(
                f"SELECT ts, source FROM (VALUES {rows}) v(ts, source) "
                "ORDER BY pricecast_tick_key(ts, source)"
            )
        ).all()
        by_columns = conn.execute(
            sa.text(
                f"SELECT ts, source FROM (VALUES {rows}) v(ts, source) "
                'ORDER BY ts, source COLLATE "C"'
            )
        ).all()
    assert [r[1] for r in by_key] == [v[1] for v in values]
    assert by_key == by_columns
