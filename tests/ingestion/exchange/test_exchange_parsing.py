"""Venue message parsing, decimal prices, gap tracking, backoff and redaction (pure units)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from services.common.schemas import Tick
from services.ingestion.sources.exchange.binance import BinanceSource
from services.ingestion.sources.exchange.coinbase import CoinbaseSource
from services.ingestion.sources.exchange.common import StreamConfig, redact
from services.ingestion.sources.exchange.finnhub import FinnhubSource
from services.ingestion.sources.exchange.gaps import SequenceTracker
from services.ingestion.sources.exchange.kraken import KrakenSource
from services.ingestion.sources.exchange.numbers import decimal_value, parse_pairs, rfc3339
from services.ingestion.validation import Rejection, ValidationFailed, Validator

CFG = StreamConfig("wss://venue.example", "https://venue.example", api_key="secret-key")


def test_decimal_strings_parse_exactly_and_garbage_is_refused() -> None:
    assert decimal_value("27123.45000000", "p") == 27123.45
    assert repr(decimal_value("0.1", "p")) == "0.1"  # the double that prints as the venue's
    for bad in ("NaN", "Infinity", "1e5", "-1", "1_000", " 1", "0x10", "", "1.2.3", None, True):
        with pytest.raises(ValidationFailed):
            decimal_value(bad, "p")


def test_rfc3339_with_nanoseconds_and_pairs() -> None:
    dt = rfc3339("2023-02-09T20:19:35.396251357Z")
    assert dt == datetime(2023, 2, 9, 20, 19, 35, 396251, tzinfo=UTC)
    assert parse_pairs("BTC/USD:BTC-USD, BINANCE:BTCUSDT:BTC-USD", "kraken") == {
        "BTC/USD": "BTC-USD",
        "BINANCE:BTCUSDT": "BTC-USD",
    }
    with pytest.raises(ValueError, match="venue-symbol:SYMBOL"):
        parse_pairs("btcusdt", "binance")


async def test_binance_combined_stream_and_subscribe() -> None:
    src = BinanceSource(CFG, {"btcusdt": "BTC-USD", "ethusdt": "ETH-USD"})
    assert src.ws_url() == "wss://venue.example/stream?streams=btcusdt@trade/ethusdt@trade"
    assert src.subscribe_messages() == []
    raw = BinanceSource(StreamConfig("wss://venue.example/ws", ""), {"btcusdt": "BTC-USD"})
    assert orjson.loads(raw.subscribe_messages()[0]) == {
        "method": "SUBSCRIBE",
        "params": ["btcusdt@trade"],
        "id": 1,
    }
    event = {"e": "trade", "s": "BTCUSDT", "t": 12, "p": "0.001", "q": "100", "T": 1700000000123}
    parsed = src.parse(orjson.dumps({"stream": "btcusdt@trade", "data": event}))
    (t,) = parsed.trades
    assert (t["symbol"], t["price"], t["volume"], t["trade_id"]) == ("BTC-USD", 0.001, 100.0, "12")
    assert t["ts"] == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert src.parse('{"result": null, "id": 1}').trades == []
    assert not src.renew_now
    assert src.parse('{"e": "serverShutdown", "E": 1}').trades == [] and src.renew_now
    assert src.parse("nope").rejects[0].reason == "invalid_json"
    bad = src.parse(orjson.dumps({"data": {**event, "s": "XRPUSDT"}, "stream": "x"}))
    assert bad.rejects[0].reason == "invalid_symbol"
    await src.close()
    await raw.close()


async def test_coinbase_kraken_finnhub_batches() -> None:
    cb = CoinbaseSource(CFG, {"BTC-USD": "BTC-USD"})
    assert [orjson.loads(m)["channel"] for m in cb.subscribe_messages()] == [
        "heartbeats",
        "market_trades",
    ]
    item = {
        "trade_id": "7",
        "product_id": "BTC-USD",
        "price": "1.5",
        "size": "2",
        "time": "2024-01-01T00:00:00Z",
    }
    msg = {
        "channel": "market_trades",
        "events": [{"type": "update", "trades": [item, {**item, "price": "x"}]}],
    }
    parsed = cb.parse(orjson.dumps(msg))
    assert len(parsed.trades) == 1 and parsed.rejects[0].reason == "invalid_type"
    assert cb.parse('{"type": "error", "message": "bad product"}').error == "bad product"

    kr = KrakenSource(CFG, {"BTC/USD": "BTC-USD"})
    assert orjson.loads(kr.subscribe_messages()[0])["params"]["symbol"] == ["BTC/USD"]
    data = {
        "symbol": "BTC/USD",
        "price": 27000.1,
        "qty": 0.5,
        "trade_id": 9,
        "timestamp": "2024-01-01T00:00:00.123456Z",
    }
    parsed = kr.parse(orjson.dumps({"channel": "trade", "type": "update", "data": [data]}))
    assert parsed.trades[0]["price"] == 27000.1 and parsed.trades[0]["trade_id"] == "9"
    assert kr.parse('{"channel": "heartbeat"}').trades == []

    fh = FinnhubSource(CFG, {"AAPL": "AAPL"})
    assert fh.ws_url() == "wss://venue.example?token=secret-key"
    ms = 1700000000000
    batch = {"type": "trade", "data": [{"s": "AAPL", "p": 1.5, "t": ms, "v": 3}] * 2}
    ids = [t["trade_id"] for t in fh.parse(orjson.dumps(batch)).trades]
    assert ids == [f"{ms}-0", f"{ms}-1"]  # two trades of one millisecond stay two
    assert fh.parse('{"type": "ping"}').trades == []
    for s in (cb, kr, fh):
        await s.close()


def test_trades_validate_with_their_ids() -> None:
    src_tick = {
        "symbol": "BTC-USD",
        "ts": datetime.now(UTC) - timedelta(seconds=1),
        "price": 1.0,
        "volume": 1.0,
        "source": "binance",
        "trade_id": "42",
    }
    v = Validator()
    tick = v.validate(dict(src_tick))
    assert isinstance(tick, Tick) and tick.trade_id == "42"
    assert tick.wire()["trade_id"] == "42"
    refused = v.validate({**src_tick, "trade_id": "bad id\t"})
    assert isinstance(refused, Rejection) and refused.reason == "invalid_trade_id"


def test_sequence_tracker_finds_holes_and_drops_repeats() -> None:
    t0 = datetime(2024, 1, 1, tzinfo=UTC)
    tr = SequenceTracker()
    assert tr.observe("X", 10, t0) == (True, None)
    assert tr.observe("X", 11, t0) == (True, None)
    keep, gap = tr.observe("X", 15, t0 + timedelta(seconds=1))
    assert keep and gap is not None and (gap.first_id, gap.last_id, gap.expected) == (12, 14, 3)
    assert tr.observe("X", 13, t0) == (True, None)  # inside the open gap: kept
    assert tr.observe("X", 11, t0) == (False, None)  # seen before: dropped
    tr.close(gap)
    assert tr.observe("X", 13, t0) == (False, None)


async def test_backoff_has_full_jitter_and_a_cap_and_urls_are_redacted() -> None:
    src = BinanceSource(
        StreamConfig("wss://v", "", backoff_initial_s=1, backoff_max_s=8), {"a": "A"}
    )
    delays = [src.backoff_s(10) for _ in range(200)]
    assert all(0 <= d <= 8 for d in delays) and max(delays) > 4 and min(delays) < 4
    assert redact("wss://ws.finnhub.io?token=abc&x=1") == "wss://ws.finnhub.io?token=***&x=1"
    await src.close()


def test_a_bad_websocket_url_is_a_configuration_error() -> None:
    from services.common.config import Settings
    from services.ingestion.sources.exchange.registry import build_exchange_source

    with pytest.raises(ValueError, match="PRICECAST_KRAKEN_WS_URL"):
        build_exchange_source(Settings(kraken_ws_url="http://not-a-websocket"), "kraken")
