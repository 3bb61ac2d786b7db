"""Step 6 of ``services.prediction.engine``: score accuracy after a batch.

Bars that closed (or changed) score the forecasts that targeted them
(``services.prediction.accuracy``) and feed the online calibration
(``services.prediction.calibration_store``), in one transaction. For every key that got new
scores, the rolling accuracy of each model is exported as metrics and checked against the
model's validation MASE; a degraded model queues one retrain request (the
``retrain_requests`` row, within the same transaction), and :meth:`AccuracyScorer.publish`
announces each queued request on ``model-events`` (``services.common.events``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.engine import Engine

from services.common.config import Settings
from services.common.events import RetrainRequested, encode
from services.common.metrics import (
    ACCURACY_DEGRADATION,
    MODEL_MAPE,
    RETRAIN_REQUESTS,
)
from services.prediction import accuracy, calibration_store
from services.prediction.champions import ModelProvider
from services.prediction.clock import horizons
from services.prediction.planning import Targets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AccuracyScorer:
    settings: Settings
    db: Engine
    provider: ModelProvider
    producer: AIOKafkaProducer

    def settle(self, targets: Targets) -> tuple[int, list[RetrainRequested]]:
        """Score the forecasts of ``targets``: (rows scored, retrain requests queued)."""
        scored = 0
        events: list[RetrainRequested] = []
        settings = self.settings
        with self.db.begin() as conn:
            for (symbol, interval), bars in targets.items():
                if not bars:
                    continue
                n_horizons = horizons(settings, interval)
                fresh: list[calibration_store.ScoredRow] = []
                changed = accuracy.score_targets(conn, symbol, interval, bars, n_horizons, fresh)
                calibration_store.feed(conn, symbol, interval, fresh, settings)
                scored += changed
                if changed:
                    events.extend(self._check_degradation(conn, symbol, interval))
        return scored, events

    def _check_degradation(
        self, conn: sa.Connection, symbol: str, interval: str
    ) -> list[RetrainRequested]:
        settings = self.settings
        factor = settings.accuracy_degradation_factor
        events = []
        for rolling in accuracy.rolling_accuracy(conn, symbol, interval, settings.accuracy_window):
            reference = self.provider.validation_mase(symbol, interval, rolling.model)
            ratio = accuracy.degradation_ratio(rolling, reference)
            if rolling.mape is not None:
                MODEL_MAPE.labels(symbol, interval, rolling.model).set(rolling.mape)
            if ratio is not None:
                ACCURACY_DEGRADATION.labels(symbol, interval, rolling.model).set(ratio)
            if not accuracy.is_degraded(rolling, ratio, factor, settings.accuracy_min_samples):
                continue
            reason = (
                f"rolling MASE {rolling.mase:.3f} of {rolling.model} is {ratio:.2f}x its "
                f"validation MASE {reference or 1.0:.3f} (limit {factor:.2f}x)"
            )
            details = {
                "model": rolling.model,
                "validation_mase": reference,
                "ratio": ratio,
                **rolling.to_dict(),
            }
            request_id = accuracy.request_retrain(
                conn, symbol, interval, reason, details, settings.retrain_cooldown_s
            )
            if request_id is None:
                continue
            log.warning("retrain requested for %s %s: %s", symbol, interval, reason)
            events.append(
                RetrainRequested(
                    request_id=request_id,
                    symbol=symbol,
                    interval=interval,
                    reason=reason,
                    requested_by=accuracy.REQUESTED_BY,
                    details=details,
                )
            )
        return events

    async def publish(self, events: Sequence[RetrainRequested]) -> None:
        for event in events:
            await self.producer.send_and_wait(
                self.settings.topic_model_events, encode(event), key=event.key
            )
            RETRAIN_REQUESTS.labels("accuracy_degraded").inc()
