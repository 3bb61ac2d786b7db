"""CoinGecko ``/simple/price`` adapter.

One request per poll for every configured coin: ``?ids=bitcoin,ethereum&vs_currencies=usd
&include_last_updated_at=true``. The answer ``{"bitcoin": {"usd": 67187.3,
"last_updated_at": 1711356300}}`` becomes one quote per coin (a price, no trade volume), stamped
with CoinGecko's ``last_updated_at`` so an unchanged price is not offered twice.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import httpx

from services.common.config import comma_items
from services.ingestion.sources.base import RawTick
from services.ingestion.sources.http import HttpPolicy, HttpSource

DEFAULT_URL = "https://api.coingecko.com/api/v3/simple/price"


def parse_ids(spec: str) -> dict[str, str]:
    """``bitcoin:BTC-USD,ethereum:ETH-USD`` -> {coin id: symbol}."""
    out: dict[str, str] = {}
    for item in comma_items(spec):
        coin, _, symbol = item.partition(":")
        if coin and symbol:
            out[coin.strip()] = symbol.strip()
    return out


class CoinGeckoSource(HttpSource):
    def __init__(
        self,
        ids: dict[str, str],
        policy: HttpPolicy,
        url: str = DEFAULT_URL,
        vs_currency: str = "usd",
        api_key: str | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        headers = {"x-cg-demo-api-key": api_key} if api_key else None
        super().__init__("coingecko", policy, client, headers)
        self.ids = ids
        self.url = url
        self.vs = vs_currency.lower()

    def requests(self) -> list[str]:
        query = urlencode(
            {
                "ids": ",".join(self.ids),
                "vs_currencies": self.vs,
                "include_last_updated_at": "true",
            }
        )
        return [f"{self.url}?{query}"]

    def parse(self, url: str, document: Any) -> list[RawTick]:
        if not isinstance(document, dict):
            raise ValueError("expected an object of coins")
        out: list[RawTick] = []
        for coin, symbol in self.ids.items():
            entry = document.get(coin)
            if not isinstance(entry, dict):
                continue
            out.append(
                {
                    "symbol": symbol,
                    "ts": entry.get("last_updated_at"),
                    "price": entry.get(self.vs),
                    "kind": "quote",
                    "source": self.name,
                }
            )
        return out
