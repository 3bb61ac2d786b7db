"""Which keys a champion change re-forecasts (pure)."""

from __future__ import annotations

from typing import Any

from services.common.events import ModelPromoted, RetrainRequested, decode, encode
from services.common.kafka import dumps
from services.prediction.engine import Reforecast
from services.prediction.events import affected


def promoted(**fields: Any) -> ModelPromoted:
    """The event as the watcher reads it off the topic."""
    event = decode(dumps(fields))
    assert isinstance(event, ModelPromoted)
    return event


def test_events_naming_assets_reforecast_those_assets() -> None:
    events = [
        promoted(type="model_promoted", symbol=s, interval="1d", version="lstm:*:1d:v2")
        for s in ("BTC-USD", "ETH-USD")
    ]
    same = {"*:1d": "lstm:*:1d:v2"}
    assert affected(events, same, same) == [Reforecast("1d", frozenset({"BTC-USD", "ETH-USD"}))]


def test_a_changed_global_champion_reforecasts_every_symbol() -> None:
    events = [promoted(type="model_promoted", symbol="BTC-USD", interval="1d")]
    before = {"*:1h": "lstm:*:1h:v1"}
    after = {"*:1h": "lstm:*:1h:v1", "*:1d": "lstm:*:1d:v1"}
    assert affected(events, before, after) == [Reforecast("1d", None)]


def test_scope_star_event_and_unknown_intervals() -> None:
    assert affected([promoted(type="model_promoted", scope="*", interval="1h")], {}, {}) == [
        Reforecast("1h", None)
    ]
    assert affected([promoted(type="model_promoted", symbol="X", interval="1m")], {}, {}) == []
    # no interval named: every interval the service forecasts
    assert affected([promoted(type="model_promoted", symbol="X")], {}, {}) == [
        Reforecast("1d", frozenset({"X"})),
        Reforecast("1h", frozenset({"X"})),
    ]


def test_a_per_symbol_champion_change_found_by_the_poll() -> None:
    before = {"SOL-USD:1h": "lstm:SOL-USD:1h:v1"}
    after = {"SOL-USD:1h": "lstm:SOL-USD:1h:v2"}
    assert affected([], before, after) == [Reforecast("1h", frozenset({"SOL-USD"}))]
    assert affected([], after, after) == []


def test_model_events_round_trip_and_former_shapes_still_read() -> None:
    event = RetrainRequested(
        request_id=7, symbol=None, interval="1h", reason="r", requested_by="me"
    )
    assert decode(encode(event)) == event and event.key == b"*"
    api_before = {
        "type": "retrain_requested",
        "request_id": 1,
        "symbol": "X",
        "interval": "1d",
        "reason": "drift",
        "requested_by": "svc",
        "ts": "2026-01-02T03:04:05Z",
    }
    old = decode(dumps(api_before))
    assert isinstance(old, RetrainRequested) and old.requested_at.year == 2026
    engine_before = {
        "type": "retrain_requested",
        "symbol": "X",
        "interval": "1h",
        "request_id": 2,
        "reason": "r",
        "details": {"ratio": 2.0},
        "requested_at": "2026-01-02T03:04:05+00:00",
    }
    old = decode(dumps(engine_before))
    assert isinstance(old, RetrainRequested) and old.details == {"ratio": 2.0}
    assert decode(b"not json") is None
    assert decode(dumps({"type": "something_else"})) is None
