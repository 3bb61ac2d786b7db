"""API fixtures: an app on the session's real PostgreSQL and Redis, with its own key pair."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from services.api.core.keys import ensure_dev_keys
from services.api.main import create_app
from services.api.state import ApiState
from services.common.config import Settings

ALL_SCOPES = ("prices:read", "predictions:read", "models:read", "models:write")


@pytest.fixture(scope="session")
def key_paths(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return ensure_dev_keys(tmp_path_factory.mktemp("api-keys"))


@pytest.fixture
def api_settings(settings: Settings, key_paths: tuple[Path, Path]) -> Settings:
    private, public = key_paths
    return settings.model_copy(
        update={
            "jwt_private_key_file": private,
            "jwt_public_keys_dir": public,
            "rate_limit_token_per_minute": 10_000,
            # Tests look at Redis directly; the in-process copy has its own test.
            "api_local_cache_ms": 0,
        }
    )


@pytest.fixture
async def app(
    api_settings: Settings, clean_db: Engine, redis_client: redis.Redis
) -> AsyncIterator[FastAPI]:
    application = create_app(api_settings)
    yield application
    await application.state.api.close()


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


Minter = Callable[..., str]


@pytest.fixture
def mint(app: FastAPI) -> Minter:
    state: ApiState = app.state.api

    def _mint(*scopes: str, subject: str | None = None, ttl_s: int | None = None) -> str:
        token, _ = state.tokens.mint(
            subject or f"test-{uuid.uuid4().hex[:8]}", scopes or ALL_SCOPES, ttl_s=ttl_s
        )
        return token

    return _mint


@pytest.fixture
async def db_down_client(
    api_settings: Settings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app whose database is unreachable: any database work would answer 503."""
    down = api_settings.model_copy(
        update={"database_url": "postgresql+psycopg2://postgres@127.0.0.1:1/none"}
    )
    app = create_app(down)
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            yield app, c
    finally:
        await app.state.api.close()
