from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from ingest_helpers import raw_tick

from services.common.schemas import Tick
from services.ingestion.dlq import Origin, dlq_record
from services.ingestion.validation import Rejection, Validator, check_fields, parse_ts

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def good(**over: object) -> dict[str, object]:
    return raw_tick("BTC-USD", **over)


def reason_of(payload: object) -> str:
    result = Validator(max_clock_skew_s=5, jump_guard_pct=50).validate(payload)
    assert isinstance(result, Rejection), result
    return result.reason


def test_valid_tick_is_normalised_to_utc() -> None:
    tick = check_fields(good(ts="2025-06-01T13:59:00+02:00"), 5, NOW)
    assert tick == Tick(
        "BTC-USD", datetime(2025, 6, 1, 11, 59, tzinfo=UTC), 100.0, 1.5, "synthetic"
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"[1, 2, 3]", "unknown_shape"),
        (b'{"foo": "bar"}', "unknown_shape"),
        (b"42", "unknown_shape"),
        (good(price=-1.0), "non_positive_price"),
        (good(price=0), "non_positive_price"),
        (good(price=math.nan), "non_finite_price"),
        (good(price=math.inf), "non_finite_price"),
        (good(volume=0), "non_positive_volume"),
        (good(volume=-3), "non_positive_volume"),
        (good(volume=math.nan), "non_finite_volume"),
        (good(price="abc"), "invalid_type"),
        (good(price=True), "invalid_type"),
        (good(symbol="btc usd"), "invalid_symbol"),
        (good(symbol="A" * 40), "invalid_symbol"),
        (good(source="Bad Source!"), "invalid_source"),
        (good(ts="yesterday"), "invalid_timestamp"),
        (good(ts=[1]), "invalid_type"),
        (good(kind="auction"), "invalid_type"),
    ],
)
def test_each_bad_input_has_its_reason(payload: object, reason: str) -> None:
    assert reason_of(payload) == reason


@pytest.mark.parametrize("name", ["symbol", "ts", "price", "volume", "source"])
def test_missing_field(name: str) -> None:
    payload = good()
    del payload[name]
    assert reason_of(payload) == "missing_field"
    assert reason_of(good(**{name: None})) == "missing_field"


def test_future_timestamp_beyond_skew_is_rejected_within_skew_accepted() -> None:
    now = datetime.now(UTC)
    assert reason_of(good(ts=(now + timedelta(seconds=60)).isoformat())) == "future_timestamp"
    v = Validator(max_clock_skew_s=5, jump_guard_pct=50)
    assert isinstance(v.validate(good(ts=(now + timedelta(seconds=2)).isoformat())), Tick)


def test_quote_may_have_zero_or_no_volume_but_not_negative() -> None:
    v = Validator()
    payload = good(kind="quote")
    del payload["volume"]
    tick = v.validate(payload)
    assert isinstance(tick, Tick) and tick.volume == 0.0
    assert isinstance(v.validate(good(kind="quote", volume=0)), Tick)
    assert reason_of(good(kind="quote", volume=-1)) == "non_positive_volume"


def test_numeric_strings_and_epochs_are_accepted() -> None:
    tick = check_fields(good(price="101.5", volume="2", ts=1717243140), 5, NOW)
    assert tick.price == 101.5 and tick.volume == 2.0
    assert tick.ts == datetime(2024, 6, 1, 11, 59, tzinfo=UTC)
    assert parse_ts(1717243140000) == parse_ts(1717243140)  # milliseconds
    assert parse_ts("2024-06-01T11:59:00").tzinfo is not None  # naive means UTC


def test_bytes_payload_round_trip() -> None:
    wire = orjson.dumps(
        Tick("ETH-USD", NOW, 3000.5, 2.0, "synthetic").wire(), option=orjson.OPT_UTC_Z
    )
    tick = Validator().validate(wire)
    assert isinstance(tick, Tick) and tick.ts == NOW and tick.price == 3000.5


def test_jump_guard_quarantines_then_confirms_a_new_level() -> None:
    v = Validator(max_clock_skew_s=5, jump_guard_pct=20)
    assert isinstance(v.validate(good(price=100.0)), Tick)
    assert isinstance(v.validate(good(price=115.0)), Tick)  # +15%: fine
    first = v.validate(good(price=300.0))
    assert isinstance(first, Rejection) and first.reason == "price_jump"
    assert first.symbol == "BTC-USD"
    assert isinstance(v.validate(good(price=116.0)), Tick)  # back to normal: a glitch
    # A real repricing: three agreeing ticks at the new level confirm it.
    assert isinstance(v.validate(good(price=200.0)), Rejection)
    assert isinstance(v.validate(good(price=201.0)), Rejection)
    assert isinstance(v.validate(good(price=202.0)), Tick)
    assert isinstance(v.validate(good(price=203.0)), Tick)
    # Other symbols are guarded independently.
    assert isinstance(v.validate(good(symbol="ETH-USD", price=5.0)), Tick)


def test_dlq_record_keeps_reason_original_payload_and_origin() -> None:
    record = dlq_record(
        "non_finite_price", "price is nan", good(price=math.nan), "writer", Origin("prices", 2, 17)
    )
    assert record["reason"] == "non_finite_price"
    assert "NaN" in record["payload"]
    assert record["origin"] == {"topic": "prices", "partition": 2, "offset": 17}
    raw = dlq_record("invalid_json", "x", b"{oops", "writer")
    assert raw["payload"] == "{oops" and raw["origin"] is None
