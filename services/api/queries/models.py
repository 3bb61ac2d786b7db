"""Model registry reads (never the artifact bytes) and retrain requests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from services.common.retrain_requests import insert_retrain_request

_COLUMNS = (
    "id, model, scope, interval, version, status, data_start, data_end, metrics, params, "
    "checksum, created_at, promoted_at, retired_at"
)


def _equal(filters: Sequence[tuple[str, Any]], params: dict[str, Any]) -> list[str]:
    """``column = :column`` for every filter whose value is not None (added to ``params``)."""
    clauses = []
    for column, value in filters:
        if value is not None:
            clauses.append(f"{column} = :{column}")
            params[column] = value
    return clauses


def list_versions(
    conn: Connection,
    *,
    skip: int,
    limit: int,
    symbol: str | None = None,
    model: str | None = None,
    status: str | None = None,
    interval: str | None = None,
) -> tuple[int, list[dict[str, Any]]]:
    params: dict[str, Any] = {"skip": skip, "limit": limit}
    filters = (("scope", symbol), ("model", model), ("status", status), ("interval", interval))
    clause = " AND ".join(["true", *_equal(filters, params)])
    total = conn.execute(
        sa.text(f"SELECT count(*) FROM model_versions WHERE {clause}"), params
    ).scalar()
    rows = conn.execute(
        sa.text(
            f"SELECT {_COLUMNS} FROM model_versions WHERE {clause} "
            "ORDER BY created_at DESC, id DESC OFFSET :skip LIMIT :limit"
        ),
        params,
    ).mappings()
    return int(total or 0), [dict(row) for row in rows]


def champions(conn: Connection, symbol: str | None, interval: str | None) -> list[dict[str, Any]]:
    where = ["status = 'champion'"]
    params: dict[str, Any] = {}
    if symbol is not None:
        where.append("scope IN (:scope, '*')")  # its own champion or the global one
        params["scope"] = symbol
    where += _equal([("interval", interval)], params)
    rows = conn.execute(
        sa.text(
            f"SELECT {_COLUMNS} FROM model_versions WHERE {' AND '.join(where)} "
            "ORDER BY scope, interval, model"
        ),
        params,
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
                "WHERE coalesce(symbol, '*') = coalesce(:s, '*') AND interval = :i "
                "AND status IN ('queued', 'running') ORDER BY id DESC LIMIT 1"
            ),
            {"s": symbol, "i": interval},
        ).one_or_none()
        if existing is not None:
            return int(existing.id), str(existing.status), False
    raise RuntimeError("could not queue a retrain request")
