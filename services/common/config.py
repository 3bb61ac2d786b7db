"""One pydantic ``Settings`` object for every service.

``DATABASE_URL``, ``REDIS_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` keep their standard names;
every other setting is ``PRICECAST_*``. Secrets are read from files (``*_FILE`` settings),
never from literals.

Settings validate themselves: a comma-list variable (``PRICECAST_INGEST_SOURCES=a,b``) arrives
parsed (``["a", "b"]``; ``NoDecode`` keeps pydantic-settings from reading it as JSON), bounds
and levels are checked when the settings load, and :meth:`Settings.model_copy` checks its
``update`` the same way. What production additionally needs (explicit connection settings and
JWT keys) is one method, :meth:`Settings.production_gaps`, that doctor and the services ask.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, AliasChoices, BeforeValidator, Field, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_DATABASE_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/pricecast"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# The variables a production deployment must set (doctor's config.environment reports them).
CONNECTION_VARS = ("DATABASE_URL", "REDIS_URL", "KAFKA_BOOTSTRAP_SERVERS")
JWT_KEY_VARS = ("PRICECAST_JWT_PRIVATE_KEY_FILE", "PRICECAST_JWT_PUBLIC_KEYS_DIR")


def comma_items(text: str) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``: a comma list as the environment writes it
    (items stripped, blank ones dropped)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def server_address(server: str) -> tuple[str, int] | None:
    """``host:port`` or ``[v6]:port`` -> (host, port); None without a numeric port."""
    host, _, port = server.strip().rpartition(":")
    if host and port.isdigit():
        return host.strip("[]"), int(port)
    return None


def _comma_list(value: object) -> object:
    # A string from the environment (or a model_copy update) is split; a list passes as it is.
    return comma_items(value) if isinstance(value, str) else value


def _levels(value: object) -> object:
    """``"0.95, 0.5,0.8"`` -> ``(0.5, 0.8, 0.95)``: sorted, duplicates dropped."""
    items = comma_items(value) if isinstance(value, str) else value
    if not isinstance(items, list | tuple | set | frozenset):
        return items  # pydantic reports the wrong type
    try:
        return tuple(sorted({round(float(level), 6) for level in items}))
    except (TypeError, ValueError):
        raise ValueError(f"forecast_levels must be numbers, got {value!r}") from None


def _check_levels(levels: tuple[float, ...]) -> tuple[float, ...]:
    if not levels:
        raise ValueError("forecast_levels needs at least one level")
    if any(not 0.0 < level < 1.0 for level in levels):
        raise ValueError(f"forecast_levels must be in (0, 1), got {levels!r}")
    return levels


# A comma-list setting: the environment's "a,b" becomes ["a", "b"].
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]
# Interval levels: "0.5,0.8,0.95" becomes (0.5, 0.8, 0.95), each in (0, 1).
Levels = Annotated[
    tuple[float, ...], NoDecode, BeforeValidator(_levels), AfterValidator(_check_levels)
]


@dataclass(frozen=True)
class ProductionGaps:
    """What a production deployment must set and this configuration leaves to a default."""

    unset: tuple[str, ...]  # connection variables (CONNECTION_VARS) not set
    jwt_keys_unset: bool  # neither JWT key location set (development keys would be used)
    localhost_defaults: tuple[str, ...]  # database_url / redis_url still the local default

    @property
    def missing(self) -> list[str]:
        """Every variable production needs and lacks, as doctor names them."""
        keys = ["PRICECAST_JWT_PUBLIC_KEYS_DIR (or ..._PRIVATE_KEY_FILE)"]
        return list(self.unset) + (keys if self.jwt_keys_unset else [])

    def __bool__(self) -> bool:
        return bool(self.unset or self.jwt_keys_unset or self.localhost_defaults)


class Settings(BaseSettings):
    # hide_input_in_errors: a bad value is reported by its setting and the rule it broke, never
    # echoed back (DATABASE_URL, REDIS_URL and the JWT key paths may carry secrets).
    model_config = SettingsConfigDict(
        env_prefix="PRICECAST_", extra="ignore", hide_input_in_errors=True
    )

    # --- standard-name connection settings -------------------------------------------
    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias=AliasChoices("DATABASE_URL"))
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
    # synthetic, csv, coingecko, http_json, binance, coinbase, kraken, finnhub
    ingest_sources: CommaList = ["synthetic"]
    ingest_symbols: CommaList = ["BTC-USD", "ETH-USD", "TBILL-USD", "NEW-USD"]
    synthetic_interval_s: float = 1.0
    synthetic_seed: int = 42
    writer_batch_size: int = 5000
    writer_batch_timeout_ms: int = 200
    writer_session_timeout_ms: int = 10_000  # group session (a dead writer's partitions move)
    writer_heartbeat_interval_ms: int = 3_000
    stale_after_s: float = Field(
        300.0,
        validation_alias=AliasChoices(
            "PRICECAST_STALE_AFTER", "PRICECAST_STALE_AFTER_S", "stale_after_s"
        ),
    )
    max_clock_skew_s: float = 5.0
    jump_guard_pct: float = 50.0
    csv_replay_path: str = ""  # source "csv": file to replay
    csv_replay_symbol: str = ""  # its symbol when the file has no symbol column
    source_poll_interval_s: float = 30.0  # HTTP sources
    source_timeout_s: float = 10.0
    source_requests_per_minute: float = 30.0
    source_max_attempts: int = 4
    source_breaker_failures: int = 5
    source_breaker_recovery_s: float = 60.0
    coingecko_url: str = "https://api.coingecko.com/api/v3/simple/price"
    # coin id:symbol, comma list; parsed by the source (services/ingestion/sources/coingecko.py)
    coingecko_ids: str = "bitcoin:BTC-USD,ethereum:ETH-USD"
    coingecko_vs_currency: str = "usd"
    coingecko_api_key_file: Path | None = None
    http_json_url_template: str = ""  # e.g. https://host/ticker?s={symbol}
    http_json_price_path: str = "price"
    http_json_ts_path: str = ""
    http_json_volume_path: str = ""
    http_json_symbol_path: str = ""
    http_json_list_path: str = ""

    # --- exchange streams: sources binance, coinbase, kraken, finnhub (WebSocket) -------
    # <KIND>_SYMBOLS: venue-symbol:PRICECAST-SYMBOL pairs, comma list. Kept as written and
    # parsed when that venue's source is built (sources/exchange/numbers.parse_pairs): the
    # symbol rules are the ingestion's, and an unused venue's pairs never stop a service.
    binance_ws_url: str = "wss://stream.binance.com:9443"  # /stream (combined) or /ws
    binance_rest_url: str = "https://api.binance.com"
    binance_symbols: str = "btcusdt:BTC-USD,ethusdt:ETH-USD"
    binance_max_connection_age_s: float = Field(84_600.0, ge=0)  # renew before the 24 h cut
    coinbase_ws_url: str = "wss://advanced-trade-ws.coinbase.com"
    coinbase_rest_url: str = "https://api.coinbase.com"
    coinbase_symbols: str = "BTC-USD:BTC-USD,ETH-USD:ETH-USD"
    kraken_ws_url: str = "wss://ws.kraken.com/v2"
    kraken_rest_url: str = "https://api.kraken.com"
    kraken_symbols: str = "BTC/USD:BTC-USD,ETH/USD:ETH-USD"
    finnhub_ws_url: str = "wss://ws.finnhub.io"
    finnhub_rest_url: str = "https://finnhub.io"
    finnhub_symbols: str = "AAPL:AAPL"
    finnhub_api_key_file: Path | None = None
    exchange_silence_s: float = Field(30.0, gt=0)  # no message this long: connection dead
    exchange_backoff_initial_s: float = Field(0.5, gt=0)
    exchange_backoff_max_s: float = Field(30.0, gt=0)
    exchange_ping_interval_s: float = Field(20.0, ge=0)  # client pings (0: none)
    exchange_repair: bool = True  # repair gaps from the venue's REST endpoint
    exchange_repair_max_trades: int = Field(100_000, ge=1)
    exchange_batch_max: int = Field(10_000, ge=1)  # trades per publish, at most

    # --- storage -----------------------------------------------------------------------
    tick_chunk_interval: str = "1 day"
    tick_retention_days: int = 90
    tick_compress_after_days: int = 7
    # auto: TimescaleDB when the extension can be created, else plain PostgreSQL.
    storage_path: Literal["auto", "timescaledb", "postgres"] = "auto"
    predictions_chunk_interval: str = "30 days"
    storage_maintenance_interval_s: float = 3600.0  # plain-path tick retention sweep

    # --- prediction --------------------------------------------------------------------
    predict_health_port: int = 9102
    min_history_days_arima: int = 30
    min_history_days_lstm: int = 90
    horizons_1h: int = 24
    horizons_1d: int = 7
    prediction_ttl_margin_s: int = 300
    accuracy_degradation_factor: float = 1.5
    prediction_history_bars: int = 1000  # bars read per forecast (newest first)
    prediction_writer_wait_s: float = 30.0  # max wait for the writer to store a closing tick
    prediction_workers: int = 2  # threads for in-process forecasts (LSTM batches)
    # ARIMA worker processes: None = one per usable core (at most 4), 0 = threads only. In a
    # container set it to the CPU limit (the affinity mask shows the node's cores).
    prediction_processes: int | None = None
    # How long a fetch may wait for records: bounds bar close -> forecast latency on brokers
    # that hold an empty fetch for long (Tansu holds it about half of this).
    prediction_fetch_max_wait_ms: int = 50
    prediction_registry_poll_s: float = 60.0  # champion re-check (missed model-events)
    accuracy_window: int = 200  # newest scored predictions per symbol/model in rolling metrics
    accuracy_min_samples: int = 20  # fewer scored predictions never trigger a retrain
    retrain_cooldown_s: int = 6 * 3600  # no new drift request this soon after the last one

    # --- forecast intervals (levels, online calibration, staleness) ------------------------
    forecast_levels: Levels = (0.5, 0.8, 0.95)  # offered interval levels, comma list
    forecast_default_level: float = 0.8  # in lower_bound/upper_bound; must be offered
    # adaptive conformal step per level: gamma = scale * (1 - level), 0.03 at 80%
    calibration_gamma_scale: float = 0.12
    # a forecast whose as-of bar closed more than this many intervals ago is stale
    prediction_stale_after_intervals: float = 3.0

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
    cors_origins: CommaList = []  # allowlist, comma list
    max_body_bytes: int = 64 * 1024
    rate_limit_per_minute: int = 600
    rate_limit_token_per_minute: int = 20
    slow_request_ms: float = 500.0
    api_token_cache_s: float = 30.0  # verified-claims cache per token (bounded by exp)
    refresh_reuse_leeway_s: float = 0.0  # >0: a reuse this soon after rotation keeps the family
    api_redis_retry_s: float = 2.0  # after a Redis failure, skip Redis this long (fallbacks)
    api_miss_cache_ttl_s: int = 60  # TTL of what the API re-caches after a miss (0: never)
    api_local_cache_ms: int = 250  # in-process copy of Redis reads (0: off); bounds staleness
    api_sync_interval_ms: int = 100  # rate-limit counts and deny-list synced with Redis
    # /health/detailed: each check and the data report are bounded by this budget; the data
    # report (lag, ages, champions: Kafka and database reads) is reused for health_data_cache_s
    health_budget_s: float = Field(0.8, gt=0, le=5)
    health_data_cache_s: float = Field(3.0, ge=0)

    # --- live streams (WebSocket /api/v1/stream, SSE /api/v1/stream/sse) ----------------
    stream_enabled: bool = True  # the API reads predictions and prices from Kafka itself
    stream_auth_timeout_s: float = 5.0  # no Authorization header: first "auth" message by then
    stream_heartbeat_s: float = 20.0  # {"type": "ping"} / SSE ": ping" every this long
    stream_queue_size: int = 256  # per client: messages waiting to be sent (ticks/bars coalesce)
    stream_slow_client_s: float = 2.0  # a client whose queue stays full this long: 4408
    stream_max_connections: int = 10_000  # per API worker process (4429 beyond)
    stream_max_connections_per_subject: int = 20  # per subject per worker (4429 beyond)
    stream_connects_per_minute: int = 60  # connection attempts per subject (all replicas)
    stream_max_subscriptions: int = 50  # channels per connection
    stream_max_message_bytes: int = 16 * 1024  # client messages larger than this: 1009
    stream_tick_interval_ms: int = 250  # ticks:{SYMBOL} at most once per this, newest wins
    stream_resume_window: int = 200  # SSE Last-Event-ID: messages kept per channel
    stream_sweep_interval_s: float = 1.0  # expiry, revocation and slow-client checks
    stream_fetch_max_wait_ms: int = 20  # the stream's Kafka fetch wait (delivery latency)

    # --- doctor (operations) -----------------------------------------------------------
    doctor_check_timeout_s: float = 5.0  # every check is bounded by this (GPU probe: x4)
    doctor_slow_query_s: float = 5.0  # an active statement older than this is slow
    doctor_idle_in_tx_s: float = 60.0  # an idle-in-transaction session older than this
    doctor_lag_warn: int = 10_000  # consumer lag (messages) that warns (as the alert)
    doctor_lag_fail: int = 100_000  # consumer lag (messages) that fails (as the alert)
    doctor_cache_hit_min: float = 0.8  # Redis keyspace hit rate below this warns
    doctor_cache_min_lookups: int = 100  # fewer lookups are too few to judge a hit rate
    doctor_aggregate_lag_s: float = 300.0  # bars this far behind raw ticks warn
    # Alertmanager's base URL (http://alertmanager:9093): doctor reports the firing alerts.
    alertmanager_url: str = Field("", pattern=r"^(https?://\S+)?$")

    # --- checks across settings -----------------------------------------------------------
    @model_validator(mode="after")
    def _default_level_offered(self) -> Self:
        if all(abs(level - self.forecast_default_level) > 1e-9 for level in self.forecast_levels):
            raise ValueError(
                f"forecast_default_level {self.forecast_default_level} is not one of "
                f"forecast_levels {','.join(f'{level:g}' for level in self.forecast_levels)!r}"
            )
        return self

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy whose ``update`` is validated like the environment's values (comma lists
        parsed, bounds and levels checked); pydantic's own copy would take them unchecked."""
        if not update:
            return super().model_copy(deep=deep)
        values = {**super().model_copy(deep=deep).__dict__, **update}
        return self.model_validate(values, by_name=True)

    # --- derived values ----------------------------------------------------------------
    @property
    def kafka_configured(self) -> bool:
        return bool(self.kafka_servers)

    @property
    def kafka_servers(self) -> list[str]:
        """``KAFKA_BOOTSTRAP_SERVERS`` as a list. The setting stays the comma string Kafka
        clients and child processes take as it is."""
        return comma_items(self.kafka_bootstrap_servers)

    def symbols(self) -> list[str]:
        """The configured symbols (``PRICECAST_INGEST_SYMBOLS``)."""
        return list(self.ingest_symbols)

    def offered_levels(self) -> tuple[float, ...]:
        """The offered interval levels (``PRICECAST_FORECAST_LEVELS``), ascending."""
        return self.forecast_levels

    # --- production ----------------------------------------------------------------------
    @property
    def is_production(self) -> bool:
        return self.env == "prod"

    @property
    def jwt_keys_configured(self) -> bool:
        """A JWT key file or directory is set; else, outside production, the API generates
        and uses a development pair under ``state_dir``."""
        return self.jwt_private_key_file is not None or self.jwt_public_keys_dir is not None

    def production_gaps(self, environ: Mapping[str, str] | None = None) -> ProductionGaps:
        """What production needs explicitly and this configuration leaves to a default.

        With ``environ`` (doctor passes the process environment) a setting counts as set when
        its variable is; without it, when its value differs from the default. Computed in
        every environment: outside production the gaps are fine, doctor reports them."""
        if environ is None:
            values = {
                "DATABASE_URL": self.database_url != DEFAULT_DATABASE_URL,
                "REDIS_URL": self.redis_url != DEFAULT_REDIS_URL,
                "KAFKA_BOOTSTRAP_SERVERS": self.kafka_configured,
            }
            unset = tuple(var for var in CONNECTION_VARS if not values[var])
            keys_unset = not self.jwt_keys_configured
        else:
            unset = tuple(var for var in CONNECTION_VARS if not environ.get(var, "").strip())
            keys_unset = not any(environ.get(var, "").strip() for var in JWT_KEY_VARS)
        defaults = [
            name
            for name, value, default in (
                ("database_url", self.database_url, DEFAULT_DATABASE_URL),
                ("redis_url", self.redis_url, DEFAULT_REDIS_URL),
            )
            if value == default
        ]
        return ProductionGaps(unset, keys_unset, tuple(defaults))

    def require_jwt_keys(self) -> None:
        """Production never falls back to development keys: no key configured is an error."""
        if self.is_production and not self.jwt_keys_configured:
            raise RuntimeError(
                "no JWT keys configured: set PRICECAST_JWT_PRIVATE_KEY_FILE and/or "
                "PRICECAST_JWT_PUBLIC_KEYS_DIR"
            )


@lru_cache
def get_settings() -> Settings:
    return Settings()
