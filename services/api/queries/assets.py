"""Assets: paginated listing with filters, one asset, existence."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.api.core.errors import unknown_symbol
from services.api.params import Paging
from services.api.queries.paging import Where, page

_COLUMNS = "symbol, name, asset_class, currency, active, first_seen"


def list_assets(
    conn: Connection,
    paging: Paging,
    *,
    active: bool | None = None,
    asset_class: str | None = None,
    search: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    where = Where()
    where.add("active = :active", active=active)
    where.add("asset_class = :asset_class", asset_class=asset_class or None)
    if search:
        like = "%" + search.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_") + "%"
        where.add("(symbol ILIKE :pattern OR name ILIKE :pattern)", pattern=like)
    return page(conn, "assets", _COLUMNS, where, "symbol", paging)


def get_asset(conn: Connection, symbol: str) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.text(f"SELECT {_COLUMNS} FROM assets WHERE symbol = :symbol"), {"symbol": symbol}
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


def asset_exists(conn: Connection, symbol: str) -> bool:
    return bool(
        conn.execute(
            sa.text("SELECT 1 FROM assets WHERE symbol = :symbol"), {"symbol": symbol}
        ).scalar()
    )


def known_symbol(conn: Connection, symbol: str) -> str:
    """``symbol`` when the assets table holds it, else ERR_PRED_002 (404).

    A check the route calls, not a dependency: FastAPI solves dependencies before it
    validates the route's own parameters, and an invalid request must be 422 without a
    database round trip (tests/api/test_api_auth_order.py)."""
    if not asset_exists(conn, symbol):
        raise unknown_symbol(symbol)
    return symbol
