"""SQLAlchemy engine creation, start-up wait and migrations."""

from __future__ import annotations

import io
import logging
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine, make_url
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from services.common.config import DEFAULT_DATABASE_URL, Settings

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def make_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """An engine with bounded pool, pre-ping (survives DB restarts) and a statement timeout."""
    return sa.create_engine(
        settings.database_url,
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_s,
        pool_pre_ping=True,
        pool_recycle=1800,
        connect_args={
            "connect_timeout": 5,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms}",
            "application_name": "pricecast",
        },
    )


def wait_for_db(engine: Engine, timeout_s: float) -> None:
    """Block until the database answers (bounded exponential backoff), like the template's
    ``backend_pre_start``."""

    @retry(
        stop=stop_after_delay(timeout_s),
        wait=wait_exponential(multiplier=0.2, max=5),
        retry=retry_if_exception_type(sa.exc.OperationalError),
        reraise=True,
    )
    def _ping() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    _ping()


def ensure_database(url: str) -> None:
    """Create the database named in ``url`` if the server answers and it is missing."""
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                {"name": parsed.database},
            ).scalar()
            if not exists:
                conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
                log.info("created database %s", parsed.database)
    finally:
        admin.dispose()


def alembic_config(database_url: str) -> object:
    from alembic.config import Config

    cfg = Config(str(REPO_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(REPO_ROOT / "alembic"))
    cfg.attributes["database_url"] = database_url
    cfg.attributes["configure_logger"] = False
    return cfg


def migrate(database_url: str, revision: str = "head") -> None:
    """``alembic upgrade head`` against ``database_url``."""
    from alembic import command
    from alembic.config import Config

    cfg = alembic_config(database_url)
    assert isinstance(cfg, Config)
    command.upgrade(cfg, revision)


@contextmanager
def scratch_database(prefix: str, *, migrated: bool = True) -> Iterator[str]:
    """A new database ``<prefix>_<random>`` on the server of ``DATABASE_URL`` (migrated unless
    told otherwise), dropped afterwards; yields its URL. For tests and benchmarks."""
    base = make_url(os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL))
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(base.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = base.set(database=name).render_as_string(hide_password=False)
    try:
        if migrated:
            migrate(url)
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        try:
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa.exc.ProgrammingError:
            return None


def head_revision(database_url: str) -> str | None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    cfg = alembic_config(database_url)
    assert isinstance(cfg, Config)
    return ScriptDirectory.from_config(cfg).get_current_head()


TickRow = tuple[str, datetime, float, float, str]  # symbol, ts, price, volume, source


def tick_tsv(ticks: Iterable[TickRow]) -> str:
    """The COPY text of ``ticks`` for :func:`copy_ticks` (``repr`` keeps every float exact)."""
    return "".join(
        f"{symbol}\t{ts.isoformat()}\t{price!r}\t{volume!r}\t{source}\n"
        for symbol, ts, price, volume, source in ticks
    )


def copy_ticks(conn: sa.Connection, tsv: str, *, on_conflict: bool = False) -> int:
    """Bulk-load ticks, one ``symbol<TAB>ts<TAB>price<TAB>volume<TAB>source`` line each, the way
    the ingestion writer stores them: COPY into a temporary staging table, then one INSERT into
    ``price_ticks`` (so the bar maintenance runs as for live ticks); ``on_conflict`` skips ticks
    already stored. For seeding (tests, benchmarks). Returns the number of rows inserted."""
    cur = conn.connection.cursor()
    cur.execute(
        "CREATE TEMP TABLE IF NOT EXISTS stage_ticks (symbol text, ts timestamptz, "
        "price float8, volume float8, source text) ON COMMIT DELETE ROWS"
    )
    cur.execute("TRUNCATE stage_ticks")  # a second load in the same transaction starts empty
    cur.copy_expert("COPY stage_ticks FROM STDIN", io.StringIO(tsv))
    cur.execute(
        "INSERT INTO price_ticks (symbol, ts, price, volume, source) "
        "SELECT symbol, ts, price, volume, source FROM stage_ticks"
        + (" ON CONFLICT DO NOTHING" if on_conflict else "")
    )
    return int(cur.rowcount)
