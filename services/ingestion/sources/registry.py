"""Build the configured sources (``PRICECAST_INGEST_SOURCES``) from settings."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from services.common.config import Settings
from services.ingestion.sources.base import Source
from services.ingestion.sources.coingecko import CoinGeckoSource, parse_ids
from services.ingestion.sources.csv_replay import CsvReplaySource
from services.ingestion.sources.exchange.registry import VENUES, build_exchange_source
from services.ingestion.sources.http import HttpPolicy
from services.ingestion.sources.http_json import HttpJsonSource, JsonMapping
from services.ingestion.sources.synthetic import SyntheticSource

KINDS = ("synthetic", "csv", "coingecko", "http_json", *VENUES)


def http_policy(settings: Settings) -> HttpPolicy:
    return HttpPolicy(
        interval_s=settings.source_poll_interval_s,
        timeout_s=settings.source_timeout_s,
        requests_per_minute=settings.source_requests_per_minute,
        max_attempts=settings.source_max_attempts,
        breaker_failures=settings.source_breaker_failures,
        breaker_recovery_s=settings.source_breaker_recovery_s,
    )


def build_sources(
    settings: Settings, start_prices: Mapping[str, float] | None = None
) -> list[Source]:
    kinds = settings.ingest_sources
    unknown = [kind for kind in kinds if kind not in KINDS]
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; known: {', '.join(KINDS)}")
    sources: list[Source] = []
    for kind in kinds:
        if kind in VENUES:
            sources.append(build_exchange_source(settings, kind))
        elif kind == "synthetic":
            sources.append(
                SyntheticSource(
                    settings.symbols(),
                    settings.synthetic_interval_s,
                    settings.synthetic_seed,
                    start_prices,
                )
            )
        elif kind == "csv":
            if not settings.csv_replay_path:
                raise ValueError("source csv needs PRICECAST_CSV_REPLAY_PATH")
            sources.append(
                CsvReplaySource(Path(settings.csv_replay_path), settings.csv_replay_symbol or None)
            )
        elif kind == "coingecko":
            key_file = settings.coingecko_api_key_file
            api_key = key_file.read_text().strip() if key_file else None
            sources.append(
                CoinGeckoSource(
                    parse_ids(settings.coingecko_ids),
                    http_policy(settings),
                    settings.coingecko_url,
                    settings.coingecko_vs_currency,
                    api_key,
                )
            )
        else:
            if not settings.http_json_url_template:
                raise ValueError("source http_json needs PRICECAST_HTTP_JSON_URL_TEMPLATE")
            mapping = JsonMapping(
                settings.http_json_url_template,
                settings.http_json_price_path,
                settings.http_json_ts_path,
                settings.http_json_volume_path,
                settings.http_json_symbol_path,
                settings.http_json_list_path,
            )
            sources.append(HttpJsonSource(settings.symbols(), mapping, http_policy(settings)))
    return sources
