"""Generic JSON adapter: a URL template and field paths, for any price API.

``url_template`` may contain ``{symbol}`` (one request per symbol) or not (one request for
all). Field paths are dotted (``data.0.price``); with ``list_path`` the answer holds a list of
ticks (each with its own ``symbol_path``). Without ``ts_path`` the tick is stamped with the time
of the answer; without ``volume_path`` it is a quote.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from services.ingestion.sources.base import RawTick
from services.ingestion.sources.http import HttpPolicy, HttpSource, field_at


@dataclass(frozen=True)
class JsonMapping:
    url_template: str
    price_path: str
    ts_path: str = ""
    volume_path: str = ""
    symbol_path: str = ""
    list_path: str = ""


class HttpJsonSource(HttpSource):
    def __init__(
        self,
        symbols: list[str],
        mapping: JsonMapping,
        policy: HttpPolicy,
        name: str = "http_json",
        client: httpx.AsyncClient | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(name, policy, client, headers)
        self.symbols = symbols
        self.mapping = mapping
        self._symbol_of: dict[str, str] = {}

    def requests(self) -> list[str]:
        template = self.mapping.url_template
        if "{symbol}" not in template:
            return [template]
        urls = []
        for symbol in self.symbols:
            url = template.replace("{symbol}", quote(symbol, safe=""))
            self._symbol_of[url] = symbol
            urls.append(url)
        return urls

    def _one(self, item: Any, symbol: str | None) -> RawTick:
        mapping = self.mapping
        tick: RawTick = {
            "symbol": field_at(item, mapping.symbol_path) if mapping.symbol_path else symbol,
            "ts": field_at(item, mapping.ts_path) if mapping.ts_path else datetime.now(UTC),
            "price": field_at(item, mapping.price_path),
            "source": self.name,
        }
        if mapping.volume_path:
            tick["volume"] = field_at(item, mapping.volume_path)
        else:
            tick["kind"] = "quote"
        return tick

    def parse(self, url: str, document: Any) -> list[RawTick]:
        symbol = self._symbol_of.get(url)
        if self.mapping.list_path:
            items = field_at(document, self.mapping.list_path)
            if not isinstance(items, list):
                raise ValueError(f"{self.mapping.list_path} is not a list")
            return [self._one(item, symbol) for item in items]
        return [self._one(document, symbol)]
