"""Interval levels on the API: ``?level=`` from the cache and the database, ERR_VAL_001 for a
level not offered, ``stale`` on a stopped feed, and the calibration table in accuracy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
import redis
from _api_helpers import add_asset, add_prediction, assert_error, bearer
from sqlalchemy.engine import Engine

from services.common.cache import prediction_key
from services.common.schemas import IntervalBand, PredictionRecord

URL = "/api/v1/predictions/{}?interval=1d&horizon=1"


def bands(price: float) -> list[dict[str, float]]:
    return [
        {"level": 0.5, "lower": price - 1, "upper": price + 1},
        {"level": 0.8, "lower": price * 0.9, "upper": price * 1.1},
        {"level": 0.95, "lower": price - 20, "upper": price + 20},
    ]


def recent_day() -> datetime:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=1)


@pytest.mark.parametrize("query", ["", "&level=0.8"])
async def test_default_level_is_0_8_with_every_level_attached(
    client: httpx.AsyncClient, mint, clean_db: Engine, query: str
) -> None:
    add_asset(clean_db, "LVL-USD")
    add_prediction(clean_db, "LVL-USD", as_of=recent_day(), price=100.0, intervals=bands(100.0))
    r = await client.get(URL.format("LVL-USD") + query, headers=bearer(mint()))
    assert r.status_code == 200, r.text
    rec = PredictionRecord.model_validate_json(r.content)
    assert rec.confidence_level == 0.8
    assert (rec.lower_bound, rec.upper_bound) == pytest.approx((90.0, 110.0))
    assert [b.level for b in rec.intervals] == [0.5, 0.8, 0.95]
    assert rec.stale is False and rec.as_of_age_s is not None


async def test_level_0_95_from_the_database_and_from_the_cache(
    client: httpx.AsyncClient, mint, clean_db: Engine, redis_client: redis.Redis
) -> None:
    add_asset(clean_db, "LVL-USD")
    add_prediction(clean_db, "LVL-USD", as_of=recent_day(), price=100.0, intervals=bands(100.0))
    headers = bearer(mint())
    miss = await client.get(URL.format("LVL-USD") + "&level=0.95", headers=headers)
    assert miss.status_code == 200, miss.text
    rec = PredictionRecord.model_validate_json(miss.content)
    assert (rec.lower_bound, rec.upper_bound, rec.confidence_level) == (80.0, 120.0, 0.95)
    # the cache keeps the default level's record; a hit answers the asked level too
    cached = PredictionRecord.model_validate_json(
        redis_client.get(prediction_key("LVL-USD", "1d", 1)) or b""
    )
    assert cached.confidence_level == 0.8
    hit = await client.get(URL.format("LVL-USD") + "&level=0.5", headers=headers)
    assert PredictionRecord.model_validate_json(hit.content).lower_bound == 99.0
    assert PredictionRecord.model_validate_json(hit.content).confidence_level == 0.5


@pytest.mark.parametrize("level", ["0.9", "0.99", "1.5", "0"])
async def test_level_not_offered_is_err_val_001(
    client: httpx.AsyncClient, mint, redis_client: redis.Redis, level: str
) -> None:
    record = PredictionRecord(
        symbol="LVL-USD",
        interval="1d",
        horizon=1,
        as_of=recent_day(),
        target_time=recent_day() + timedelta(days=1),
        predicted_price=100.0,
        lower_bound=90.0,
        upper_bound=110.0,
        model="arima",
        model_version="arima(0,1,0)",
        generated_at=recent_day(),
        intervals=tuple(IntervalBand(**b) for b in bands(100.0)),
    )
    redis_client.set(prediction_key("LVL-USD", "1d", 1), record.model_dump_json())
    r = await client.get(URL.format("LVL-USD") + f"&level={level}", headers=bearer(mint()))
    assert_error(r, 422, "ERR_VAL_001")


async def test_a_stopped_feed_marks_the_prediction_stale(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    add_asset(clean_db, "OLD-USD")
    as_of = recent_day() - timedelta(days=10)  # the feed stopped ten days ago
    add_prediction(clean_db, "OLD-USD", as_of=as_of, price=50.0, intervals=bands(50.0))
    r = await client.get(URL.format("OLD-USD") + "&level=0.95", headers=bearer(mint()))
    rec = PredictionRecord.model_validate_json(r.content)
    assert rec.stale is True
    assert rec.as_of_age_s is not None and rec.as_of_age_s > 9 * 86400
    assert rec.confidence_level == 0.95


async def test_accuracy_has_a_calibration_table_per_level(
    client: httpx.AsyncClient, mint, clean_db: Engine
) -> None:
    add_asset(clean_db, "CAL-USD")
    day = recent_day()
    # four scored forecasts at 100: actuals 100.5 (inside all), 105 (inside 0.8 and 0.95),
    # 115 and 130 (inside none but 0.95 for 115)
    for k, actual in enumerate((100.5, 105.0, 115.0, 130.0)):
        add_prediction(
            clean_db,
            "CAL-USD",
            as_of=day - timedelta(days=k + 1),
            price=100.0,
            actual=actual,
            naive_error=2.0,
            intervals=bands(100.0),
        )
    r = await client.get(
        "/api/v1/predictions/CAL-USD/accuracy?interval=1d&window_days=30", headers=bearer(mint())
    )
    assert r.status_code == 200, r.text
    body = r.json()
    table = {row["level"]: row for row in body["overall"]["by_level"]}
    assert table[0.5]["coverage"] == pytest.approx(0.25)
    assert table[0.8]["coverage"] == pytest.approx(0.5)
    assert table[0.95]["coverage"] == pytest.approx(0.75)
    assert all(row["evaluated"] == 4 for row in table.values())
    # Winkler score at 0.8: width 20, misses of 5 and 20 above 110 cost 2/0.2 each
    assert table[0.8]["interval_score"] == pytest.approx((4 * 20 + 10 * (5 + 20)) / 4)
    assert table[0.8]["msis"] == pytest.approx(table[0.8]["interval_score"] / 2.0)
    by_model = body["by_model"]
    assert [m["model"] for m in by_model] == ["arima"]
    assert by_model[0]["by_level"] == body["overall"]["by_level"]
