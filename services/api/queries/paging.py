"""The shared shape of the listing queries: a WHERE built from optional filters, and one page
of rows with the total count of all that match."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.api.params import Paging


class Where:
    """``AND``-joined conditions with their bind parameters."""

    def __init__(self, *conditions: str, **params: Any) -> None:
        self.conditions = list(conditions) or ["true"]
        self.params: dict[str, Any] = dict(params)

    def add(self, condition: str, **params: Any) -> None:
        """Add ``condition`` unless one of its parameters is None (a filter not given)."""
        if all(value is not None for value in params.values()):
            self.conditions.append(condition)
            self.params.update(params)

    def __str__(self) -> str:
        return " AND ".join(self.conditions)


def page(
    conn: Connection,
    table: str,
    columns: str,
    where: Where,
    order_by: str,
    paging: Paging,
) -> tuple[int, list[dict[str, Any]]]:
    """The number of ``table`` rows matching ``where`` and the page of them ``paging`` asks
    for, in ``order_by``."""
    params = {**where.params, "skip": paging.skip, "limit": paging.limit}
    total = conn.execute(sa.text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar()
    rows = conn.execute(
        sa.text(
            f"SELECT {columns} FROM {table} WHERE {where} "
            f"ORDER BY {order_by} OFFSET :skip LIMIT :limit"
        ),
        params,
    ).mappings()
    return int(total or 0), [dict(row) for row in rows]
