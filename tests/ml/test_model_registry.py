"""Registry on the real PostgreSQL test database: round trips, checksums, lifecycle."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa
from ml_synthetic import FAST_LSTM, ar_prices
from sqlalchemy.engine import Engine

from ml import registry
from ml.arima import ArimaForecaster
from ml.base import Forecaster
from ml.evaluation import Metrics
from ml.factory import FORECASTERS
from ml.lstm import LSTMForecaster
from ml.naive import DriftForecaster, NaiveForecaster
from ml.promotion import Scored
from ml.selection import SelectionPolicy
from ml.serving import select_for

Y = ar_prices(300, seed=9)


def make(name: str) -> Forecaster:
    if name == "lstm":
        return LSTMForecaster(FAST_LSTM, epochs=2)
    return {"naive": NaiveForecaster, "drift": DriftForecaster, "arima": ArimaForecaster}[name]()


def register(
    conn: sa.Connection,
    model: Forecaster,
    scope: str = "*",
    mase: float = 0.9,
    per_series: dict[str, dict[str, float]] | None = None,
) -> int:
    """A candidate of ``model``; its per-series metrics default to BTC-USD at ``mase - 0.1``."""
    per_series = {"BTC-USD": {"mase": mase - 0.1}} if per_series is None else per_series
    mv = registry.register_candidate(
        conn,
        model=model.name,
        scope=scope,
        interval="1d",
        artifact=model.to_bytes(),
        metrics={"mase": mase, "per_series": per_series},
    )
    return mv.id


@pytest.mark.parametrize("name", sorted(FORECASTERS))
def test_save_load_round_trip_through_postgres(clean_db: Engine, name: str) -> None:
    model = make(name).fit(Y)
    with clean_db.begin() as conn:
        vid = register(conn, model)
    with clean_db.connect() as conn:
        mv = registry.get_version(conn, vid)
        assert mv is not None and mv.status == "candidate" and mv.version == 1
        loaded = registry.load_model(conn, mv)
    np.testing.assert_allclose(loaded.predict(5).mean, model.predict(5).mean, rtol=1e-9)
    np.testing.assert_allclose(loaded.forward(Y[:250], 5).upper, model.forward(Y[:250], 5).upper)


def test_checksum_is_verified_on_load(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        vid = register(conn, NaiveForecaster().fit(Y))
        conn.execute(
            sa.text("UPDATE model_versions SET artifact = :a WHERE id = :id"),
            {"a": b'{"kind": "naive", "tampered": true}', "id": vid},
        )
    with clean_db.connect() as conn, pytest.raises(registry.ChecksumMismatch):
        registry.load_artifact(conn, vid)


def test_promote_retire_rollback_lifecycle(clean_db: Engine) -> None:
    lstm = LSTMForecaster(FAST_LSTM, epochs=1).fit(Y)
    with clean_db.begin() as conn:
        v1 = register(conn, lstm)
        v2 = register(conn, lstm, mase=0.8)
        assert [v.version for v in registry.list_versions(conn, "lstm", "*", "1d")] == [1, 2]
        registry.promote(conn, v1)
        registry.promote(conn, v2)
        champ = registry.get_champion(conn, "lstm", "*", "1d")
        assert champ is not None and champ.id == v2 and champ.label == "lstm:*:1d:v2"
        old = registry.get_version(conn, v1)
        assert old is not None and old.status == "retired"
        loaded = registry.load_champion_for(conn, "BTC-USD", "1d")
        assert loaded is not None and loaded.version == "lstm:*:1d:v2"
        assert loaded.validation_mase == pytest.approx(0.7)
        entry = registry.load_champion(conn, "lstm", "*", "1d")
        assert entry is not None and entry[1]["metrics"]["mase"] == 0.8

        restored = registry.rollback(conn, "lstm", "*", "1d")
        assert restored.id == v1 and restored.status == "champion"
        rolled = registry.get_version(conn, v2)
        assert rolled is not None and rolled.status == "rejected"
        assert "rolled back" in rolled.metrics["rejected_reason"]
        with pytest.raises(registry.RegistryError, match="no previous champion"):
            registry.rollback(conn, "lstm", "*", "1d")


def test_only_one_champion_per_scope(clean_db: Engine) -> None:
    with clean_db.begin() as conn:
        a = register(conn, NaiveForecaster().fit(Y), scope="ETH-USD")
        b = register(conn, NaiveForecaster().fit(Y), scope="ETH-USD")
        registry.promote(conn, a)
        registry.promote(conn, b)
        n = conn.execute(
            sa.text("SELECT count(*) FROM model_versions WHERE status = 'champion'")
        ).scalar()
        assert n == 1
        assert registry.load_champion_for(conn, "SOL-USD", "1d", model="naive") is None


def test_the_recorded_noise_t_reaches_the_served_choice(clean_db: Engine) -> None:
    """Training records each asset's advantage t (ml.promotion.Scored); serving reads it back
    from the registry and applies the same noise rule the backtest applies."""
    per_series = {
        "BTC-USD": {"mase": 0.9, "advantage_t": 0.3},
        "ETH-USD": {"mase": 0.9, "advantage_t": 2.5},
    }
    with clean_db.begin() as conn:
        registry.promote(conn, register(conn, NaiveForecaster().fit(Y), per_series=per_series))
    policy = SelectionPolicy()
    with clean_db.connect() as conn:
        noisy = registry.load_champion_for(conn, "BTC-USD", "1d", model="naive")
        clear = registry.load_champion_for(conn, "ETH-USD", "1d", model="naive")
        unrecorded = registry.load_champion_for(conn, "SOL-USD", "1d", model="naive")
    assert noisy is not None and noisy.validation_t == pytest.approx(0.3)
    choice = select_for(policy.min_lstm_days, noisy, policy)
    assert choice.model == "arima" and "no more than noise" in (choice.reason or "")
    assert clear is not None and select_for(policy.min_lstm_days, clear, policy).model == "lstm"
    assert unrecorded is not None and unrecorded.validation_t is None  # the rule as before
    assert select_for(policy.min_lstm_days, unrecorded, policy).model == "lstm"


def test_scored_records_the_advantage_t_per_series() -> None:
    scored = Scored(
        {"A": Metrics(mae=1.0, mape=1.0, mase=0.9, coverage=0.8, count=10)},
        {"A": 1.7},
    )
    assert scored.to_dict()["per_series"]["A"]["advantage_t"] == 1.7
