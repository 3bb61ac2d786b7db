"""Database reads behind the API's ``/health/detailed``: newest tick and bar per symbol,
and the champions. One statement each, index probes per active asset."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from services.common.bars import RELATIONS

_NEWEST = sa.text(
    "SELECT a.symbol,"
    " (SELECT max(p.ts) FROM price_ticks p WHERE p.symbol = a.symbol) AS tick,"
    + ",".join(
        f" (SELECT max(b.bucket) FROM {relation} b WHERE b.symbol = a.symbol) AS bar_{interval}"
        for interval, relation in RELATIONS.items()
    )
    + " FROM assets a WHERE a.active ORDER BY a.symbol"
)

_CHAMPIONS = sa.text(
    "SELECT model, scope, interval, version, promoted_at, created_at FROM model_versions"
    " WHERE status = 'champion' ORDER BY scope, interval, model"
)


def newest_per_symbol(conn: sa.Connection) -> dict[str, dict[str, datetime | None]]:
    """symbol -> {"tick": newest tick time, "1m"/"1h"/"1d": newest bar's bucket start}."""
    out: dict[str, dict[str, datetime | None]] = {}
    for row in conn.execute(_NEWEST).mappings():
        out[row["symbol"]] = {"tick": row["tick"]} | {
            interval: row[f"bar_{interval}"] for interval in RELATIONS
        }
    return out


def champions(conn: sa.Connection) -> list[dict[str, Any]]:
    return [dict(row) for row in conn.execute(_CHAMPIONS).mappings()]
