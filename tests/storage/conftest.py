"""Storage fixtures: one database per storage path (plain PostgreSQL always, TimescaleDB
wherever the extension is installed), migrated with ``PRICECAST_STORAGE_PATH`` forced."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from services.common.config import DEFAULT_DATABASE_URL
from services.common.db import migrate


def _timescale_installed(admin: Engine) -> bool:
    with admin.connect() as conn:
        available = conn.execute(
            sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
        ).scalar()
        preload = str(conn.execute(sa.text("SHOW shared_preload_libraries")).scalar())
    return bool(available) and "timescaledb" in preload


def _pause_tick_policies(engine: Engine) -> None:
    """Tests write ticks of 2024: the retention (90 days, ``pricecast_storage_job`` since
    0003) and compression (7 days) jobs would drop or compress their chunks, and the
    backfill materialisation job would refresh them, whenever a background worker gets to
    them. Refresh policies stay scheduled (they only cover recent data); tests materialise
    and apply retention explicitly."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "SELECT alter_job(job_id, scheduled => false) "
                "FROM timescaledb_information.jobs "
                "WHERE proc_name IN "
                "('policy_retention', 'policy_compression', 'pricecast_storage_job')"
            )
        )


@pytest.fixture(
    scope="module",
    params=["postgres", pytest.param("timescaledb", marks=pytest.mark.timescale)],
)
def storage_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    path: str = request.param
    base = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    if path == "timescaledb" and not _timescale_installed(admin):
        admin.dispose()
        pytest.skip("TimescaleDB extension not installed on this server")
    name = f"pricecast_storage_{path[:2]}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    old = os.environ.get("PRICECAST_STORAGE_PATH")
    os.environ["PRICECAST_STORAGE_PATH"] = path
    engine = sa.create_engine(url, pool_size=4)
    try:
        migrate(url)
        if path == "timescaledb":
            _pause_tick_policies(engine)
        yield engine
    finally:
        if old is None:
            os.environ.pop("PRICECAST_STORAGE_PATH", None)
        else:
            os.environ["PRICECAST_STORAGE_PATH"] = old
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _reset(conn: sa.Connection) -> None:
    conn.execute(sa.text("TRUNCATE price_ticks"))
    conn.execute(sa.text("SELECT pricecast_reset_bars()"))
    if conn.execute(sa.text("SELECT to_regclass('pricecast_unmaterialized_days')")).scalar():
        conn.execute(sa.text("TRUNCATE pricecast_unmaterialized_days"))
    conn.execute(
        sa.text(
            "DELETE FROM pricecast_meta WHERE key IN ('ticks_dropped_before', 'late_ticks_ignored')"
        )
    )


@pytest.fixture
def storage(storage_engine: Engine) -> Engine:
    """The path's database with no ticks, no bars and no retention or backfill state.

    TimescaleDB: a refresh policy job running at that moment can deadlock with the TRUNCATE
    of the aggregates (the server picks one victim); the reset is then simply retried."""
    for attempt in range(5):
        try:
            with storage_engine.begin() as conn:
                _reset(conn)
            break
        except sa.exc.OperationalError as exc:
            if "deadlock detected" not in str(exc) or attempt == 4:
                raise
    return storage_engine
