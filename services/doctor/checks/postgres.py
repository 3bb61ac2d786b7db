"""PostgreSQL: reachable, connection slots, slow queries, migrations."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from services.common.db import current_revision, head_revision
from services.doctor.model import CheckSpec, Context, Finding, describe, probe_reachable

_TOO_MANY = (
    "too many connections",
    "too many clients",
    "remaining connection slots are reserved",
)
CONNECTIONS_FIX = (
    "free slots: close idle sessions (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE state = 'idle' AND usename = current_user), lower PRICECAST_DB_POOL_SIZE x replicas, "
    "or raise the role's CONNECTION LIMIT / max_connections (or put PgBouncer in front)"
)


def is_too_many(error: str) -> bool:
    low = error.lower()
    return any(marker in low for marker in _TOO_MANY)


def connect_fix(error: str, label: str) -> str:
    """The one-line fix for a failed connection, from the driver's message."""
    low = error.lower()
    host_port = label.split("/", 1)[0]
    if is_too_many(error):
        return "connection slots exhausted: see postgres.connections; " + CONNECTIONS_FIX
    if "connection refused" in low:
        return (
            f"nothing listens on {host_port}: start PostgreSQL (or its pod) or point "
            "DATABASE_URL at the host:port it listens on"
        )
    if "could not translate host name" in low or "name or service not known" in low:
        return f"host of {host_port} does not resolve: fix the host in DATABASE_URL (DNS)"
    if "timeout" in low:
        return (
            f"{host_port} does not answer in time: check firewall / NetworkPolicy / security "
            "groups between this host and the database"
        )
    if "password authentication failed" in low or "no pg_hba.conf entry" in low:
        return (
            "credentials refused: check user/password in DATABASE_URL (the Secret) and pg_hba.conf"
        )
    if "does not exist" in low and "database" in low:
        return (
            "create the database (createdb, or pricecast run which creates it), then "
            "pricecast migrate"
        )
    return "check DATABASE_URL and the database server's log"


def reachable(ctx: Context) -> Finding:
    label = ctx.database_label

    def answer() -> tuple[str, dict[str, Any]]:
        with ctx.engine().connect() as conn:
            version = conn.execute(sa.text("SHOW server_version")).scalar()
            db = conn.execute(sa.text("SELECT current_database()")).scalar()
        evidence = f"PostgreSQL {version} at {label} answered (database {db})"
        return evidence, {"server_version": str(version)}

    return probe_reachable("postgres.reachable", label, answer, connect_fix)


_CONNECTIONS_SQL = sa.text(
    """
    SELECT current_user AS role,
           (SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user) AS role_limit,
           (SELECT count(*) FROM pg_stat_activity WHERE usename = current_user) AS role_used,
           (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')
               AS server_used,
           current_setting('max_connections')::int AS max_connections,
           current_setting('superuser_reserved_connections')::int AS reserved,
           (SELECT count(*) FROM pg_stat_activity
             WHERE backend_type = 'client backend' AND state = 'idle') AS idle
    """
)


def connections(ctx: Context, warn_ratio: float = 0.8) -> Finding:
    """Connection slots: server-wide (max_connections) and the role's CONNECTION LIMIT.

    Exhaustion shows up as the connection itself failing, so this check connects on its own
    and reads that failure as its evidence."""
    name = "postgres.connections"
    try:
        with ctx.engine().connect() as conn:
            row = conn.execute(_CONNECTIONS_SQL).mappings().one()
    except Exception as exc:  # noqa: BLE001
        error = describe(exc)
        if is_too_many(error):
            return Finding(name, "fail", f"{ctx.database_label}: {error}", CONNECTIONS_FIX)
        return Finding(name, "skip", f"cannot connect: {error}", "see postgres.reachable")
    usable = max(1, int(row["max_connections"]) - int(row["reserved"]))
    server_used = int(row["server_used"])
    role_limit = int(row["role_limit"])
    role_used = int(row["role_used"])
    ratios = [server_used / usable]
    role_text = f"role {row['role']}: {role_used} (no limit)"
    if role_limit >= 0:
        ratios.append(role_used / max(1, role_limit))
        role_text = f"role {row['role']}: {role_used}/{role_limit} (CONNECTION LIMIT)"
    evidence = (
        f"server: {server_used}/{usable} usable slots (max_connections {row['max_connections']}, "
        f"{row['reserved']} reserved), {row['idle']} idle; {role_text}"
    )
    data = {
        "server_used": server_used,
        "server_usable": usable,
        "role_used": role_used,
        "role_limit": role_limit,
        "idle": int(row["idle"]),
    }
    worst = max(ratios)
    if worst >= 1.0:
        return Finding(name, "fail", evidence, CONNECTIONS_FIX, data)
    if worst >= warn_ratio:
        return Finding(name, "warn", f"{evidence} ({worst:.0%} used)", CONNECTIONS_FIX, data)
    return Finding(name, "ok", evidence, data=data)


_SLOW_SQL = sa.text(
    """
    SELECT pid, usename, application_name, state,
           extract(epoch FROM now() - coalesce(query_start, xact_start)) AS age_s,
           left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS query
    FROM pg_stat_activity
    WHERE datname = current_database() AND pid <> pg_backend_pid()
      AND backend_type = 'client backend'
      AND ((state = 'active' AND now() - query_start > make_interval(secs => :slow))
        OR (state LIKE 'idle in transaction%'
            AND now() - xact_start > make_interval(secs => :idle)))
    ORDER BY age_s DESC
    LIMIT 5
    """
)

_STATEMENTS_SQL = sa.text(
    """
    SELECT round(mean_exec_time::numeric, 1) AS mean_ms, calls,
           left(regexp_replace(query, '\\s+', ' ', 'g'), 80) AS query
    FROM pg_stat_statements
    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND mean_exec_time > :slow_ms
    ORDER BY mean_exec_time DESC
    LIMIT 3
    """
)

SLOW_FIX = (
    "inspect with SELECT pid, now()-query_start, query FROM pg_stat_activity; cancel with "
    "pg_cancel_backend(pid); EXPLAIN ANALYZE the query (missing index? bars read from "
    "price_ticks instead of price_1h/1d?); commit or roll back idle transactions"
)


def slow_queries(ctx: Context) -> Finding:
    """Long-running statements and idle-in-transaction sessions in this database; the slowest
    statements on average when pg_stat_statements is installed."""
    name = "postgres.slow_queries"
    settings = ctx.settings
    with ctx.engine().connect() as conn:
        rows = (
            conn.execute(
                _SLOW_SQL,
                {"slow": settings.doctor_slow_query_s, "idle": settings.doctor_idle_in_tx_s},
            )
            .mappings()
            .all()
        )
        has_statements = bool(
            conn.execute(
                sa.text("SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'")
            ).scalar()
        )
        statements: list[sa.RowMapping] = []
        if has_statements:
            try:
                statements = list(
                    conn.execute(
                        _STATEMENTS_SQL, {"slow_ms": settings.doctor_slow_query_s * 1000}
                    ).mappings()
                )
            except sa.exc.DBAPIError:  # extension created but not preloaded
                has_statements = False
    parts = [
        f"pid {row['pid']} {row['state']} {float(row['age_s']):.1f}s "
        f"({row['application_name'] or '?'}): "
        f"{row['query']}"
        for row in rows
    ]
    parts += [f"avg {row['mean_ms']} ms x {row['calls']}: {row['query']}" for row in statements]
    data = {
        "long_running": [dict(row) | {"age_s": float(row["age_s"])} for row in rows],
        "pg_stat_statements": has_statements,
    }
    if parts:
        return Finding(name, "warn", "; ".join(parts), SLOW_FIX, data)
    extra = "" if has_statements else " (pg_stat_statements not installed: averages unknown)"
    return Finding(
        name,
        "ok",
        f"no statement active > {settings.doctor_slow_query_s:g}s, no transaction idle > "
        f"{settings.doctor_idle_in_tx_s:g}s{extra}",
        data=data,
    )


def migrations(ctx: Context) -> Finding:
    name = "postgres.migrations"
    head = head_revision(ctx.settings.database_url)
    current = current_revision(ctx.engine())
    data = {"current": current, "head": head}
    if current is None:
        return Finding(
            name,
            "fail",
            "no alembic_version: the schema was never migrated",
            "run pricecast migrate (make migrate / the migrate Job) before the services",
            data,
        )
    if current == head:
        return Finding(name, "ok", f"at head {head}", data=data)
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from services.common.db import alembic_config

    cfg = alembic_config(ctx.settings.database_url)
    assert isinstance(cfg, Config)
    script = ScriptDirectory.from_config(cfg)
    known = {rev.revision for rev in script.walk_revisions()}
    if current not in known:
        return Finding(
            name,
            "fail",
            f"database at {current}, unknown to this code (head {head})",
            "the database was migrated by a newer release: deploy that release (or downgrade "
            "with its alembic) instead of running older code against it",
            data,
        )
    pending = [
        rev.revision for rev in script.iterate_revisions(head, current) if rev.revision != current
    ]
    return Finding(
        name,
        "fail",
        f"database at {current}, code expects {head} ({len(pending)} pending: "
        f"{', '.join(reversed(pending))})",
        "run pricecast migrate (alembic upgrade head) before starting the services",
        data | {"pending": list(reversed(pending))},
    )


CHECKS = (
    CheckSpec("postgres.reachable", reachable, about="PostgreSQL answers SELECT"),
    CheckSpec("postgres.connections", connections, about="connection slots left"),
    CheckSpec("postgres.slow_queries", slow_queries, needs=("postgres.reachable",)),
    CheckSpec("postgres.migrations", migrations, needs=("postgres.reachable",)),
)
