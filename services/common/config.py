"""One pydantic ``Settings`` object for every service.

``DATABASE_URL``, ``REDIS_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` keep their standard names;
every other setting is ``PRICECAST_*``. Secrets are read from files (``*_FILE`` settings),
never from literals.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/pricecast"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PRICECAST_", extra="ignore")

    # --- standard-name connection settings -------------------------------------------
    database_url: str = Field(
        DEFAULT_DATABASE_URL, validation_alias=AliasChoices("DATABASE_URL")
    )
    redis_url: str = Field(DEFAULT_REDIS_URL, validation_alias=AliasChoices("REDIS_URL"))
    # Empty means "none configured": the local default starts the Tansu broker.
    kafka_bootstrap_servers: str = Field(
        "", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS")
    )

    # --- general -----------------------------------------------------------------------
    env: Literal["dev", "test", "prod"] = "dev"
    log_level: str = "INFO"
    log_json: bool = False
    state_dir: Path = Path(".pricecast")
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_pool_timeout_s: float = 5.0
    db_statement_timeout_ms: int = 10_000
    startup_wait_s: float = 60.0

    # --- Kafka -------------------------------------------------------------------------
    topic_prices: str = "prices"
    topic_prices_dlq: str = "prices.dlq"
    topic_predictions: str = "predictions"
    topic_model_events: str = "model-events"
    kafka_partitions: int = 6
    kafka_replication_factor: int = 1
    consumer_group_writer: str = "price-consumer"
    consumer_group_prediction: str = "prediction-engine"

    # --- ingestion ---------------------------------------------------------------------
    ingest_health_port: int = 9101
    ingest_sources: str = "synthetic"  # comma list: synthetic, csv, coingecko, http_json
    ingest_symbols: str = "BTC-USD,ETH-USD,TBILL-USD,NEW-USD"
    synthetic_interval_s: float = 1.0
    synthetic_seed: int = 42
    writer_batch_size: int = 5000
    writer_batch_timeout_ms: int = 200
    stale_after_s: float = 300.0
    max_clock_skew_s: float = 5.0
    jump_guard_pct: float = 50.0

    # --- storage -----------------------------------------------------------------------
    tick_chunk_interval: str = "1 day"
    tick_retention_days: int = 90
    tick_compress_after_days: int = 7

    # --- prediction --------------------------------------------------------------------
    predict_health_port: int = 9102
    min_history_days_arima: int = 30
    min_history_days_lstm: int = 90
    horizons_1h: int = 24
    horizons_1d: int = 7
    prediction_ttl_margin_s: int = 300
    accuracy_degradation_factor: float = 1.5

    # --- API ---------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    api_workers: int = 1
    jwt_private_key_file: Path | None = None  # PEM, signs access tokens
    jwt_public_keys_dir: Path | None = None  # *.pem, every key accepted (rotation)
    jwt_signing_kid: str = ""
    jwt_issuer: str = "pricecast"
    jwt_audience: str = "pricecast-api"
    access_token_ttl_s: int = 900
    refresh_token_ttl_s: int = 7 * 24 * 3600
    cors_origins: str = ""  # comma list allowlist
    max_body_bytes: int = 64 * 1024
    rate_limit_per_minute: int = 600
    rate_limit_token_per_minute: int = 20
    slow_request_ms: float = 500.0

    @property
    def kafka_configured(self) -> bool:
        return bool(self.kafka_bootstrap_servers.strip())

    def symbols(self) -> list[str]:
        return [s.strip() for s in self.ingest_symbols.split(",") if s.strip()]


@lru_cache
def get_settings() -> Settings:
    return Settings()
