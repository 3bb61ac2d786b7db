"""The champions the service serves with, and serving with them (``ml.serving``).

One :class:`ModelProvider` holds the current LSTM champions (global ``*`` or per symbol, per
interval), loaded from the registry (``model_versions``). :meth:`ModelProvider.reload` loads
the champions in the calling thread and then swaps them in with one assignment: a forecast
already running keeps the model it started with (no in-flight work is dropped), the next one
uses the new version. Reloads
are triggered by ``model_promoted`` events and, as a safety net for missed events, by a cheap
periodic fingerprint check of the registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar, Self

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ml import registry
from ml.base import DEFAULT_LEVEL, Forecast, Forecaster, GlobalForecaster, as_price_series
from ml.registry import GLOBAL_SCOPE, ModelVersion
from ml.selection import InsufficientHistory, ModelName, SelectionPolicy
from ml.serving import Calibration, LoadedModel, ServedForecast, select_for, serve_forecast
from services.common.config import Settings
from services.common.metrics import MODEL_AGE

log = logging.getLogger(__name__)

__all__ = ["Champion", "InsufficientHistory", "ModelChoice", "ModelProvider"]

_FINGERPRINT = sa.text(
    "SELECT coalesce(string_agg(concat_ws(':', model, scope, interval, 'v' || version), ',' "
    "ORDER BY model, scope, interval), '') FROM model_versions WHERE status = 'champion'"
)
_CHAMPION_IDS = sa.text(
    "SELECT id FROM model_versions WHERE status = 'champion' AND model = 'lstm' "
    "AND interval = ANY(:intervals) ORDER BY id"
)


@dataclass(frozen=True)
class Champion:
    """A loaded LSTM champion (global ``*`` or one symbol's) and its registry row."""

    version: ModelVersion
    model: Forecaster

    def serving(self, symbol: str) -> LoadedModel:
        """What ``ml.serving`` needs, with this symbol's validation MASE (as the registry's
        ``load_champion_for`` computes it)."""
        mase = self.version.series_mase(symbol)
        if mase is None and self.version.scope == symbol:
            mase = self.version.mase
        return LoadedModel(
            self.model, self.version.label, mase, self.version.series_advantage_t(symbol)
        )


def load_champions(
    conn: sa.Connection, intervals: Sequence[str]
) -> dict[tuple[str, str], Champion]:
    """Every LSTM champion for ``intervals``, keyed by (scope, interval)."""
    out: dict[tuple[str, str], Champion] = {}
    for version_id in conn.execute(_CHAMPION_IDS, {"intervals": list(intervals)}).scalars():
        version = registry.get_version(conn, int(version_id))
        if version is None:
            continue
        try:
            out[(version.scope, version.interval)] = Champion(
                version, registry.load_model(conn, version)
            )
        except Exception:
            log.exception("cannot load champion %s; it is not served", version.label)
    return out


class ModelProvider:
    def __init__(self, settings: Settings, engine: Engine, intervals: Sequence[str]) -> None:
        self.settings = settings
        self.engine = engine
        self.intervals = tuple(intervals)
        self.policy = SelectionPolicy(
            min_arima_days=settings.min_history_days_arima,
            min_lstm_days=settings.min_history_days_lstm,
        )
        self._champions: dict[tuple[str, str], Champion] = {}
        self._fingerprint: str | None = None
        self._lock = threading.Lock()
        self.reloads = 0

    # ------------------------------------------------------------------------ loading
    def fingerprint(self) -> str:
        with self.engine.connect() as conn:
            return str(conn.execute(_FINGERPRINT).scalar() or "")

    def reload(self) -> bool:
        """Load every champion, then swap them in; True when the set of versions changed."""
        with self._lock:
            fingerprint = self.fingerprint()
            with self.engine.connect() as conn:
                champions = load_champions(conn, self.intervals)
            changed = fingerprint != self._fingerprint
            self._champions = champions  # one assignment: in-flight forecasts keep theirs
            self._fingerprint = fingerprint
            self.reloads += 1
        if changed:
            log.info("model champions: %s", fingerprint or "none (ARIMA serves)")
        self.update_age_metrics()
        return changed

    def reload_if_changed(self) -> bool:
        if self.fingerprint() == self._fingerprint:
            return False
        return self.reload()

    def champion(self, symbol: str, interval: str) -> Champion | None:
        champions = self._champions
        return champions.get((symbol, interval)) or champions.get((GLOBAL_SCOPE, interval))

    def versions(self) -> dict[str, str]:
        return {
            f"{scope}:{interval}": champion.version.label
            for (scope, interval), champion in self._champions.items()
        }

    def ages(self, now: datetime | None = None) -> dict[str, float | None]:
        now = now or datetime.now(UTC)
        out: dict[str, float | None] = {}
        for champion in self._champions.values():
            promoted = champion.version.promoted_at
            out[champion.version.label] = (
                None if promoted is None else round((now - promoted).total_seconds(), 1)
            )
        return out

    def update_age_metrics(self) -> None:
        now = datetime.now(UTC)
        for champion in self._champions.values():
            version = champion.version
            if version.promoted_at is not None:
                age = (now - version.promoted_at).total_seconds()
                MODEL_AGE.labels(version.model, f"{version.scope}:{version.interval}").set(age)

    def validation_mase(self, symbol: str, interval: str, model: str) -> float | None:
        champion = self.champion(symbol, interval)
        if model != "lstm" or champion is None:
            return None
        return champion.serving(symbol).validation_mase

    # ----------------------------------------------------------------------- serving
    def choose(self, symbol: str, interval: str, available: int) -> ModelChoice:
        """The champion serving the key (if any) and the model ``select_for`` chooses with
        it; raises InsufficientHistory. Choosing is cheap and pure: the engine runs ARIMA
        choices in worker processes (``services.prediction.pool``) and the rest here."""
        champion = self.champion(symbol, interval)
        lstm = None if champion is None else champion.serving(symbol)
        selection = select_for(available, lstm, self.policy)
        return ModelChoice(lstm, selection.model)

    def serve(
        self,
        closes: Sequence[float] | np.ndarray,
        horizon: int,
        available: int,
        lstm: LoadedModel | None,
        calibration: Calibration | None = None,
    ) -> ServedForecast:
        """The served forecast for steps 1..horizon with the champion ``lstm`` (None: none),
        its bands built with ``calibration`` (the key's online state; None: nominal)."""
        return serve_forecast(
            np.asarray(closes, dtype=np.float64),
            horizon,
            available,
            lstm,
            self.policy,
            calibration or self.nominal,
        )

    @property
    def nominal(self) -> Calibration:
        """The offered levels, with no online correction yet."""
        return Calibration.of(self.settings.offered_levels(), self.settings.forecast_default_level)

    def serve_many(
        self,
        items: Sequence[tuple[np.ndarray, int, int, LoadedModel | None, Calibration | None]],
    ) -> list[ServedForecast | Exception]:
        """:meth:`serve` for many ``(closes, horizon, available, lstm, calibration)`` items,
        with one network call per champion and horizon for the items that choose the LSTM (a
        per-item call costs ~10x more). Every item still goes through ``serve_forecast`` (choice,
        fallback, provenance): its champion is wrapped to answer with the batched forecast,
        which is ``forward`` of the same model on the same history (``forward`` *is*
        ``forward_many`` of one). A batch that fails is served item by item, so each item
        gets its own fallback. Model errors (ValueError, ArithmeticError, RuntimeError) are
        returned in place of the item's result."""
        batched: dict[int, Forecast] = {}
        groups: dict[tuple[int, int], list[int]] = {}
        for index, (_, horizon, available, lstm, _calibration) in enumerate(items):
            if lstm is None or not isinstance(lstm.model, GlobalForecaster):
                continue
            if select_for(available, lstm, self.policy).model == "lstm":
                groups.setdefault((id(lstm.model), horizon), []).append(index)
        for (_, horizon), indices in groups.items():
            lstm = items[indices[0]][3]
            assert lstm is not None and isinstance(lstm.model, GlobalForecaster)
            try:
                histories = [as_price_series(items[index][0]) for index in indices]
                forecasts = lstm.model.forward_many(histories, horizon, DEFAULT_LEVEL)
            except ValueError:
                continue  # item by item: serve_forecast records the fallback of each
            batched.update(zip(indices, forecasts, strict=True))
        out: list[ServedForecast | Exception] = []
        for index, (closes, horizon, available, lstm, calibration) in enumerate(items):
            if index in batched and lstm is not None:
                answered = _Answered(batched[index])
                lstm = LoadedModel(answered, lstm.version, lstm.validation_mase, lstm.validation_t)
            try:
                out.append(self.serve(closes, horizon, available, lstm, calibration))
            except (ValueError, ArithmeticError, RuntimeError) as exc:
                out.append(exc)
        return out

    def forecast(
        self,
        symbol: str,
        interval: str,
        closes: Sequence[float] | np.ndarray,
        horizon: int,
        available: int,
    ) -> ServedForecast:
        """The served forecast for steps 1..horizon; raises InsufficientHistory."""
        champion = self.champion(symbol, interval)
        lstm = None if champion is None else champion.serving(symbol)
        return self.serve(closes, horizon, available, lstm)


@dataclass(frozen=True)
class ModelChoice:
    """What serves one key: its LSTM champion (None: none promoted) and the chosen model."""

    lstm: LoadedModel | None
    model: ModelName


class _Answered(Forecaster):
    """A champion's forecast computed beforehand (batched) for exactly one call of
    ``forward`` with its horizon and level."""

    name: ClassVar[str] = "lstm"

    def __init__(self, forecast: Forecast) -> None:
        super().__init__()
        self.forecast = forecast

    def fit(self, y: np.ndarray) -> Self:
        raise RuntimeError("a precomputed forecast cannot be fitted")

    def forward(self, y: np.ndarray, h: int, level: float = DEFAULT_LEVEL) -> Forecast:
        if h != self.forecast.horizon or level != self.forecast.level:
            raise RuntimeError("precomputed forecast asked for another horizon or level")
        return self.forecast

    def to_bytes(self) -> bytes:
        raise RuntimeError("a precomputed forecast is not an artifact")

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        raise RuntimeError("a precomputed forecast is not an artifact")
