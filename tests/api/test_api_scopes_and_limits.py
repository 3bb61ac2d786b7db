"""Scope enforcement on every route, per-subject rate limiting, and the route inventory."""

from __future__ import annotations

import httpx
import pytest
from _api_helpers import PROTECTED, PUBLIC, STREAMS, add_asset, assert_error, bearer
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from services.api.core.security import SCOPES


def test_every_api_route_is_classified(app: FastAPI) -> None:
    """A new route cannot slip in without a decision about its scope."""
    routes = {
        (method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        if path.startswith(("/api/", "/.well-known"))
        for method in operations
    }
    known = {(m, t) for m, t, _, _ in PROTECTED} | PUBLIC | STREAMS
    assert routes == known


@pytest.mark.parametrize(("method", "template", "path", "scope"), PROTECTED)
async def test_scope_enforced(
    client: httpx.AsyncClient,
    mint,
    clean_db: Engine,
    method: str,
    template: str,
    path: str,
    scope: str | None,
) -> None:
    add_asset(clean_db, "BTC-USD")
    kwargs = {"json": {"symbol": "BTC-USD"}} if method == "POST" and "retrain" in path else {}
    anonymous = await client.request(method, path, **kwargs)
    assert_error(anonymous, 401, "ERR_AUTH_001")
    if scope is not None:
        others = [s for s in SCOPES if s != scope]
        lacking = await client.request(method, path, headers=bearer(mint(*others)), **kwargs)
        assert lacking.status_code == 403, lacking.text
        assert lacking.json()["error"] == {
            "code": "ERR_AUTH_002",
            "message": "Token lacks the required scope",
            "details": {"required_scope": scope},
        }
    granted_scopes = (scope,) if scope else ("prices:read",)
    granted = await client.request(method, path, headers=bearer(mint(*granted_scopes)), **kwargs)
    assert granted.status_code not in (401, 403), granted.text


async def test_rate_limit_per_subject_with_retry_after(
    app: FastAPI, client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    app.state.api.settings = app.state.api.settings.model_copy(update={"rate_limit_per_minute": 5})
    add_asset(clean_db, "BTC-USD")
    token = mint("prices:read", subject="greedy")
    codes = [
        (await client.get("/api/v1/assets", headers=bearer(token))).status_code for _ in range(7)
    ]
    assert codes == [200] * 5 + [429, 429]
    r = await client.get("/api/v1/assets", headers=bearer(token))
    assert r.json()["error"]["code"] == "ERR_RATE_001"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # The same subject with another token shares the budget; another subject does not.
    other_token = mint("prices:read", subject="greedy")
    assert (await client.get("/api/v1/assets", headers=bearer(other_token))).status_code == 429
    polite = mint("prices:read", subject="polite")
    assert (await client.get("/api/v1/assets", headers=bearer(polite))).status_code == 200
    # The cached prediction path counts against the same limit.
    pred = await client.get("/api/v1/predictions/BTC-USD", headers=bearer(mint(subject="greedy")))
    assert pred.status_code == 429
