"""Binance's fused frame path gives exactly what the general one (parse, then track) gives."""

from __future__ import annotations

from decimal import Decimal

import orjson

from services.ingestion.sources.exchange.binance import BinanceSource
from services.ingestion.sources.exchange.common import StreamConfig
from services.ingestion.sources.exchange.numbers import decimal_value
from services.ingestion.sources.exchange.stream import ExchangeSource

CFG = StreamConfig("wss://venue.example", "https://venue.example", repair=False)
PAIRS = {"btcusdt": "BT-USD", "ethusdt": "ET-USD"}


def event(tid: object, sym: str = "BTCUSDT", **over: object) -> bytes:
    data = {
        "e": "trade",
        "E": 1,
        "s": sym,
        "t": tid,
        "p": "27000.10",
        "q": "0.5",
        "T": 1_700_000_000_000,
    }
    data.update(over)
    return orjson.dumps({"stream": f"{sym.lower()}@trade", "data": data})


def frames() -> list[str | bytes]:
    return [
        event(10),  # first of its symbol: the general path
        event(11),
        event(12, T=1_700_000_000_001),
        event(13, p="27000.123456789", q="0.00000001"),  # not parsed before
        event(1, "ETHUSDT"),
        event(14),
        event(2, "ETHUSDT", T=1_700_000_000_001),
        event(20),  # a gap
        event(21),
        event(15),  # inside the open gap: kept
        event(21),  # a duplicate: dropped
        event(22, p="NaN"),
        event(23, p="-1"),
        event(24, q=None),
        event(25, T="soon"),
        event(26, s=["x"]),
        event(27, "XRPUSDT"),
        event(28, t=True),
        event(29),
        orjson.dumps({"data": {"e": "trade", "s": "BTCUSDT", "t": 30}}),  # fields missing
        "not json",
        '["a", "list"]',
        '{"result": null, "id": 1}',
        '{"code": 2, "msg": "Invalid request"}',
        '{"e": "outboundAccountPosition"}',
        orjson.dumps({"e": "trade", "s": "BTCUSDT", "t": 31, "p": "1.5", "q": "2", "T": 5}),  # /ws
        event(32, p=27000.5),  # a JSON number where text is expected: still a decimal
        '{"e": "serverShutdown", "E": 1}',
        event(33),
    ]


async def run(fused: bool) -> tuple[list[object], BinanceSource]:
    src = BinanceSource(CFG, dict(PAIRS))
    if fused:
        src._frames(frames()[:7])
        src._frames(frames()[7:])
    else:
        ExchangeSource._frames(src, frames())
    return await src.buffer.take(10_000, 0.0), src


async def test_fused_path_matches_the_general_path() -> None:
    (want, general), (got, fused) = await run(False), await run(True)
    assert [repr(x) for x in got] == [repr(x) for x in want]
    assert len(got) > 20
    assert fused.tracker.last == general.tracker.last
    assert fused.tracker.duplicates == general.tracker.duplicates == 1
    assert fused.tracker.open_gaps == general.tracker.open_gaps
    for name in ("messages", "trades", "malformed"):
        assert getattr(fused.stats, name) == getattr(general.stats, name), name
    assert fused.stats.gaps == general.stats.gaps
    assert fused.renew_now and general.renew_now
    assert all("_venue" not in x for x in got if isinstance(x, dict))


def test_decimal_text_becomes_the_double_nearest_its_exact_value() -> None:
    # float() of decimal text is correctly rounded, as the Decimal route is
    for text in (
        "0.1",
        "27123.45000000",
        "9007199254740993",  # 2**53 + 1: halfway, ties to even
        "0.30000000000000004441",
        "123456789012345678901234567890.123456789012345678901234567890",
        "0.000000000000000000000000000001",
        "1.005",
        "123456.789012345678",
        "9007199254740995.000000000000000000000000000001",  # just above halfway
    ):
        assert decimal_value(text, "p") == float(Decimal(text)), text
