"""Every Prometheus metric Pricecast exports, defined in one place.

Services import the metric objects from here, so alert rules and dashboards can be checked
against one list (``ALL_METRIC_NAMES``). Each process exports its own default registry on
``/metrics``.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# --- ingestion -----------------------------------------------------------------------
TICKS_INGESTED = Counter(
    "pricecast_ticks_ingested_total", "Valid ticks published to Kafka", ["source"]
)
VALIDATION_ERRORS = Counter(
    "pricecast_validation_errors_total", "Ticks rejected by validation", ["reason"]
)
DLQ_MESSAGES = Counter(
    "pricecast_dlq_messages_total", "Messages sent to the dead-letter topic", ["stage"]
)
TICKS_WRITTEN = Counter("pricecast_ticks_written_total", "Ticks durably stored by the writer")
WRITER_BATCH_SECONDS = Histogram(
    "pricecast_writer_batch_seconds", "Writer batch: DB write + commit", buckets=_LATENCY_BUCKETS
)
TICK_AGE = Gauge("pricecast_tick_age_seconds", "Age of the newest tick", ["symbol"])
# The process's PRICECAST_STALE_AFTER_S, beside the ages: the stale-data alert compares the two,
# so the alert and `pricecast doctor` use one threshold.
STALE_AFTER = Gauge(
    "pricecast_stale_after_seconds", "Tick age above which a symbol is stale (setting)"
)
CONSUMER_LAG = Gauge("pricecast_consumer_lag", "Kafka consumer lag (messages)", ["group"])
CONSUMER_OFFSET_RESETS = Counter(
    "pricecast_consumer_offset_resets_total",
    "Partitions whose consumer position lay beyond the broker's log end and were reset",
    ["group"],
)
UPSTREAM_ERRORS = Counter(
    "pricecast_upstream_errors_total", "Price source errors (ERR_EXT_*)", ["source", "code"]
)
CIRCUIT_OPEN = Gauge(
    "pricecast_circuit_open", "1 when a source's circuit breaker is open", ["source"]
)
SOURCE_CONNECTED = Gauge(
    "pricecast_source_connected", "1 while a streaming source's connection is open", ["source"]
)
SOURCE_MESSAGES = Counter(
    "pricecast_source_messages_total", "Messages received by a streaming source", ["source"]
)
SOURCE_RECONNECTS = Counter(
    "pricecast_source_reconnects_total",
    "Streaming source reconnects, by why the connection ended",
    ["source", "reason"],
)
SOURCE_GAPS = Counter(
    "pricecast_source_gaps_total",
    "Holes in a venue's trade stream: found, repaired (from REST) or failed",
    ["source", "outcome"],
)
SOURCE_TRADES_REPAIRED = Counter(
    "pricecast_source_trades_repaired_total",
    "Trades recovered from a venue's REST endpoint",
    ["source"],
)

# --- storage -------------------------------------------------------------------------
BAR_AGE = Gauge("pricecast_bar_age_seconds", "Age of the newest bar", ["interval"])
AGGREGATE_LAG = Gauge(
    "pricecast_aggregate_lag_seconds", "How far bar maintenance is behind raw ticks"
)
DB_QUERY_SECONDS = Histogram(
    "pricecast_db_query_seconds", "Database query time", ["operation"], buckets=_LATENCY_BUCKETS
)

# --- prediction ----------------------------------------------------------------------
FORECASTS = Counter("pricecast_forecasts_total", "Forecasts produced", ["model", "interval"])
FORECAST_ERRORS = Counter(
    "pricecast_forecast_errors_total", "Forecasts that failed or were refused", ["code"]
)
FORECAST_LATENCY = Histogram(
    "pricecast_forecast_latency_seconds",
    "Bar close to forecast readable in Redis",
    buckets=_LATENCY_BUCKETS,
)
CACHE_REQUESTS = Counter(
    "pricecast_cache_requests_total", "Prediction cache lookups", ["service", "result"]
)
MODEL_AGE = Gauge("pricecast_model_age_seconds", "Age of the champion model", ["model", "scope"])
MODEL_MAPE = Gauge(
    "pricecast_model_rolling_mape",
    "Rolling MAPE of served forecasts",
    ["symbol", "interval", "model"],
)
ACCURACY_DEGRADATION = Gauge(
    "pricecast_model_degradation_ratio",
    "Rolling error divided by validation error",
    ["symbol", "interval", "model"],
)
FORECAST_COVERAGE = Gauge(
    "pricecast_forecast_coverage",
    "Observed share of targets inside the served interval of each level (weighted over the "
    "accuracy window, mean over horizons)",
    ["symbol", "interval", "level"],
)
RETRAIN_REQUESTS = Counter(
    "pricecast_retrain_requests_total", "Retrain requests queued", ["reason"]
)

# --- API and every HTTP surface ------------------------------------------------------
HTTP_REQUESTS = Counter(
    "pricecast_http_requests_total", "HTTP requests", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "pricecast_http_request_duration_seconds",
    "HTTP request latency",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
AUTH_FAILURES = Counter("pricecast_auth_failures_total", "Rejected authentications", ["code"])
RATE_LIMITED = Counter("pricecast_rate_limited_total", "Requests refused by the rate limiter")
DEPENDENCY_UP = Gauge("pricecast_dependency_up", "1 when a dependency answers", ["dependency"])

# --- live streams (API: WebSocket and SSE) ----------------------------------------------
STREAM_CONNECTIONS = Gauge(
    "pricecast_stream_connections", "Open live-stream connections", ["transport"]
)
STREAM_SUBSCRIPTIONS = Gauge("pricecast_stream_subscriptions", "Channel subscriptions held")
STREAM_MESSAGES_SENT = Counter(
    "pricecast_stream_messages_sent_total", "Stream messages sent to clients", ["type"]
)
STREAM_MESSAGES_DROPPED = Counter(
    "pricecast_stream_messages_dropped_total",
    "Stream messages not sent: replaced by a newer tick/bar or dropped from a full queue",
)
STREAM_CLOSES = Counter(
    "pricecast_stream_closes_total", "Stream connections the server closed", ["code"]
)
STREAM_SLOW_CLOSES = Counter(
    "pricecast_stream_slow_client_closes_total", "Clients closed with 4408 (too slow)"
)
STREAM_DELIVERY_LATENCY = Histogram(
    "pricecast_stream_delivery_latency_seconds",
    "Kafka record timestamp to the message handed to the client's connection",
    ["type"],
    buckets=_LATENCY_BUCKETS,
)

ALL_METRICS: tuple[MetricWrapperBase, ...] = (
    TICKS_INGESTED,
    VALIDATION_ERRORS,
    DLQ_MESSAGES,
    TICKS_WRITTEN,
    WRITER_BATCH_SECONDS,
    TICK_AGE,
    STALE_AFTER,
    CONSUMER_LAG,
    CONSUMER_OFFSET_RESETS,
    UPSTREAM_ERRORS,
    CIRCUIT_OPEN,
    SOURCE_CONNECTED,
    SOURCE_MESSAGES,
    SOURCE_RECONNECTS,
    SOURCE_GAPS,
    SOURCE_TRADES_REPAIRED,
    BAR_AGE,
    AGGREGATE_LAG,
    DB_QUERY_SECONDS,
    FORECASTS,
    FORECAST_ERRORS,
    FORECAST_LATENCY,
    CACHE_REQUESTS,
    MODEL_AGE,
    MODEL_MAPE,
    ACCURACY_DEGRADATION,
    FORECAST_COVERAGE,
    RETRAIN_REQUESTS,
    HTTP_REQUESTS,
    HTTP_LATENCY,
    AUTH_FAILURES,
    RATE_LIMITED,
    DEPENDENCY_UP,
    STREAM_CONNECTIONS,
    STREAM_SUBSCRIPTIONS,
    STREAM_MESSAGES_SENT,
    STREAM_MESSAGES_DROPPED,
    STREAM_CLOSES,
    STREAM_SLOW_CLOSES,
    STREAM_DELIVERY_LATENCY,
)


def exported_names() -> set[str]:
    """Every sample name the registry can export (``_total``, ``_bucket``, ... included)."""
    names: set[str] = set()
    for metric in ALL_METRICS:
        for family in metric.describe():
            names.add(family.name)
            for suffix in ("_total", "_bucket", "_count", "_sum", "_created"):
                names.add(family.name + suffix)
    return names
