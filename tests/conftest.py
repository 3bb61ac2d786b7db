"""Fixtures on real infrastructure: PostgreSQL, Redis and the Tansu Kafka broker.

Each pytest session gets its own freshly migrated database and its own broker; Redis uses a
database index of its own. Nothing is mocked here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from own_topics import own_topics
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import DEFAULT_REDIS_URL, Settings
from services.common.db import scratch_database as _scratch_database

DATA_TABLES = (
    "price_ticks",
    "predictions",
    "forecast_calibration",
    "prediction_status",
    "model_versions",
    "retrain_requests",
    "refresh_tokens",
    "api_clients",
    "assets",
)


@pytest.fixture(scope="session")
def broker() -> Iterator[infra.Broker]:
    b = infra.start_tansu()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(broker: infra.Broker) -> str:
    return broker.bootstrap


@pytest.fixture(scope="session")
def scratch_database() -> Callable[..., AbstractContextManager[str]]:
    """``with scratch_database(prefix, migrated=...) as url``: a database of the test's own."""
    return _scratch_database


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    with _scratch_database(f"pricecast_test_{os.getpid()}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url() -> str:
    base = os.environ.get("REDIS_URL", DEFAULT_REDIS_URL).rsplit("/", 1)[0]
    url = f"{base}/{1 + os.getpid() % 14}"  # 1..14: db 15 is the benchmarks' (flushed)
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="session")
def settings(
    database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    return Settings(
        DATABASE_URL=database_url,
        REDIS_URL=redis_url,
        KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        env="test",
        state_dir=Path(tmp_path_factory.mktemp("state")),
        kafka_partitions=3,
    )


@pytest.fixture
def isolated_settings(settings: Settings) -> Settings:
    """Settings with topics and consumer groups of their own, for tests that share a broker."""
    return own_topics(settings)


@pytest.fixture(scope="session")
def engine(settings: Settings) -> Iterator[Engine]:
    eng = sa.create_engine(settings.database_url, pool_size=5)
    yield eng
    eng.dispose()


@pytest.fixture
def clean_db(engine: Engine) -> Engine:
    """Empty every data table (bars included, whatever path maintains them)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"TRUNCATE {', '.join(DATA_TABLES)} CASCADE"))
        conn.execute(sa.text("SELECT pricecast_reset_bars()")) if _has_reset(conn) else None
        # A retention round leaves its horizon behind; later tests must start without one.
        conn.execute(
            sa.text(
                "DELETE FROM pricecast_meta"
                " WHERE key IN ('ticks_dropped_before', 'late_ticks_ignored')"
            )
        )
    return engine


def _has_reset(conn: sa.Connection) -> bool:
    return bool(
        conn.execute(sa.text("SELECT to_regproc('pricecast_reset_bars') IS NOT NULL")).scalar()
    )


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()
