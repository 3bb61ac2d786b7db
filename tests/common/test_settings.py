"""Settings validate themselves: comma lists from the environment, checked copies, and what
production needs (one method doctor and the services ask)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.common.config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    Settings,
    comma_items,
    server_address,
)


def test_comma_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICECAST_INGEST_SOURCES", "synthetic, binance,,")
    monkeypatch.setenv("PRICECAST_INGEST_SYMBOLS", "AAA-USD,BBB-USD")
    monkeypatch.setenv("PRICECAST_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("PRICECAST_FORECAST_LEVELS", "0.95,0.5, 0.8,0.8")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "k0:9092, k1:9092")
    s = Settings()
    assert s.ingest_sources == ["synthetic", "binance"]
    assert s.symbols() == ["AAA-USD", "BBB-USD"]
    assert s.cors_origins == ["https://a.example", "https://b.example"]
    assert s.forecast_levels == (0.5, 0.8, 0.95)
    assert s.kafka_bootstrap_servers == "k0:9092, k1:9092"  # clients take it as it is
    assert s.kafka_servers == ["k0:9092", "k1:9092"]


def test_defaults_are_parsed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRICECAST_INGEST_SOURCES", "PRICECAST_CORS_ORIGINS", "PRICECAST_FORECAST_LEVELS"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.ingest_sources == ["synthetic"]
    assert s.cors_origins == []
    assert s.offered_levels() == (0.5, 0.8, 0.95)


def test_model_copy_validates_its_update() -> None:
    s = Settings()
    copy = s.model_copy(update={"ingest_symbols": "X-USD, Y-USD", "cors_origins": "https://o"})
    assert copy.symbols() == ["X-USD", "Y-USD"] and copy.cors_origins == ["https://o"]
    assert copy.database_url == s.database_url and s.symbols() != copy.symbols()
    both = s.model_copy(update={"forecast_levels": "0.9", "forecast_default_level": 0.9})
    assert both.forecast_levels == (0.9,)
    with pytest.raises(ValidationError, match=r"forecast_default_level 0\.8 is not one of"):
        s.model_copy(update={"forecast_levels": "0.5,0.9"})
    with pytest.raises(ValidationError, match="exchange_silence_s"):
        s.model_copy(update={"exchange_silence_s": 0})


def test_comma_items_and_server_address() -> None:
    assert comma_items(" a, ,b ,") == ["a", "b"]
    assert server_address("kafka-0.kafka:9092") == ("kafka-0.kafka", 9092)
    assert server_address("[::1]:9092") == ("::1", 9092)
    assert server_address("no-port") is None


def test_production_gaps() -> None:
    dev = Settings().model_copy(
        update={"database_url": DEFAULT_DATABASE_URL, "redis_url": DEFAULT_REDIS_URL}
    )
    assert not dev.is_production and dev.production_gaps(), "dev runs on defaults"
    prod = dev.model_copy(update={"env": "prod"})
    gaps = prod.production_gaps({"REDIS_URL": "redis://r:6379/0"})
    assert gaps.unset == ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS") and gaps.jwt_keys_unset
    assert "PRICECAST_JWT_PUBLIC_KEYS_DIR (or ..._PRIVATE_KEY_FILE)" in gaps.missing
    assert gaps.localhost_defaults == ("database_url", "redis_url")
    with pytest.raises(RuntimeError, match="no JWT keys configured"):
        prod.require_jwt_keys()
    explicit = prod.model_copy(
        update={
            "database_url": DEFAULT_DATABASE_URL.replace("127.0.0.1", "db"),
            "redis_url": "redis://r:6379/0",
            "kafka_bootstrap_servers": "k:9092",
            "jwt_public_keys_dir": "/keys",
        }
    )
    assert not explicit.production_gaps()  # by value when no environment is given
    explicit.require_jwt_keys()


def test_a_rejected_value_is_not_echoed(monkeypatch: pytest.MonkeyPatch) -> None:
    # A URL that fails its rule may carry credentials: the error names the setting, not the value.
    monkeypatch.setenv("PRICECAST_ALERTMANAGER_URL", "ftp://ops:hunter2@alerts.example")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert "alertmanager_url" in str(caught.value)
    assert "hunter2" not in str(caught.value)
