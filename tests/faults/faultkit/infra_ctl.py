"""Infrastructure the suite owns and breaks: the Tansu broker, a private Redis, a PostgreSQL
role with a connection limit (the pool-exhaustion fault). The machine's PostgreSQL and Redis
are shared with other tests and are never stopped."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL

from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics


class BrokerCtl:
    """The in-memory broker, killed and restarted on the same port.

    ``epoch`` counts broker instances: an acknowledgement is attributed to the instance alive
    when it arrived. It is bumped after the old instance is dead and before the new one is
    spawned, so no acknowledgement can be attributed to the wrong instance.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.epoch = 0
        self.broker = infra.start_tansu(log_path=log_dir / "tansu-0.log")
        self.port = self.broker.port
        self.killed_at: list[float] = []

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.broker.proc.kill()
        self.broker.proc.wait(10)
        self.killed_at.append(time.monotonic())

    def start(self, settings: Settings) -> None:
        self.epoch += 1
        self.broker = infra.start_tansu(
            port=self.port, log_path=self.log_dir / f"tansu-{self.epoch}.log"
        )
        # An in-memory broker comes back without topics: provision them again, as the
        # platform does for a fresh cluster (with Apache Kafka they survive a restart).
        asyncio.run(ensure_topics(settings, timeout_s=20))

    def stop(self) -> None:
        self.broker.stop()


class RedisCtl(infra.RedisServer):
    """A private redis-server, stopped and started on the same port; logs to ``log_dir``."""

    def __init__(self, log_dir: Path) -> None:
        super().__init__(log_path=log_dir / "redis.log")


class ConnectionHog:
    """Holds every connection slot of a role open (``CONNECTION LIMIT``), so the services
    connecting as that role cannot get a new connection: their pools are exhausted."""

    def __init__(self, url: URL, limit: int) -> None:
        self.url = url
        self.limit = limit
        self.conns: list[object] = []

    def grab(self, timeout_s: float = 10.0) -> int:
        import psycopg2

        deadline = time.monotonic() + timeout_s
        while len(self.conns) < self.limit and time.monotonic() < deadline:
            try:
                self.conns.append(
                    psycopg2.connect(
                        host=self.url.host,
                        port=self.url.port,
                        user=self.url.username,
                        dbname=self.url.database,
                        connect_timeout=2,
                        application_name="faults-hog",
                    )
                )
            except psycopg2.OperationalError:
                time.sleep(0.05)  # a slot is still held by a service; it frees on its own
        return len(self.conns)

    def release(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):  # closing is best effort
                conn.close()  # type: ignore[attr-defined]
        self.conns.clear()


def create_limited_role(admin_url: URL, database: str, role: str, limit: int) -> None:
    """A login role with a connection limit and every privilege the services need."""
    admin = sa.create_engine(admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT {int(limit)}'))
            conn.execute(sa.text(f'GRANT CONNECT, TEMP ON DATABASE "{database}" TO "{role}"'))
    finally:
        admin.dispose()
    db = sa.create_engine(admin_url.set(database=database), isolation_level="AUTOCOMMIT")
    try:
        with db.connect() as conn:
            for stmt in (
                f'GRANT USAGE, CREATE ON SCHEMA public TO "{role}"',
                f'GRANT ALL ON ALL TABLES IN SCHEMA public TO "{role}"',
                f'GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO "{role}"',
                f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA public TO "{role}"',
            ):
                conn.execute(sa.text(stmt))
    finally:
        db.dispose()


def drop_role(admin_url: URL, role: str) -> None:
    admin = sa.create_engine(admin_url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"
                ),
                {"r": role},
            )
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
    finally:
        admin.dispose()


def wait_exit(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        return None
