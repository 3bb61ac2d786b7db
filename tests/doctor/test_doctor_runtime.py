"""Ports held by strangers, production environment, the compute device."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from services.common import infra
from services.common.config import Settings
from services.common.health import health_router

Diagnose = Callable[..., dict[str, Any]]


@pytest.fixture
def squatter(silent_listener: int) -> int:
    """A plain socket listening on a port (not a Pricecast service)."""
    return silent_listener


@pytest.fixture
def pricecast_health() -> Iterator[int]:
    """A real Pricecast /health surface on a free port."""
    port = infra.free_port()
    app = FastAPI()
    app.include_router(health_router({}, set()))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    infra.wait_tcp("127.0.0.1", port, 10)
    yield port
    server.should_exit = True
    thread.join(10)


def test_port_held_by_another_process(
    settings: Settings, squatter: int, pricecast_health: int, diagnose_map: Diagnose
) -> None:
    free = infra.free_port()
    ports = settings.model_copy(
        update={
            "api_port": squatter,
            "ingest_health_port": pricecast_health,
            "predict_health_port": free,
        }
    )
    found = diagnose_map(ports, "runtime.ports")["runtime.ports"]
    assert found.status == "fail"
    assert f"api {squatter} held by pid {os.getpid()}" in found.evidence
    assert f"ingest {pricecast_health} pricecast /health answers" in found.evidence
    assert f"predict {free} free" in found.evidence
    assert "PRICECAST_API_PORT=<free port>" in found.fix and "ss -ltnp" in found.fix


def test_ports_free_or_pricecast_pass(
    settings: Settings, pricecast_health: int, diagnose_map: Diagnose
) -> None:
    ports = settings.model_copy(
        update={
            "api_port": pricecast_health,
            "ingest_health_port": infra.free_port(),
            "predict_health_port": infra.free_port(),
        }
    )
    assert diagnose_map(ports, "runtime.ports")["runtime.ports"].status == "ok"


def test_missing_environment_in_prod(settings: Settings, diagnose_map: Diagnose) -> None:
    prod = settings.model_copy(update={"env": "prod"})
    found = diagnose_map(prod, "config", environ={"REDIS_URL": "redis://r:6379/0"})
    env = found["config.environment"]
    assert env.status == "fail"
    assert "DATABASE_URL" in env.evidence and "KAFKA_BOOTSTRAP_SERVERS" in env.evidence
    assert "REDIS_URL" not in env.evidence.split(";")[1]
    assert "PRICECAST_JWT_PUBLIC_KEYS_DIR" in env.evidence
    full = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "PRICECAST_JWT_PUBLIC_KEYS_DIR": "/keys",
    }
    assert diagnose_map(prod, "config", environ=full)["config.environment"].status == "ok"
    dev = diagnose_map(settings, "config", environ={})["config.environment"]
    assert dev.status == "ok" and "defaults in use" in dev.evidence


def test_device_is_reported(settings: Settings, diagnose_map: Diagnose) -> None:
    import importlib.metadata

    version = importlib.metadata.version("torch")
    cuda = diagnose_map(settings, "runtime.cuda")["runtime.cuda"]
    assert cuda.status == "ok" and version in cuda.evidence
    if "+cpu" in version:
        assert cuda.data["device"] == "cpu" and "CPU build" in cuda.evidence
    hidden = diagnose_map(settings, "runtime.cuda", environ={"CUDA_VISIBLE_DEVICES": ""})
    assert hidden["runtime.cuda"].data["device"] == "cpu"


def test_a_hanging_check_is_cut_at_its_deadline(settings: Settings) -> None:
    from services.doctor import scheduler
    from services.doctor.model import CheckSpec, Context, Finding

    def hangs(ctx: Context) -> Finding:
        time.sleep(30)
        return Finding("test.hangs", "ok", "never")

    def after(ctx: Context) -> Finding:
        return Finding("test.after", "ok", "ran")

    specs = [CheckSpec("test.hangs", hangs), CheckSpec("test.after", after, needs=("test.hangs",))]
    ctx = Context(settings.model_copy(update={"doctor_check_timeout_s": 0.3}))
    start = time.monotonic()
    findings = scheduler.run(ctx, specs)
    assert time.monotonic() - start < 1.5
    assert [(f.name, f.status) for f in findings] == [
        ("test.hangs", "fail"),
        ("test.after", "skip"),
    ]
    assert "timed out" in findings[0].evidence


def test_select_by_prefix_glob_and_dependencies() -> None:
    from services.doctor.scheduler import select

    names = [c.name for c in select(["kafka.consumer_lag"])]
    assert names == ["kafka.broker", "kafka.advertised", "kafka.topics", "kafka.consumer_lag"]
    assert {c.name for c in select(["*.reachable"])} == {"postgres.reachable", "redis.reachable"}
    assert all(c.name.startswith("redis.") for c in select(["redis"]))
    with pytest.raises(ValueError, match="unknown check"):
        select(["nope"])
