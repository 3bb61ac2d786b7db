"""PostgreSQL failure modes, created for real on the shared server (without exhausting it)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url

from services.common import infra
from services.common.config import Settings
from services.common.db import migrate
from services.doctor.checks.postgres import CONNECTIONS_FIX

Diagnose = Callable[..., dict[str, Any]]


def test_connection_refused_names_the_fix(settings: Settings, diagnose_map: Diagnose) -> None:
    port = infra.free_port()
    url = make_url(settings.database_url).set(port=port).render_as_string(hide_password=False)
    found = diagnose_map(settings.model_copy(update={"database_url": url}), "postgres", "data")
    reach = found["postgres.reachable"]
    assert reach.status == "fail"
    assert "Connection refused" in reach.evidence and str(port) in reach.evidence
    assert "start PostgreSQL" in reach.fix and "DATABASE_URL" in reach.fix
    assert found["postgres.migrations"].status == "skip"
    assert found["data.stale_prices"].status == "skip"


@pytest.fixture
def limited_role(settings: Settings, engine: Engine) -> Iterator[str]:
    """A role with CONNECTION LIMIT 3: exhausting it never touches the server's slots."""
    role = f"doctor_lim_{uuid.uuid4().hex[:8]}"
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 3'))
    yield role
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(
            sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
            {"r": role},
        )
        conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))


def _as_role(settings: Settings, role: str) -> Settings:
    url = make_url(settings.database_url).set(username=role, password=None)
    return settings.model_copy(update={"database_url": url.render_as_string(hide_password=False)})


@contextmanager
def _holding(settings: Settings, n: int) -> Iterator[None]:
    """``n`` connections of the settings' role held open for the block."""
    u = make_url(settings.database_url)
    held = [
        psycopg2.connect(
            host=u.host, port=u.port or 5432, user=u.username, dbname=u.database, connect_timeout=5
        )
        for _ in range(n)
    ]
    try:
        yield
    finally:
        for conn in held:
            conn.close()


def test_connections_exhausted_for_the_role(
    settings: Settings, limited_role: str, diagnose_map: Diagnose
) -> None:
    role_settings = _as_role(settings, limited_role)
    with _holding(role_settings, 3):
        found = diagnose_map(role_settings, "postgres.reachable", "postgres.connections")
    conns = found["postgres.connections"]
    assert conns.status == "fail"
    assert "too many connections" in conns.evidence
    assert conns.fix == CONNECTIONS_FIX
    assert found["postgres.reachable"].status == "fail"
    assert "postgres.connections" in found["postgres.reachable"].fix


def test_connections_near_the_role_limit_warns_with_figures(
    settings: Settings, limited_role: str, diagnose_map: Diagnose
) -> None:
    role_settings = _as_role(settings, limited_role)
    with _holding(role_settings, 1):
        found = diagnose_map(role_settings, "postgres.connections")
    conns = found["postgres.connections"]
    # one held + doctor's own connection: 2 of 3 (67%) is below the 80% warning line
    assert conns.status == "ok", conns
    assert f"role {limited_role}: 2/3 (CONNECTION LIMIT)" in conns.evidence
    assert conns.data["role_limit"] == 3


def test_slow_query_is_named(settings: Settings, engine: Engine, diagnose_map: Diagnose) -> None:
    marker = f"doctor_slow_{uuid.uuid4().hex[:6]}"
    errors: list[BaseException] = []

    def sleeper() -> None:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f"SELECT pg_sleep(20) AS {marker}"))
        except sa.exc.DBAPIError as exc:  # cancelled below
            errors.append(exc)

    thread = threading.Thread(target=sleeper, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                age = conn.execute(
                    sa.text(
                        "SELECT extract(epoch FROM now() - query_start) FROM pg_stat_activity "
                        "WHERE state = 'active' AND query LIKE :q AND pid <> pg_backend_pid()"
                    ),
                    {"q": f"%{marker}%"},
                ).scalar()
                if age is not None and float(age) > 0.6:
                    break
                time.sleep(0.1)
                conn.rollback()
        found = diagnose_map(
            settings.model_copy(update={"doctor_slow_query_s": 0.5}), "postgres.slow_queries"
        )
    finally:
        with engine.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE :q "
                    "AND pid <> pg_backend_pid()"
                ),
                {"q": f"%{marker}%"},
            )
            conn.commit()
        thread.join(10)
    slow = found["postgres.slow_queries"]
    assert slow.status == "warn"
    assert marker in slow.evidence and "active" in slow.evidence
    assert "pg_cancel_backend" in slow.fix
    assert errors, "the sleeping query should have been cancelled"


@pytest.fixture
def scratch_db(settings: Settings) -> Iterator[str]:
    base = make_url(settings.database_url)
    name = f"pricecast_doctor_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield base.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def test_migrations_behind_head(
    settings: Settings, scratch_db: str, diagnose_map: Diagnose
) -> None:
    migrate(scratch_db, "0001_core")
    found = diagnose_map(
        settings.model_copy(update={"database_url": scratch_db}), "postgres", "data"
    )
    mig = found["postgres.migrations"]
    assert mig.status == "fail"
    assert "database at 0001_core" in mig.evidence and "pending" in mig.evidence
    assert "pricecast migrate" in mig.fix
    assert mig.data["current"] == "0001_core"
    assert found["data.stale_prices"].status == "skip"


def test_never_migrated_and_unknown_revision(
    settings: Settings, scratch_db: str, diagnose_map: Diagnose
) -> None:
    scratch = settings.model_copy(update={"database_url": scratch_db})
    never = diagnose_map(scratch, "postgres.migrations")["postgres.migrations"]
    assert never.status == "fail" and "never migrated" in never.evidence
    assert "pricecast migrate" in never.fix

    engine = sa.create_engine(scratch_db)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)"))
        conn.execute(sa.text("INSERT INTO alembic_version VALUES ('9999_future')"))
    engine.dispose()
    ahead = diagnose_map(scratch, "postgres.migrations")["postgres.migrations"]
    assert ahead.status == "fail" and "unknown to this code" in ahead.evidence
    assert "newer release" in ahead.fix


def test_healthy_database(settings: Settings, diagnose_map: Diagnose) -> None:
    found = diagnose_map(settings, "postgres")
    assert {n: f.status for n, f in found.items()} == {
        "postgres.reachable": "ok",
        "postgres.connections": "ok",
        "postgres.slow_queries": "ok",
        "postgres.migrations": "ok",
    }
    assert "at head" in found["postgres.migrations"].evidence
