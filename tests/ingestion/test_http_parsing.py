from __future__ import annotations

import email.utils
import time

from services.ingestion.sources.coingecko import CoinGeckoSource, parse_ids
from services.ingestion.sources.http import HttpPolicy, field_at, parse_retry_after, safe_url
from services.ingestion.sources.http_json import HttpJsonSource, JsonMapping


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = time.time()
    header = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= (parse_retry_after(header, now) or 0) <= 31


def test_field_paths() -> None:
    doc = {"data": [{"p": {"last": 5}}, {"p": {"last": 6}}]}
    assert field_at(doc, "data.1.p.last") == 6
    assert field_at(doc, "data.-1.p.last") == 6
    assert field_at(doc, "data.7.p") is None
    assert field_at(doc, "missing.x") is None


def test_safe_url_drops_the_query() -> None:
    assert safe_url("https://h/x?api_key=secret") == "https://h/x"


async def test_coingecko_request_and_parse() -> None:
    src = CoinGeckoSource(
        parse_ids("bitcoin:BTC-USD, ethereum:ETH-USD"), HttpPolicy(), url="http://h/p"
    )
    try:
        (url,) = src.requests()
        assert "ids=bitcoin%2Cethereum" in url and "include_last_updated_at=true" in url
        ticks = src.parse(url, {"bitcoin": {"usd": 67000.5, "last_updated_at": 1711356300}})
        assert ticks == [
            {
                "symbol": "BTC-USD",
                "ts": 1711356300,
                "price": 67000.5,
                "kind": "quote",
                "source": "coingecko",
            }
        ]
    finally:
        await src.close()


async def test_generic_json_per_symbol_and_list() -> None:
    mapping = JsonMapping(
        "http://h/t/{symbol}", price_path="d.px", ts_path="d.t", volume_path="d.v"
    )
    src = HttpJsonSource(["BTC-USD"], mapping, HttpPolicy(), name="exch")
    try:
        (url,) = src.requests()
        assert url == "http://h/t/BTC-USD"
        (tick,) = src.parse(url, {"d": {"px": 1.5, "t": 1700000000, "v": 2}})
        assert tick == {
            "symbol": "BTC-USD",
            "ts": 1700000000,
            "price": 1.5,
            "volume": 2,
            "source": "exch",
        }
    finally:
        await src.close()
    listed = HttpJsonSource(
        [], JsonMapping("http://h/all", "p", "t", symbol_path="s", list_path="items"), HttpPolicy()
    )
    try:
        ticks = listed.parse("http://h/all", {"items": [{"s": "A-USD", "p": 1, "t": 1}]})
        assert ticks[0]["symbol"] == "A-USD" and ticks[0]["kind"] == "quote"
    finally:
        await listed.close()
