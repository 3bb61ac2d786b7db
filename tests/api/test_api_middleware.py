"""Headers on every response, error shape, body limit, CORS, slow-request log, DB down."""

from __future__ import annotations

import logging

import httpx
import pytest
from _api_helpers import assert_error, bearer
from fastapi import FastAPI
from prometheus_client import REGISTRY

from services.api.main import create_app
from services.common.config import Settings


def _assert_stamped(r: httpx.Response) -> None:
    assert r.headers["x-request-id"]
    assert float(r.headers["x-process-time"]) >= 0


async def test_headers_on_every_kind_of_response(client: httpx.AsyncClient, mint) -> None:
    responses = [
        await client.get("/health"),
        await client.get("/api/v1/assets"),  # 401
        await client.get("/api/v1/assets", headers=bearer(mint("models:read"))),  # 403
        await client.get("/nope"),  # 404
        await client.put("/api/v1/assets"),  # 405
        await client.get("/api/v1/assets?limit=0", headers=bearer(mint())),  # 422
        await client.get("/.well-known/jwks.json"),
    ]
    assert [r.status_code for r in responses] == [200, 401, 403, 404, 405, 422, 200]
    for r in responses:
        _assert_stamped(r)
        if r.status_code >= 400:
            assert set(r.json()) == {"error"}
            assert set(r.json()["error"]) == {"code", "message", "details"}


async def test_request_id_is_echoed_when_sane(client: httpx.AsyncClient) -> None:
    r = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    evil = await client.get("/health", headers={"X-Request-ID": "x" * 200})
    assert evil.headers["x-request-id"] != "x" * 200


async def test_body_size_limit(client: httpx.AsyncClient, mint) -> None:
    big = {"symbol": "BTC-USD", "reason": "x" * 100_000}
    r = await client.post("/api/v1/models/retrain", json=big, headers=bearer(mint()))
    assert_error(r, 413, "ERR_PAYLOAD_TOO_LARGE")
    _assert_stamped(r)

    async def chunks():  # no Content-Length: the streamed body is counted
        for _ in range(100):
            yield b"x" * 1024

    streamed = await client.post(
        "/api/v1/auth/token",
        content=chunks(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert streamed.status_code == 413


async def test_unexpected_errors_are_500_without_traceback(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    @app.get("/boom-test-only")
    async def boom() -> None:
        raise RuntimeError("internal detail that must not leak")

    with caplog.at_level(logging.ERROR):
        r = await client.get("/boom-test-only")
    assert r.status_code == 500
    assert r.json() == {
        "error": {"code": "ERR_INTERNAL", "message": "Internal server error", "details": {}}
    }
    assert "internal detail" not in r.text and "Traceback" not in r.text
    _assert_stamped(r)
    assert any("internal detail" in (rec.exc_text or str(rec.exc_info)) for rec in caplog.records)


async def test_slow_requests_are_logged(
    app: FastAPI, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    @app.get("/slow-test-only")
    async def slow() -> dict[str, bool]:
        await asyncio.sleep(0.55)
        return {"ok": True}

    with caplog.at_level(logging.WARNING, logger="services.api.access"):
        await client.get("/slow-test-only")
        await client.get("/health")
    slow_logs = [r.getMessage() for r in caplog.records if "slow request" in r.getMessage()]
    assert len(slow_logs) == 1 and "/slow-test-only" in slow_logs[0]


async def test_cors_allowlist(api_settings: Settings) -> None:
    app = create_app(api_settings.model_copy(update={"cors_origins": "https://ok.example"}))
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            pre = {"Access-Control-Request-Method": "GET"}
            good = await c.options(
                "/api/v1/assets", headers={"Origin": "https://ok.example", **pre}
            )
            assert good.headers["access-control-allow-origin"] == "https://ok.example"
            bad = await c.options(
                "/api/v1/assets", headers={"Origin": "https://evil.example", **pre}
            )
            assert "access-control-allow-origin" not in bad.headers
            _assert_stamped(bad)
    finally:
        await app.state.api.close()


async def test_database_down_is_503_err_db_001(
    db_down_client: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    app, c = db_down_client
    token, _ = app.state.api.tokens.mint("ops", ["prices:read", "predictions:read"])
    r = await c.get("/api/v1/assets", headers=bearer(token))
    assert_error(r, 503, "ERR_DB_001")
    p = await c.get("/api/v1/predictions/NOT-CACHED", headers=bearer(token))
    assert p.status_code == 503 and p.json()["error"]["code"] == "ERR_DB_001"
    assert (await c.get("/health")).status_code == 200  # liveness checks nothing
    ready = await c.get("/health/ready")
    assert ready.status_code == 503
    detailed = (await c.get("/health/detailed")).json()
    assert detailed["status"] == "unhealthy"
    assert detailed["services"]["database"] == "unhealthy"


async def test_metrics_by_route_template(client: httpx.AsyncClient, mint) -> None:
    await client.get("/api/v1/assets/ZZZ", headers=bearer(mint()))
    value = REGISTRY.get_sample_value(
        "pricecast_http_request_duration_seconds_count",
        {"route": "/api/v1/assets/{symbol}", "method": "GET"},
    )
    assert value is not None and value >= 1
    r = await client.get("/metrics")
    assert r.status_code == 200
    assert "pricecast_auth_failures_total" in r.text
    assert "pricecast_cache_requests_total" in r.text
