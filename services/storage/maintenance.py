"""Periodic storage upkeep and the storage part of health/doctor reports.

``storage_status`` is what ``/health/detailed`` and ``pricecast doctor`` show (active path,
aggregate lag, whether bar maintenance runs, age of the newest tick and 1m bar).
``maintenance_loop`` runs plain-path tick retention and refreshes the storage gauges; a
worker (the ingestion writer) runs it, or ``pricecast storage maintain`` once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.metrics import AGGREGATE_LAG, BAR_AGE
from services.storage.path import aggregate_lag, bar_maintenance_enabled, storage_path
from services.storage.retention import drop_old_ticks

log = logging.getLogger(__name__)

_DAY_BAR_AGE = "SELECT extract(epoch FROM now() - max(bucket))::float8 FROM price_1d"


def storage_status(conn: sa.Connection) -> dict[str, Any]:
    """Path, aggregate lag (seconds), maintenance state and newest daily bar's age."""
    lag = aggregate_lag(conn)
    day_age = conn.execute(sa.text(_DAY_BAR_AGE)).scalar()
    return {
        "storage_path": storage_path(conn),
        "aggregate_lag_s": None if math.isinf(lag) else round(lag, 3),
        "bars_missing": math.isinf(lag),
        "bar_maintenance": bar_maintenance_enabled(conn),
        "newest_1d_bar_age_s": None if day_age is None else round(float(day_age), 1),
    }


def maintenance_once(engine: Engine, settings: Settings) -> dict[str, Any]:
    """Tick retention (plain path) and the storage gauges; returns what it did."""
    deleted = drop_old_ticks(engine, settings.tick_retention_days)
    with engine.connect() as conn:
        status = storage_status(conn)
    lag = status["aggregate_lag_s"]
    AGGREGATE_LAG.set(float("inf") if lag is None else lag)
    if status["newest_1d_bar_age_s"] is not None:
        BAR_AGE.labels(interval="1d").set(status["newest_1d_bar_age_s"])
    return {**status, "ticks_deleted": deleted}


async def maintenance_loop(engine: Engine, settings: Settings, stop: asyncio.Event) -> None:
    """Run :func:`maintenance_once` every ``storage_maintenance_interval_s`` until ``stop``."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(maintenance_once, engine, settings)
        except sa.exc.SQLAlchemyError:
            log.exception("storage maintenance failed; retrying next round")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.storage_maintenance_interval_s)


def main(args: argparse.Namespace) -> int:
    """``pricecast storage maintain``: one round, printed as JSON."""
    from services.common.config import get_settings
    from services.common.db import make_engine

    settings = get_settings()
    engine = make_engine(settings)
    try:
        print(json.dumps(maintenance_once(engine, settings)))
    finally:
        engine.dispose()
    return 0
