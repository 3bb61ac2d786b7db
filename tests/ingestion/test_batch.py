"""The publish path's batch work gives exactly the per-tick path's results (pure units)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from services.common.kafka import dumps
from services.common.schemas import Tick
from services.ingestion.batch import each_json, validate_batch, wire_records
from services.ingestion.validation import Rejection, Validator, future_limit

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
LIMIT = future_limit(5.0, NOW)


def trade(**over: object) -> dict[str, object]:
    tick: dict[str, object] = {
        "symbol": "BT-USD",
        "ts": NOW - timedelta(seconds=1),
        "price": 100.0,
        "volume": 0.5,
        "source": "binance",
        "trade_id": "7",
    }
    tick.update(over)
    return tick


def payloads() -> list[object]:
    ms = NOW - timedelta(milliseconds=5)  # shared by several trades, as a stream's are
    return [
        trade(symbol="NEW-USD"),  # a symbol seen for the first time: the full check
        trade(),
        trade(ts=ms),
        trade(ts=ms, price=100.5, trade_id="8"),
        trade(ts=ms, trade_id="abc:1-2_x.y"),
        trade(ts=ms, trade_id=""),
        trade(ts=ms, trade_id="x" * 65),  # too long
        trade(ts=ms, trade_id="١٢"),  # digits, but not ASCII ones
        trade(ts=ms, trade_id=9),  # an integer id
        trade(price=0.0),
        trade(price=-1.0),
        trade(price=float("nan")),
        trade(price=float("inf")),
        trade(volume=0.0),
        trade(price="101.5"),  # text: the full check accepts it
        trade(price=True),
        trade(symbol="bad symbol"),
        trade(symbol=["not", "hashable"]),
        trade(source="Bad Source"),
        trade(ts=NOW + timedelta(seconds=6)),  # future
        trade(ts=LIMIT),  # exactly at the limit
        trade(ts=datetime(2025, 6, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))),
        trade(ts="2025-06-01T11:59:00Z"),
        trade(ts=datetime(2025, 6, 1, 11, 0)),  # naive: taken as UTC
        {**trade(), "kind": "quote", "volume": 0.0},
        {"symbol": "BT-USD"},
        Rejection("invalid_json", "x", b"{"),
        orjson.dumps(trade(ts="2025-06-01T11:59:00Z")),
        b"not json",
        "a string",
        trade(price=400.0),  # a jump: quarantined ...
        trade(price=100.0),  # ... back in range: the pending run ends
        trade(price=400.0),
        trade(price=401.0),
        trade(price=402.0),  # ... three agreeing: the new level is confirmed
        trade(price=403.0),
        trade(symbol="ET-USD", price=3000.0),
        trade(symbol="ET-USD", price=9000.0),
    ]


def comparable(results: list[Tick] | list[Rejection] | list[Tick | Rejection]) -> list[str]:
    return [repr(r) for r in results]  # repr: a NaN in a payload is not equal to itself


@pytest.mark.parametrize("guard_pct", [50.0, 0.0])  # 0: no jump guard
def test_validate_batch_matches_validate_one_by_one(guard_pct: float) -> None:
    one, many = Validator(5.0, guard_pct), Validator(5.0, guard_pct)
    expected = [one.validate(p, LIMIT) for p in payloads()]
    keys: list[bytes] = []
    values: list[bytes] = []
    good, bad = validate_batch(many, payloads(), LIMIT, (keys, values))
    assert good == [r for r in expected if isinstance(r, Tick)]
    assert comparable(bad) == comparable([r for r in expected if isinstance(r, Rejection)])
    assert list(zip(keys, values, strict=True)) == list(wire_records(good))
    assert list(wire_records(good)) == [(t.symbol.encode(), dumps(t.wire())) for t in good]
    assert len(good) > 10 and len(bad) > 10  # both paths were exercised
    assert many.guard.last_good == one.guard.last_good
    assert many.guard._pending == one.guard._pending


def test_wire_records_are_the_wire_form_byte_for_byte() -> None:
    shared = datetime(2025, 6, 1, 11, 59, 0, 250000, tzinfo=UTC)
    ticks = [
        Tick("BT-USD", shared, 27012.34, 0.123456, "binance", "1000123"),
        Tick("BT-USD", shared, 27012.35, 1e-8, "binance", "1000124"),
        Tick("ET-USD", shared, 3e16, 2.0, "binance", "5"),
        Tick("ET-USD", datetime(2025, 6, 1, 12, 0, tzinfo=UTC), 0.1, 7.0, "csv", ""),
        Tick("ET-USD", datetime(2025, 6, 1, 12, 0, 0, 1, tzinfo=UTC), 1.0, 1.5, "x", "a:b"),
    ]
    assert list(wire_records(ticks)) == [(t.symbol.encode(), dumps(t.wire())) for t in ticks]
    assert list(wire_records([])) == []


def test_each_json_cuts_one_dump_into_each_docs_json() -> None:
    docs: list[dict[str, object]] = [
        {"symbol": "BT-USD", "ts": "2025-06-01T11:59:00Z", "price": 1.5},
        {"symbol": "ET-USD", "price": 2.0, "trade_id": "9"},
        {"symbol": "X", "ts": datetime(2025, 6, 1, tzinfo=UTC)},
    ]
    assert each_json(docs) == [dumps(d) for d in docs]
    assert each_json([]) == []
    odd = [{"symbol": 'a,{"symbol":b'}, {"symbol": "c"}]  # not a validated tick: still right
    assert each_json(odd) == [dumps(d) for d in odd]
