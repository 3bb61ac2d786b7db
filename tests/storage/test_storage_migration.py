"""Migration 0002 on every path: relation shape, downgrade and re-upgrade."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.db import alembic_config, migrate

PUBLIC = ["symbol", "bucket", "open", "high", "low", "close", "volume", "trade_count", "vwap"]
TYPES = (
    ["text", "timestamp with time zone"] + ["double precision"] * 5 + ["bigint", "double precision"]
)


def columns(engine: Engine, rel: str) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = :r ORDER BY ordinal_position"
            ),
            {"r": rel},
        )
        return [(r[0], r[1]) for r in rows]


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
