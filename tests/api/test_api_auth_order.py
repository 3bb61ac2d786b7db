"""Auth comes first on every protected route: 401 ERR_AUTH_001 without a valid token and
403 ERR_AUTH_002 without the scope, whatever the parameters or the body (never a 422 first),
and neither touches the database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from _api_helpers import PROTECTED, assert_error, bearer
from fastapi import FastAPI
from fastapi.routing import APIRoute

from services.api.core.security import SCOPES
from services.api.deps import ANY_SCOPE, GuardedRoute, required_scope

# (method, template) -> a request that is invalid (422 once authorized) on that route.
INVALID: dict[tuple[str, str], dict[str, Any]] = {
    ("GET", "/api/v1/assets"): {"url": "/api/v1/assets?skip=-1&limit=0"},
    ("GET", "/api/v1/assets/{symbol}"): {"url": "/api/v1/assets/%21bad%21"},
    ("GET", "/api/v1/assets/{symbol}/bars"): {
        "url": "/api/v1/assets/BTC-USD/bars?interval=5m&limit=0"
    },
    ("GET", "/api/v1/predictions/{symbol}"): {
        "url": "/api/v1/predictions/BTC-USD?interval=5m&horizon=0"
    },
    ("GET", "/api/v1/predictions/{symbol}/history"): {
        "url": "/api/v1/predictions/BTC-USD/history?horizon=0&limit=0"
    },
    ("GET", "/api/v1/predictions/{symbol}/accuracy"): {
        "url": "/api/v1/predictions/BTC-USD/accuracy?window_days=0"
    },
    ("GET", "/api/v1/models"): {"url": "/api/v1/models?status=bogus&limit=0"},
    ("GET", "/api/v1/models/champions"): {"url": "/api/v1/models/champions?interval=5m"},
    ("GET", "/api/v1/models/{version_id}"): {"url": "/api/v1/models/not-a-number"},
    ("POST", "/api/v1/models/retrain"): {
        "url": "/api/v1/models/retrain",
        "content": b"{not json",
        "headers": {"Content-Type": "application/json"},
    },
    ("POST", "/api/v1/auth/revoke"): {
        "url": "/api/v1/auth/revoke",
        "data": {"refresh_token": "x" * 300},
    },
}
CASES = [pytest.param(m, t, s, id=f"{m} {t}") for m, t, _, s in PROTECTED]
SCOPED = [pytest.param(m, t, s, id=f"{m} {t}") for m, t, _, s in PROTECTED if s is not None]


def _request(method: str, template: str, headers: dict[str, str]) -> dict[str, Any]:
    spec = dict(INVALID[(method, template)])
    spec["headers"] = {**spec.get("headers", {}), **headers}
    return {"method": method, **spec}


def _assert_error(r: httpx.Response, status: int, code: str) -> None:
    assert_error(r, status, code)
    assert "x-request-id" in r.headers and "x-process-time" in r.headers


def test_every_protected_route_has_an_invalid_request() -> None:
    assert set(INVALID) == {(m, t) for m, t, _, _ in PROTECTED}


def _api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        original = getattr(route, "original_router", None)  # an included router
        if original is not None:
            yield from _api_routes(original.routes)


def test_every_protected_route_is_guarded_with_its_scope(app: FastAPI) -> None:
    found = {
        (method, route.path): route
        for route in _api_routes(app.routes)
        for method in route.methods or ()
    }
    for method, template, _, scope in PROTECTED:
        route = found[(method, template)]
        assert isinstance(route, GuardedRoute)
        expected = ANY_SCOPE if scope is None else scope
        assert required_scope(route.openapi_extra) == expected


@pytest.mark.parametrize(("method", "template", "scope"), CASES)
async def test_no_or_bad_token_is_401_before_validation(
    client: httpx.AsyncClient, mint, method: str, template: str, scope: str | None
) -> None:
    for headers in ({}, bearer("not.a.jwt"), {"Authorization": "Basic dXNlcjpwdw=="}):
        r = await client.request(**_request(method, template, headers))
        _assert_error(r, 401, "ERR_AUTH_001")
        assert r.headers["www-authenticate"].startswith("Bearer")
    expired = mint(*SCOPES, ttl_s=-10)
    _assert_error(
        await client.request(**_request(method, template, bearer(expired))), 401, "ERR_AUTH_001"
    )


@pytest.mark.parametrize(("method", "template", "scope"), SCOPED)
async def test_missing_scope_is_403_before_validation(
    client: httpx.AsyncClient, mint, method: str, template: str, scope: str
) -> None:
    lacking = mint(*(s for s in SCOPES if s != scope))
    r = await client.request(**_request(method, template, bearer(lacking)))
    _assert_error(r, 403, "ERR_AUTH_002")
    assert r.json()["error"]["details"] == {"required_scope": scope}


@pytest.mark.parametrize(("method", "template", "scope"), CASES)
async def test_authorized_invalid_request_is_422(
    client: httpx.AsyncClient, mint, method: str, template: str, scope: str | None
) -> None:
    """The requests above really are invalid: with the scope they are 422 ERR_VAL_001."""
    r = await client.request(**_request(method, template, bearer(mint(*SCOPES))))
    _assert_error(r, 422, "ERR_VAL_001")


@pytest.mark.parametrize(("method", "template", "scope"), CASES)
async def test_refusals_never_touch_the_database(
    db_down_client: tuple[FastAPI, httpx.AsyncClient],
    method: str,
    template: str,
    scope: str | None,
) -> None:
    app, client = db_down_client
    path = next(p for m, t, p, _ in PROTECTED if (m, t) == (method, template))
    kwargs: dict[str, Any] = {"json": {"symbol": "BTC-USD"}} if method == "POST" else {}
    r = await client.request(method, path, **kwargs)
    _assert_error(r, 401, "ERR_AUTH_001")
    if scope is not None:
        token, _ = app.state.api.tokens.mint("no-scope", [s for s in SCOPES if s != scope])
        r = await client.request(method, path, headers=bearer(token), **kwargs)
        _assert_error(r, 403, "ERR_AUTH_002")
