"""The shared health surface against the real database, Redis and broker."""

from __future__ import annotations

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from services.common import infra
from services.common.config import Settings
from services.common.health import (
    CheckResult,
    check_database,
    check_kafka,
    check_redis,
    health_router,
    overall,
)


def _app(settings: Settings, engine: Engine, redis_url: str, kafka: str) -> FastAPI:
    client = aioredis.Redis.from_url(redis_url, socket_connect_timeout=0.5, socket_timeout=0.5)

    async def extra() -> dict[str, object]:
        return {"consumer_lag": 0}

    app = FastAPI()
    app.include_router(
        health_router(
            {
                "database": lambda: check_database(engine),
                "redis": lambda: check_redis(client),
                "kafka": lambda: check_kafka(kafka),
            },
            critical={"database"},
            extra=extra,
        )
    )
    return app


def test_all_healthy(settings: Settings, engine: Engine) -> None:
    app = _app(settings, engine, settings.redis_url, settings.kafka_bootstrap_servers)
    with TestClient(app) as http:
        assert http.get("/health").json() == {"status": "ok"}
        assert http.get("/health/ready").status_code == 200
        assert http.get("/health/db").status_code == 200
        body = http.get("/health/detailed").json()
        assert body["status"] == "healthy"
        assert body["services"] == {"database": "healthy", "redis": "healthy", "kafka": "healthy"}
        assert body["checks"]["database"]["latency_ms"] >= 0
        assert body["consumer_lag"] == 0
        assert "pricecast_dependency_up" in http.get("/metrics").text


def test_redis_and_kafka_down_degrade_but_stay_ready(settings: Settings, engine: Engine) -> None:
    closed = infra.free_port()
    app = _app(settings, engine, f"redis://127.0.0.1:{closed}/0", f"127.0.0.1:{closed}")
    with TestClient(app) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/health/ready").status_code == 200
        assert http.get("/health/redis").status_code == 503
        body = http.get("/health/detailed").json()
        assert body["status"] == "degraded"
        assert body["services"]["redis"] == "unhealthy"
        assert (
            "Connection" in body["checks"]["kafka"]["detail"] or body["checks"]["kafka"]["detail"]
        )


def test_database_down_is_unhealthy_and_not_ready(settings: Settings) -> None:
    import sqlalchemy as sa

    dead = sa.create_engine(
        f"postgresql+psycopg2://postgres@127.0.0.1:{infra.free_port()}/x",
        connect_args={"connect_timeout": 1},
    )
    app = _app(settings, dead, settings.redis_url, settings.kafka_bootstrap_servers)
    with TestClient(app) as http:
        assert http.get("/health").status_code == 200
        ready = http.get("/health/ready")
        assert ready.status_code == 503
        assert "database" in ready.json()["down"]
        assert http.get("/health/detailed").json()["status"] == "unhealthy"


def test_overall_rules() -> None:
    ok = CheckResult("healthy", 1.0)
    bad = CheckResult("unhealthy", 1.0)
    assert overall({"database": ok, "redis": ok}, {"database"}) == "healthy"
    assert overall({"database": ok, "redis": bad}, {"database"}) == "degraded"
    assert overall({"database": bad, "redis": ok}, {"database"}) == "unhealthy"
