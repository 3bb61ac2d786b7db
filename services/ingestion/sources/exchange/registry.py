"""The exchange stream sources, built from settings (``PRICECAST_<KIND>_*``)."""

from __future__ import annotations

import httpx
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from services.common.config import Settings
from services.ingestion.sources.exchange.binance import BinanceSource
from services.ingestion.sources.exchange.coinbase import CoinbaseSource
from services.ingestion.sources.exchange.common import StreamConfig
from services.ingestion.sources.exchange.finnhub import FinnhubSource
from services.ingestion.sources.exchange.kraken import KrakenSource
from services.ingestion.sources.exchange.numbers import parse_pairs
from services.ingestion.sources.exchange.stream import ExchangeSource

VENUES: dict[str, type[ExchangeSource]] = {
    "binance": BinanceSource,
    "coinbase": CoinbaseSource,
    "kraken": KrakenSource,
    "finnhub": FinnhubSource,
}


def stream_config(settings: Settings, kind: str) -> StreamConfig:
    api_key = None
    if kind == "finnhub" and settings.finnhub_api_key_file is not None:
        api_key = settings.finnhub_api_key_file.read_text().strip()
    return StreamConfig(
        ws_url=getattr(settings, f"{kind}_ws_url"),
        rest_url=getattr(settings, f"{kind}_rest_url"),
        silence_s=settings.exchange_silence_s,
        max_age_s=settings.binance_max_connection_age_s if kind == "binance" else 0.0,
        backoff_initial_s=settings.exchange_backoff_initial_s,
        backoff_max_s=settings.exchange_backoff_max_s,
        ping_interval_s=settings.exchange_ping_interval_s,
        rest_timeout_s=settings.source_timeout_s,
        repair=settings.exchange_repair,
        repair_max_trades=settings.exchange_repair_max_trades,
        batch_max=settings.exchange_batch_max,
        buffer_max=max(10 * settings.exchange_batch_max, 10_000),
        api_key=api_key,
    )


def build_exchange_source(
    settings: Settings, kind: str, client: httpx.AsyncClient | None = None
) -> ExchangeSource:
    pairs = parse_pairs(getattr(settings, f"{kind}_symbols"), kind)
    source = VENUES[kind](stream_config(settings, kind), pairs, client)
    try:
        parse_uri(source.ws_url())  # a bad URL is a configuration error, said at start
    except InvalidURI as exc:
        raise ValueError(f"PRICECAST_{kind.upper()}_WS_URL: {exc}") from exc
    return source
