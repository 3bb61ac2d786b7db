"""The model layer of the service: the served forecast (``ml.serving``) and hot reload.

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

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ml import registry
from ml.base import Forecaster
from ml.registry import GLOBAL_SCOPE, ModelVersion
from ml.selection import InsufficientHistory, SelectionPolicy
from ml.serving import LoadedModel, serve_forecast
from services.common.config import Settings
from services.common.metrics import MODEL_AGE
from services.prediction.records import Served

log = logging.getLogger(__name__)

__all__ = ["Champion", "InsufficientHistory", "ModelProvider"]

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
        return LoadedModel(self.model, self.version.label, mase)


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
            f"{scope}:{interval}": c.version.label
            for (scope, interval), c in self._champions.items()
        }

    def ages(self, now: datetime | None = None) -> dict[str, float | None]:
        now = now or datetime.now(UTC)
        out: dict[str, float | None] = {}
        for c in self._champions.values():
            promoted = c.version.promoted_at
            out[c.version.label] = (
                None if promoted is None else round((now - promoted).total_seconds(), 1)
            )
        return out

    def update_age_metrics(self) -> None:
        now = datetime.now(UTC)
        for c in self._champions.values():
            if c.version.promoted_at is not None:
                age = (now - c.version.promoted_at).total_seconds()
                MODEL_AGE.labels(c.version.model, f"{c.version.scope}:{c.version.interval}").set(
                    age
                )

    def validation_mase(self, symbol: str, interval: str, model: str) -> float | None:
        champion = self.champion(symbol, interval)
        if model != "lstm" or champion is None:
            return None
        return champion.serving(symbol).validation_mase

    # ----------------------------------------------------------------------- serving
    def forecast(
        self,
        symbol: str,
        interval: str,
        closes: Sequence[float] | np.ndarray,
        horizon: int,
        available: int,
    ) -> Served:
        """The served forecast for steps 1..horizon; raises InsufficientHistory."""
        champion = self.champion(symbol, interval)
        lstm = None if champion is None else champion.serving(symbol)
        served = serve_forecast(
            np.asarray(closes, dtype=np.float64), horizon, available, lstm, self.policy
        )
        return Served(
            model=served.model,
            model_version=served.model_version,
            mean=served.mean,
            lower=served.lower,
            upper=served.upper,
            fallback_reason=served.fallback_reason,
            level=served.level,
        )
