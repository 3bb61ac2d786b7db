"""Model registry reads (never the artifact bytes) and retrain requests."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.api.params import Paging
from services.api.queries.paging import Where, page
from services.common.retrain_requests import insert_retrain_request

_COLUMNS = (
    "id, model, scope, interval, version, status, data_start, data_end, metrics, params, "
    "checksum, created_at, promoted_at, retired_at"
)


def list_versions(
    conn: Connection,
    paging: Paging,
    *,
    symbol: str | None = None,
    model: str | None = None,
    status: str | None = None,
    interval: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    where = Where()
    where.add("scope = :scope", scope=symbol)
    where.add("model = :model", model=model)
    where.add("status = :status", status=status)
    where.add("interval = :interval", interval=interval)
    order_by = "created_at DESC, id DESC"
    return page(conn, "model_versions", _COLUMNS, where, order_by, paging)


def champions(conn: Connection, symbol: str | None, interval: str | None) -> list[dict[str, Any]]:
    where = Where("status = 'champion'")
    where.add("scope IN (:scope, '*')", scope=symbol)  # its own champion or the global one
    where.add("interval = :interval", interval=interval)
    rows = conn.execute(
        sa.text(
            f"SELECT {_COLUMNS} FROM model_versions WHERE {where} ORDER BY scope, interval, model"
        ),
        where.params,
    ).mappings()
    return [dict(row) for row in rows]


def get_version(conn: Connection, version_id: int) -> dict[str, Any] | None:
    row = (
        conn.execute(
            sa.text(f"SELECT {_COLUMNS} FROM model_versions WHERE id = :id"), {"id": version_id}
        )
        .mappings()
        .one_or_none()
    )
    return dict(row) if row is not None else None


def request_retrain(
    conn: Connection, symbol: str | None, interval: str, reason: str, requested_by: str
) -> tuple[int, str, bool]:
    """Queue a retrain; at most one open request per symbol/interval: (id, status, created)."""
    for _ in range(3):  # the open request may finish between the two statements
        inserted = insert_retrain_request(conn, symbol, interval, reason, requested_by)
        if inserted is not None:
            return *inserted, True
        existing = conn.execute(
            sa.text(
                "SELECT id, status FROM retrain_requests "
                "WHERE coalesce(symbol, '*') = coalesce(:symbol, '*') AND interval = :interval "
                "AND status IN ('queued', 'running') ORDER BY id DESC LIMIT 1"
            ),
            {"symbol": symbol, "interval": interval},
        ).one_or_none()
        if existing is not None:
            return int(existing.id), str(existing.status), False
    raise RuntimeError("could not queue a retrain request")
