"""GET /api/v1/predictions/{symbol}: cache hit as-is, DB miss, ERR_PRED_001/002/003."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import orjson
import redis
from _api_helpers import add_asset, add_prediction, assert_error, bearer, set_status
from sqlalchemy.engine import Engine

from services.common.cache import prediction_key, status_key
from services.common.schemas import PredictionRecord, PredictionStatus

URL = "/api/v1/predictions/{}?interval=1d&horizon=1"


async def test_cache_hit_returns_cached_bytes_as_is(
    client: httpx.AsyncClient, mint, redis_client: redis.Redis
) -> None:
    # Deliberately not what pydantic would write (spacing, an extra field): proves no
    # re-validation or re-serialisation on the hit path, and no DB (symbol not in assets).
    cached = b'{"symbol": "ZZZ-USD",  "predicted_price": 1.5, "extra": true}'
    redis_client.set(prediction_key("ZZZ-USD", "1d", 1), cached)
    r = await client.get(URL.format("ZZZ-USD"), headers=bearer(mint("predictions:read")))
    assert r.status_code == 200
    assert r.content == cached
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["content-type"] == "application/json"
    assert "x-request-id" in r.headers and float(r.headers["x-process-time"]) >= 0


async def test_lowercase_symbol_is_normalised(
    client: httpx.AsyncClient, mint, redis_client: redis.Redis
) -> None:
    redis_client.set(prediction_key("ETH-USD", "1d", 1), b"{}")
    r = await client.get(URL.format("eth-usd"), headers=bearer(mint("predictions:read")))
    assert r.status_code == 200


async def test_miss_reads_latest_row_and_caches_it(
    client: httpx.AsyncClient, mint, clean_db: Engine, redis_client: redis.Redis
) -> None:
    add_asset(clean_db, "ETH-USD")
    add_prediction(clean_db, "ETH-USD", as_of=datetime(2026, 1, 9, tzinfo=UTC), price=90.0)
    add_prediction(clean_db, "ETH-USD", as_of=datetime(2026, 1, 10, tzinfo=UTC), price=101.5)
    r = await client.get(URL.format("ETH-USD"), headers=bearer(mint("predictions:read")))
    assert r.status_code == 200, r.text
    record = PredictionRecord.model_validate_json(r.content)
    assert record.predicted_price == 101.5
    assert record.as_of == datetime(2026, 1, 10, tzinfo=UTC)
    assert record.target_time == datetime(2026, 1, 11, tzinfo=UTC)
    assert record.model == "arima" and record.model_version == "arima-v1"
    body = orjson.loads(r.content)
    assert body["as_of"] == "2026-01-10T00:00:00Z"
    assert set(body) == set(PredictionRecord.model_fields)
    # Cached for the next request, byte for byte, with a bounded TTL.
    key = prediction_key("ETH-USD", "1d", 1)
    assert redis_client.get(key) == r.content
    assert 0 < redis_client.ttl(key) <= 60
    assert r.headers["cache-control"] == "no-store"


async def test_miss_never_overwrites_a_fresher_cache_entry(
    client: httpx.AsyncClient, mint, clean_db: Engine, redis_client: redis.Redis
) -> None:
    add_asset(clean_db, "ETH-USD")
    add_prediction(clean_db, "ETH-USD", horizon=2)
    r = await client.get(
        "/api/v1/predictions/ETH-USD?interval=1d&horizon=2", headers=bearer(mint())
    )
    assert r.status_code == 200
    redis_client.set(prediction_key("ETH-USD", "1d", 2), b'{"fresh": 1}')
    again = await client.get(
        "/api/v1/predictions/ETH-USD?interval=1d&horizon=2", headers=bearer(mint())
    )
    assert again.content == b'{"fresh": 1}'


async def test_insufficient_history_from_redis_status(
    client: httpx.AsyncClient, mint, redis_client: redis.Redis
) -> None:
    status = PredictionStatus(
        symbol="NEW-USD",
        interval="1d",
        status="insufficient_history",
        required_days=30,
        available_days=10,
    )
    redis_client.set(status_key("NEW-USD", "1d"), status.model_dump_json())
    r = await client.get(URL.format("NEW-USD"), headers=bearer(mint("predictions:read")))
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "ERR_PRED_001"
    assert "Required: 30 days, Available: 10 days" in error["message"]
    assert error["details"] == {"required_days": 30, "available_days": 10}


async def test_insufficient_history_from_table(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    add_asset(clean_db, "NEW-USD")
    set_status(clean_db, "NEW-USD", "insufficient_history", 30, 12)
    r = await client.get(URL.format("NEW-USD"), headers=bearer(mint("predictions:read")))
    assert_error(r, 422, "ERR_PRED_001")
    assert r.json()["error"]["details"] == {"required_days": 30, "available_days": 12}


async def test_newer_status_wins_over_an_older_forecast(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    add_asset(clean_db, "OLD-USD")
    add_prediction(clean_db, "OLD-USD", generated_at=datetime.now(UTC) - timedelta(days=3))
    set_status(clean_db, "OLD-USD", "insufficient_history", 30, 29)
    r = await client.get(URL.format("OLD-USD"), headers=bearer(mint()))
    assert r.status_code == 422


async def test_unknown_symbol_is_404(client: httpx.AsyncClient, mint) -> None:
    r = await client.get(URL.format("NOPE-USD"), headers=bearer(mint("predictions:read")))
    assert_error(r, 404, "ERR_PRED_002")


async def test_known_symbol_without_forecast_is_503(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    add_asset(clean_db, "BTC-USD")
    r = await client.get(URL.format("BTC-USD"), headers=bearer(mint("predictions:read")))
    assert_error(r, 503, "ERR_PRED_003")
    assert r.headers["retry-after"]


async def test_invalid_parameters_are_err_val_001(client: httpx.AsyncClient, mint) -> None:
    headers = bearer(mint("predictions:read"))
    for url in (
        "/api/v1/predictions/BTC-USD?interval=5m",
        "/api/v1/predictions/BTC-USD?horizon=0",
        "/api/v1/predictions/BTC-USD?horizon=abc",
        "/api/v1/predictions/BTC-USD?interval=1d&horizon=8",  # > horizons_1d (7)
        "/api/v1/predictions/bad%20symbol",
    ):
        r = await client.get(url, headers=headers)
        assert r.status_code == 422, url
        assert r.json()["error"]["code"] == "ERR_VAL_001", url


async def test_in_process_copy_bounds_staleness(
    api_settings, clean_db: Engine, redis_client: redis.Redis
) -> None:
    import asyncio

    from services.api.main import create_app

    app = create_app(api_settings.model_copy(update={"api_local_cache_ms": 300}))
    token, _ = app.state.api.tokens.mint("l1", ["predictions:read"])
    key = prediction_key("L1-USD", "1d", 1)
    redis_client.set(key, b'{"v": 1}')
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            assert (await c.get(URL.format("L1-USD"), headers=bearer(token))).content == b'{"v": 1}'
            redis_client.set(key, b'{"v": 2}')
            # Within the bound the process may answer from its copy; after it, never.
            await asyncio.sleep(0.35)
            r = await c.get(URL.format("L1-USD"), headers=bearer(token))
            assert r.content == b'{"v": 2}'
    finally:
        await app.state.api.close()
