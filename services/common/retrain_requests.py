"""The one insert into ``retrain_requests``, for the API and the prediction service.

The partial unique index ``ux_retrain_requests_open`` keeps at most one open (queued or
running) request per symbol (``NULL``: every asset) and interval; a second insert for the
same key does nothing. With ``cooldown_s`` the insert is also skipped when a request that
covers the key (its own or one for every asset) is open or was made within the cooldown:
the prediction service's accuracy tracking asks so, to not re-queue a request that has just
finished.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

_INSERT = sa.text(
    """
    INSERT INTO retrain_requests (symbol, interval, reason, requested_by, details)
    SELECT :symbol, :interval, :reason, :requested_by, CAST(:details AS jsonb)
    WHERE CAST(:cooldown AS float8) IS NULL OR NOT EXISTS (
        SELECT 1 FROM retrain_requests
        WHERE coalesce(symbol, '*') IN (coalesce(CAST(:symbol AS text), '*'), '*')
          AND interval = :interval
          AND (status IN ('queued', 'running')
               OR requested_at > now() - make_interval(secs => CAST(:cooldown AS float8)))
    )
    ON CONFLICT ((coalesce(symbol, '*')), interval)
    WHERE status IN ('queued', 'running') DO NOTHING
    RETURNING id, status
    """
)


def insert_retrain_request(
    conn: sa.Connection,
    symbol: str | None,
    interval: str,
    reason: str,
    requested_by: str,
    *,
    details: dict[str, Any] | None = None,
    cooldown_s: float | None = None,
) -> tuple[int, str] | None:
    """Queue a request: its ``(id, status)``, or ``None`` when none was inserted (one is
    open for the key, or, with ``cooldown_s``, one covering it is recent)."""
    row = conn.execute(
        _INSERT,
        {
            "symbol": symbol,
            "interval": interval,
            "reason": reason,
            "requested_by": requested_by,
            "details": json.dumps(details or {}),
            "cooldown": None if cooldown_s is None else float(cooldown_s),
        },
    ).one_or_none()
    return None if row is None else (int(row.id), str(row.status))
