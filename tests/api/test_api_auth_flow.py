"""Client credentials, refresh rotation (reuse revokes the family; concurrent refresh: exactly
one wins), revocation through the Redis deny-list, and the stricter /auth/token limit."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
import redis
import sqlalchemy as sa
from _api_helpers import assert_error, bearer
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from services.api.core.security import hash_secret
from services.api.queries.auth import create_client

SECRET = "s3cret-for-tests-only"
PRED = "/api/v1/predictions/BTC-USD?interval=1d&horizon=1"


@pytest.fixture
def api_client(clean_db: Engine) -> str:
    with clean_db.begin() as conn:
        create_client(
            conn, "reporter", hash_secret(SECRET), ["predictions:read", "prices:read"], "tests"
        )
    return "reporter"


async def _token(client: httpx.AsyncClient, **form: str) -> httpx.Response:
    data = {"grant_type": "client_credentials", "client_id": "reporter", "client_secret": SECRET}
    data.update(form)
    return await client.post("/api/v1/auth/token", data=data)


async def test_client_credentials_issue_working_tokens(
    client: httpx.AsyncClient, api_client: str, clean_db: Engine
) -> None:
    r = await _token(client)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 900
    assert body["scope"] == "predictions:read prices:read"
    assert r.headers["cache-control"] == "no-store"
    assert (
        await client.get("/api/v1/assets", headers=bearer(body["access_token"]))
    ).status_code == 200
    # The refresh token is stored hashed only.
    with clean_db.connect() as conn:
        stored = conn.execute(sa.text("SELECT token_hash FROM refresh_tokens")).scalars().all()
    assert len(stored) == 1 and stored[0] != body["refresh_token"]


async def test_narrower_scope_can_be_requested_but_not_wider(
    client: httpx.AsyncClient, api_client: str
) -> None:
    r = await _token(client, scope="prices:read")
    assert r.status_code == 200 and r.json()["scope"] == "prices:read"
    assert (await client.get(PRED, headers=bearer(r.json()["access_token"]))).status_code == 403
    wider = await _token(client, scope="models:write")
    assert wider.status_code == 403 and wider.json()["error"]["code"] == "ERR_AUTH_002"
    unknown = await _token(client, scope="root")
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "ERR_VAL_001"


@pytest.mark.parametrize(
    ("client_id", "secret"), [("reporter", "wrong"), ("nobody", SECRET), ("reporter", "")]
)
async def test_bad_client_credentials(
    client: httpx.AsyncClient, api_client: str, client_id: str, secret: str
) -> None:
    r = await client.post(
        "/api/v1/auth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert r.status_code in (401, 422)
    assert r.json()["error"]["code"] in ("ERR_AUTH_001", "ERR_VAL_001")
    if secret:
        assert r.status_code == 401


async def test_disabled_client_gets_nothing(
    client: httpx.AsyncClient, api_client: str, clean_db: Engine
) -> None:
    first = (await _token(client)).json()
    with clean_db.begin() as conn:
        conn.execute(sa.text("UPDATE api_clients SET disabled = true"))
    assert (await _token(client)).status_code == 401
    r = await client.post("/api/v1/auth/refresh", data={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "ERR_AUTH_003"


async def test_refresh_rotates_and_reuse_revokes_the_family(
    client: httpx.AsyncClient, api_client: str
) -> None:
    t0 = (await _token(client)).json()["refresh_token"]
    r1 = await client.post("/api/v1/auth/refresh", data={"refresh_token": t0})
    assert r1.status_code == 200, r1.text
    t1 = r1.json()["refresh_token"]
    assert t1 != t0
    assert (
        await client.get("/api/v1/assets", headers=bearer(r1.json()["access_token"]))
    ).status_code == 200
    r2 = await client.post("/api/v1/auth/refresh", data={"refresh_token": t1})
    assert r2.status_code == 200
    t2 = r2.json()["refresh_token"]

    # An attacker replays the rotated t0: refused, and the whole family dies with it.
    replay = await client.post("/api/v1/auth/refresh", data={"refresh_token": t0})
    assert_error(replay, 401, "ERR_AUTH_003")
    after = await client.post("/api/v1/auth/refresh", data={"refresh_token": t2})
    assert_error(after, 401, "ERR_AUTH_003")


async def test_unknown_refresh_token(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/refresh", data={"refresh_token": "made-up"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "ERR_AUTH_003"


async def test_concurrent_refresh_exactly_one_succeeds(
    client: httpx.AsyncClient, api_client: str, clean_db: Engine
) -> None:
    for _ in range(3):
        token = (await _token(client)).json()["refresh_token"]
        results = await asyncio.gather(
            *(client.post("/api/v1/auth/refresh", data={"refresh_token": token}) for _ in range(8))
        )
        codes = sorted(r.status_code for r in results)
        assert codes.count(200) == 1, codes
        assert codes.count(401) == 7
        assert {r.json()["error"]["code"] for r in results if r.status_code == 401} == {
            "ERR_AUTH_003"
        }
    with clean_db.connect() as conn:
        children = conn.execute(
            sa.text("SELECT count(*) FROM refresh_tokens WHERE rotated_at IS NOT NULL")
        ).scalar()
    assert children == 3  # each original token rotated exactly once


async def test_reuse_leeway_keeps_the_family(
    app: FastAPI, client: httpx.AsyncClient, api_client: str
) -> None:
    app.state.api.settings = app.state.api.settings.model_copy(
        update={"refresh_reuse_leeway_s": 30.0}
    )
    t0 = (await _token(client)).json()["refresh_token"]
    t1 = (await client.post("/api/v1/auth/refresh", data={"refresh_token": t0})).json()[
        "refresh_token"
    ]
    dup = await client.post("/api/v1/auth/refresh", data={"refresh_token": t0})
    assert dup.status_code == 401  # never a second token pair...
    ok = await client.post("/api/v1/auth/refresh", data={"refresh_token": t1})
    assert ok.status_code == 200  # ...but a duplicate within the leeway does not kill t1


async def test_revoke_deny_lists_the_access_token_and_family(
    client: httpx.AsyncClient, api_client: str, redis_client: redis.Redis
) -> None:
    body = (await _token(client)).json()
    access = body["access_token"]
    assert (await client.get("/api/v1/assets", headers=bearer(access))).status_code == 200
    r = await client.post(
        "/api/v1/auth/revoke",
        headers=bearer(access),
        data={"refresh_token": body["refresh_token"]},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"revoked": True, "refresh_family_revoked": True}
    denied = redis_client.zrange("denied-jti", 0, -1, withscores=True)
    assert len(denied) == 1 and 0 < denied[0][1] - time.time() <= 901
    denied = await client.get("/api/v1/assets", headers=bearer(access))
    assert denied.status_code == 401 and denied.json()["error"]["code"] == "ERR_AUTH_001"
    refreshed = await client.post(
        "/api/v1/auth/refresh", data={"refresh_token": body["refresh_token"]}
    )
    assert refreshed.status_code == 401


async def test_revocation_reaches_other_instances_through_redis(
    app: FastAPI, api_settings, client: httpx.AsyncClient, mint
) -> None:
    """A second app (another replica) honours a jti deny-listed by the first."""
    from services.api.main import create_app

    token = mint("prices:read")
    other = create_app(api_settings)
    try:
        transport = httpx.ASGITransport(app=other)
        async with httpx.AsyncClient(transport=transport, base_url="http://other") as c2:
            assert (await c2.get("/api/v1/assets", headers=bearer(token))).status_code == 200
            await client.post("/api/v1/auth/revoke", headers=bearer(token))
            for _ in range(40):  # within a few sync intervals (100 ms)
                r = await c2.get("/api/v1/assets", headers=bearer(token))
                if r.status_code == 401:
                    break
                await asyncio.sleep(0.05)
            assert r.status_code == 401
    finally:
        await other.state.api.close()


async def test_token_endpoint_has_a_stricter_rate_limit(
    app: FastAPI, client: httpx.AsyncClient, api_client: str
) -> None:
    limit = 5
    app.state.api.settings = app.state.api.settings.model_copy(
        update={"rate_limit_token_per_minute": limit}
    )
    codes = []
    for _ in range(limit + 2):
        r = await client.post(
            "/api/v1/auth/token",
            data={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "x"},
        )
        codes.append(r.status_code)
    assert codes[:limit] == [401] * limit
    assert codes[limit:] == [429, 429]
    assert r.json()["error"]["code"] == "ERR_RATE_001"
    assert 1 <= int(r.headers["retry-after"]) <= 60
