"""Assets, bars, prediction history and accuracy, models, retrain requests."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
import pytest
import sqlalchemy as sa
from _api_helpers import add_asset, add_prediction, bearer
from fastapi import FastAPI
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.kafka import ensure_topics, make_consumer


async def test_assets_pagination_and_filters(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    for i in range(12):
        add_asset(clean_db, f"A{i:02d}-USD", asset_class="crypto" if i % 2 else "equity")
    add_asset(clean_db, "OFF-USD", active=False, name="Dormant coin")
    h = bearer(mint("prices:read"))
    page = (await client.get("/api/v1/assets?skip=2&limit=5", headers=h)).json()
    assert page["total"] == 13 and page["skip"] == 2 and page["limit"] == 5
    assert [a["symbol"] for a in page["items"]] == [f"A{i:02d}-USD" for i in range(2, 7)]
    crypto = (await client.get("/api/v1/assets?asset_class=crypto", headers=h)).json()
    assert crypto["total"] == 7  # OFF-USD is crypto too
    inactive = (await client.get("/api/v1/assets?active=false", headers=h)).json()
    assert [a["symbol"] for a in inactive["items"]] == ["OFF-USD"]
    search = (await client.get("/api/v1/assets?q=dormant", headers=h)).json()
    assert search["total"] == 1
    wildcard = (await client.get("/api/v1/assets?q=%25", headers=h)).json()
    assert wildcard["total"] == 0  # LIKE metacharacters are literals
    too_big = await client.get("/api/v1/assets?limit=1001", headers=h)
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "ERR_VAL_001"
    one = await client.get("/api/v1/assets/a03-usd", headers=h)
    assert one.status_code == 200 and one.json()["symbol"] == "A03-USD"
    missing = await client.get("/api/v1/assets/NOPE", headers=h)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ERR_PRED_002"


async def test_bars_by_interval(client: httpx.AsyncClient, mint, clean_db: Engine) -> None:
    add_asset(clean_db, "BTC-USD")
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with clean_db.begin() as conn:
        for day in range(5):
            for hour in (1, 13):
                conn.execute(
                    sa.text(
                        "INSERT INTO price_ticks (symbol, ts, price, volume, source) "
                        "VALUES ('BTC-USD', :ts, :p, 1, 'test')"
                    ),
                    {"ts": start + timedelta(days=day, hours=hour), "p": 100 + day * 10 + hour},
                )
    h = bearer(mint("prices:read"))
    r = await client.get("/api/v1/assets/BTC-USD/bars?interval=1d", headers=h)
    assert r.status_code == 200, r.text
    bars = r.json()["bars"]
    assert [b["bucket"] for b in bars] == [
        (start + timedelta(days=d)).isoformat().replace("+00:00", "Z") for d in range(5)
    ]
    assert bars[0]["open"] == 101 and bars[0]["close"] == 113 and bars[0]["high"] == 113
    last2 = (await client.get("/api/v1/assets/BTC-USD/bars?interval=1d&limit=2", headers=h)).json()
    assert [b["close"] for b in last2["bars"]] == [143, 153]
    hourly = await client.get(
        "/api/v1/assets/BTC-USD/bars?interval=1h&start=2026-01-02T00:00:00Z&end=2026-01-03T00:00:00Z",
        headers=h,
    )
    assert [b["close"] for b in hourly.json()["bars"]] == [111, 123]
    bad = await client.get(
        "/api/v1/assets/BTC-USD/bars?start=2026-01-03T00:00:00Z&end=2026-01-02T00:00:00Z", headers=h
    )
    assert bad.status_code == 422
    assert (await client.get("/api/v1/assets/NOPE/bars", headers=h)).status_code == 404


async def test_prediction_history_and_accuracy(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    add_asset(clean_db, "ETH-USD")
    now = datetime.now(UTC).replace(microsecond=0)
    for day in range(6):
        add_prediction(
            clean_db,
            "ETH-USD",
            as_of=now - timedelta(days=8 - day),
            price=100.0,
            model="arima" if day < 3 else "lstm",
            actual=100.0 + (day + 1) * 2 if day < 5 else None,  # errors 2,4,6,8,10
            naive_error=4.0 if day < 5 else None,
        )
    h = bearer(mint("predictions:read"))
    page = (await client.get("/api/v1/predictions/ETH-USD/history?limit=4", headers=h)).json()
    assert page["total"] == 6 and len(page["items"]) == 4
    as_ofs = [i["as_of"] for i in page["items"]]
    assert as_ofs == sorted(as_ofs, reverse=True)
    assert page["items"][0]["actual_price"] is None and page["items"][1]["abs_error"] == 10
    acc = (await client.get("/api/v1/predictions/ETH-USD/accuracy", headers=h)).json()
    overall = acc["overall"]
    assert overall["evaluated"] == 5
    assert overall["mae"] == pytest.approx(6.0)
    assert overall["mase"] == pytest.approx(1.5)
    assert overall["coverage"] == pytest.approx(1.0)  # every actual inside [90, 110]
    by = {m["model"]: m for m in acc["by_model"]}
    assert by["arima"]["evaluated"] == 3 and by["arima"]["mae"] == pytest.approx(4.0)
    assert by["lstm"]["evaluated"] == 2 and by["lstm"]["mae"] == pytest.approx(9.0)
    short = (
        await client.get("/api/v1/predictions/ETH-USD/accuracy?window_days=5", headers=h)
    ).json()
    assert short["overall"]["evaluated"] < 5
    assert (await client.get("/api/v1/predictions/NOPE/history", headers=h)).status_code == 404


def _add_version(engine: Engine, model: str, scope: str, version: int, status: str) -> int:
    with engine.begin() as conn:
        return int(
            conn.execute(
                sa.text(
                    "INSERT INTO model_versions (model, scope, interval, version, status, "
                    "metrics, artifact, checksum) VALUES (:m, :s, '1d', :v, :st, "
                    "'{\"mase\": 0.9}', :a, 'abc') RETURNING id"
                ),
                {"m": model, "s": scope, "v": version, "st": status, "a": b"\x00secret-bytes"},
            ).scalar_one()
        )


async def test_models_and_champions_without_artifacts(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    _add_version(clean_db, "lstm", "*", 1, "retired")
    champion = _add_version(clean_db, "lstm", "*", 2, "champion")
    _add_version(clean_db, "arima", "BTC-USD", 1, "champion")
    _add_version(clean_db, "arima", "ETH-USD", 1, "candidate")
    h = bearer(mint("models:read"))
    r = await client.get("/api/v1/models", headers=h)
    assert r.status_code == 200
    assert r.json()["total"] == 4
    assert all("artifact" not in item for item in r.json()["items"])
    assert "secret-bytes" not in r.text
    champs = (await client.get("/api/v1/models/champions?symbol=BTC-USD", headers=h)).json()
    assert {(c["model"], c["scope"]) for c in champs} == {("lstm", "*"), ("arima", "BTC-USD")}
    filtered = (await client.get("/api/v1/models?status=candidate", headers=h)).json()
    assert [i["scope"] for i in filtered["items"]] == ["ETH-USD"]
    one = (await client.get(f"/api/v1/models/{champion}", headers=h)).json()
    assert one["version"] == 2 and one["metrics"] == {"mase": 0.9}
    missing = await client.get("/api/v1/models/999999", headers=h)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ERR_NOT_FOUND"


@pytest.fixture
async def kafka_app(
    isolated_settings: Settings, api_settings: Settings, clean_db: Engine, redis_client
) -> FastAPI:
    from services.api.main import create_app

    await ensure_topics(isolated_settings)
    settings = api_settings.model_copy(
        update={"topic_model_events": isolated_settings.topic_model_events}
    )
    application = create_app(settings)
    yield application
    await application.state.api.close()


async def test_retrain_request_is_queued_once_and_published(
    kafka_app: FastAPI, mint, clean_db: Engine, isolated_settings: Settings
) -> None:
    add_asset(clean_db, "BTC-USD")
    h = bearer(mint("models:write"))
    transport = httpx.ASGITransport(app=kafka_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = await client.post(
            "/api/v1/models/retrain", json={"symbol": "btc-usd", "reason": "drift"}, headers=h
        )
        assert first.status_code == 202, first.text
        body = first.json()
        assert body["created"] is True and body["status"] == "queued"
        assert body["symbol"] == "BTC-USD"
        again = await client.post("/api/v1/models/retrain", json={"symbol": "BTC-USD"}, headers=h)
        assert again.status_code == 202
        assert again.json()["request_id"] == body["request_id"]
        assert again.json()["created"] is False
        every = await client.post("/api/v1/models/retrain", json={"interval": "1h"}, headers=h)
        assert every.status_code == 202 and every.json()["symbol"] is None
        unknown = await client.post("/api/v1/models/retrain", json={"symbol": "NOPE"}, headers=h)
        assert unknown.status_code == 404
        invalid = await client.post("/api/v1/models/retrain", json={"interval": "5m"}, headers=h)
        assert invalid.status_code == 422 and invalid.json()["error"]["code"] == "ERR_VAL_001"

    with clean_db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT symbol, interval, reason, status FROM retrain_requests ORDER BY id")
        ).all()
    assert [tuple(r) for r in rows] == [
        ("BTC-USD", "1d", "drift", "queued"),
        (None, "1h", "api", "queued"),
    ]

    consumer = make_consumer(
        isolated_settings, isolated_settings.topic_model_events, group_id="api-test-reader"
    )
    await consumer.start()
    try:
        events = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(events) < 2 and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                events.extend((r.key, json.loads(r.value)) for r in records)
    finally:
        await consumer.stop()
    assert len(events) == 2  # the duplicate request published nothing
    by_key = dict(events)
    assert by_key[b"BTC-USD"]["type"] == "retrain_requested"
    assert by_key[b"BTC-USD"]["request_id"] == body["request_id"]
    assert by_key[b"*"]["interval"] == "1h"
