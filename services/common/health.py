"""Health checks and the ``/health*`` + ``/metrics`` surface shared by every service.

``/health`` is liveness: it checks nothing but the process. ``/health/ready`` fails when a
*critical* dependency is down (the database for every service; Kafka for the workers).
``/health/detailed`` runs every check concurrently, each bounded by a timeout, and answers
the shape docs/architecture.md gives; a non-critical dependency down (Redis for the API) makes
it ``degraded``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis
import sqlalchemy as sa
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy.engine import Engine

from services import __version__
from services.common.config import comma_items
from services.common.metrics import DEPENDENCY_UP

Status = Literal["healthy", "degraded", "unhealthy"]
CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class CheckResult:
    status: Status
    latency_ms: float
    detail: str = ""


Check = Callable[[], Awaitable[CheckResult]]
Extra = Callable[[], Awaitable[dict[str, Any]]]


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 2)


async def check_database(engine: Engine) -> CheckResult:
    start = time.perf_counter()

    def ping() -> None:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await asyncio.to_thread(ping)
        return CheckResult("healthy", _ms(start), "SELECT 1 ok")
    except Exception as exc:  # noqa: BLE001 - any failure is reported, never raised
        return CheckResult("unhealthy", _ms(start), describe(exc))


async def check_redis(client: aioredis.Redis) -> CheckResult:
    start = time.perf_counter()
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await client.ping()
        return CheckResult("healthy", _ms(start), "PING ok")
    except Exception as exc:  # noqa: BLE001
        return CheckResult("unhealthy", _ms(start), describe(exc))


async def check_kafka(bootstrap: str) -> CheckResult:
    """A TCP connection to a bootstrap server (cheap; doctor does the metadata round trip)."""
    start = time.perf_counter()
    errors = []
    for server in comma_items(bootstrap):
        host, _, port = server.rpartition(":")
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                _, writer = await asyncio.open_connection(host.strip("[]"), int(port))
            writer.close()
            return CheckResult("healthy", _ms(start), f"{server} reachable")
        except Exception as exc:  # noqa: BLE001
            errors.append(f"{server}: {describe(exc)}")
    return CheckResult("unhealthy", _ms(start), "; ".join(errors) or "no bootstrap servers")


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]


async def run_checks(
    checks: dict[str, Check], budget_s: float = CHECK_TIMEOUT_S + 0.5
) -> dict[str, CheckResult]:
    """Every check at once, each cut off (and reported unhealthy) after ``budget_s``."""
    names = list(checks)

    async def guarded(name: str) -> CheckResult:
        start = time.perf_counter()
        try:
            async with asyncio.timeout(budget_s):
                return await checks[name]()
        except Exception as exc:  # noqa: BLE001
            return CheckResult("unhealthy", _ms(start), describe(exc))

    results = await asyncio.gather(*(guarded(check_name) for check_name in names))
    for name, result in zip(names, results, strict=True):
        DEPENDENCY_UP.labels(name).set(1 if result.status == "healthy" else 0)
    return dict(zip(names, results, strict=True))


def overall(results: dict[str, CheckResult], critical: set[str]) -> Status:
    if any(result.status == "unhealthy" for name, result in results.items() if name in critical):
        return "unhealthy"
    if any(result.status != "healthy" for result in results.values()):
        return "degraded"
    return "healthy"


def health_router(
    checks: dict[str, Check],
    critical: set[str],
    extra: Extra | None = None,
    budget_s: float = CHECK_TIMEOUT_S + 0.5,
) -> APIRouter:
    """``/health``, ``/health/ready``, ``/health/{db,redis,kafka}``, ``/health/detailed``,
    ``/metrics``. ``checks`` keys are ``database``, ``redis``, ``kafka`` (and any other); each
    check is cut off after ``budget_s``. ``extra`` adds sections to ``/health/detailed``; a
    ``data`` section whose ``status`` is ``degraded`` (stale symbols) lowers ``healthy``."""
    router = APIRouter(tags=["health"])

    @router.get("/health", summary="Liveness: the process answers")
    async def live() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/health/ready",
        summary="Readiness: critical dependencies answer",
        responses={503: {"description": "a critical dependency is down"}},
    )
    async def ready() -> JSONResponse:
        results = await run_checks(
            {name: check for name, check in checks.items() if name in critical}, budget_s
        )
        down = {
            name: result.detail for name, result in results.items() if result.status != "healthy"
        }
        status = 503 if down else 200
        return JSONResponse({"ready": not down, "down": down}, status_code=status)

    def single(name: str) -> None:
        path = {"database": "/health/db"}.get(name, f"/health/{name}")

        @router.get(
            path,
            summary=f"{name} check",
            responses={503: {"description": f"{name} is down"}},
        )
        async def one() -> JSONResponse:
            result = (await run_checks({name: checks[name]}, budget_s))[name]
            return JSONResponse(
                {"name": name, **asdict(result)},
                status_code=200 if result.status == "healthy" else 503,
            )

    for name in checks:
        single(name)

    @router.get("/health/detailed", summary="Every dependency and the data's trustworthiness")
    async def detailed() -> dict[str, Any]:
        results = await run_checks(checks, budget_s)
        body: dict[str, Any] = {
            "status": overall(results, critical),
            "timestamp": datetime.now(UTC).isoformat(),
            "version": __version__,
            "services": {name: result.status for name, result in results.items()},
            "checks": {name: asdict(result) for name, result in results.items()},
        }
        if extra is not None:
            try:
                async with asyncio.timeout(budget_s + 0.5):
                    body.update(await extra())
            except Exception as exc:  # noqa: BLE001
                body["extra_error"] = describe(exc)
        data = body.get("data")
        if (
            body["status"] == "healthy"
            and isinstance(data, dict)
            and data.get("status") == "degraded"
        ):
            body["status"] = "degraded"
        return body

    @router.get("/metrics", summary="Prometheus metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


async def serve_worker_http(router: APIRouter, port: int, host: str = "0.0.0.0") -> None:  # noqa: S104
    """Serve the health router in the current event loop until cancelled."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI(title="pricecast worker", docs_url=None, redoc_url=None, openapi_url=None)
    app.include_router(router)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    server = uvicorn.Server(config)
    # ``_serve`` skips uvicorn's signal capture: the service owning the loop handles SIGTERM.
    try:
        await server._serve()
    finally:
        server.should_exit = True
