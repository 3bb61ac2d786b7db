"""Doctor fixtures: a private Redis (so hit rate and evictions are ours alone), free service
ports and a state directory of its own, on top of the session's database and broker."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.common import infra
from services.common.config import Settings
from services.common.kafka import ensure_topics
from services.doctor import scheduler
from services.doctor.model import Context, Finding


@pytest.fixture
def private_redis() -> Iterator[infra.RedisServer]:
    server = infra.RedisServer()
    yield server
    server.stop()


@pytest.fixture
def doctor_settings(
    isolated_settings: Settings,
    private_redis: infra.RedisServer,
    tmp_path: Path,
) -> Settings:
    """Settings of a healthy stack: isolated topics created, a private Redis, free ports."""
    settings = isolated_settings.model_copy(
        update={
            "redis_url": private_redis.url,
            "state_dir": tmp_path / "state",
            "api_port": infra.free_port(),
            "ingest_health_port": infra.free_port(),
            "predict_health_port": infra.free_port(),
        }
    )
    asyncio.run(ensure_topics(settings))
    return settings


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that accepts TCP connections and never answers (a hung dependency)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield int(sock.getsockname()[1])
    sock.close()


Diagnose = Callable[..., dict[str, Finding]]


@pytest.fixture
def diagnose_map() -> Diagnose:
    """``diagnose_map(settings, "kafka", ...)`` -> findings by check name."""

    def run(
        settings: Settings, *only: str, environ: dict[str, str] | None = None
    ) -> dict[str, Finding]:
        ctx = Context(settings, environ=environ)
        try:
            return {f.name: f for f in scheduler.run(ctx, scheduler.select(list(only)))}
        finally:
            ctx.close()

    return run
