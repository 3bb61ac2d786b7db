"""Walk-forward of what the service answers, origin by origin, with its online calibration.

The service scores a forecast when its target bar closes and feeds each level's hit or miss
into the adaptive conformal state of (symbol, interval, horizon, level); the next forecast is
built with that state. Here the same happens in the service's order: when bar ``o`` closes
the service first forecasts from it, then scores the forecasts that targeted it, so the
forecast from origin ``o`` sees every earlier forecast whose target is before ``o`` (the
update for horizon ``h`` runs ``h + 1`` steps late, as live); then
:func:`ml.serving.serve_forecast` answers with the current state. Origins with fewer days
than the ARIMA minimum get no forecast and are counted the way the API reports them
(ERR_PRED_001 with required and available days).

:func:`replay_bands` runs only the band half of that walk over point forecasts already made
(for example a served run's ``walk.mean``): the same calibrator, the same update order, the
same state. A change to ``ml.calibration`` is then measured without refitting a model at
every origin (``bench/_calibration_replay.py``); it answers what :func:`served_walk_forward`
would, as long as the point forecasts do not depend on the calibration.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ml.calibration import AciState, calibrated_bands, check_levels
from ml.evaluation import Bands, WalkForward, naive_scale, target_indices
from ml.selection import InsufficientHistory, SelectionPolicy
from ml.serving import Calibration, LoadedModel, serve_forecast

ChampionAt = Callable[[np.ndarray, int], LoadedModel | None]  # (history, days) -> champion


@dataclass
class ServedRun:
    walk: WalkForward
    choices: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    insufficient: list[tuple[int, int]] = field(default_factory=list)  # (required, available)
    state: AciState = field(default_factory=AciState)

    def insufficient_report(self) -> dict[str, Any] | None:
        """ERR_PRED_001 as the API would answer it, with how many origins got it."""
        if not self.insufficient:
            return None
        required, available = self.insufficient[-1]
        return {
            "code": "ERR_PRED_001",
            "message": (
                f"Insufficient history. Required: {required} days, Available: {available} days"
            ),
            "count": len(self.insufficient),
            "required_days": required,
            "available_days": {
                "min": min(days for _, days in self.insufficient),
                "max": max(days for _, days in self.insufficient),
            },
        }


def _score_closed(
    y: np.ndarray,
    targets: np.ndarray,
    origin: int,
    horizon: int,
    bands: Bands,
    pending: deque[int],
    aci: AciState,
) -> None:
    """Feed every pending forecast whose target closed before ``origin`` into ``aci`` (each
    level's hit or miss), oldest first: the service's order, see the module docstring."""
    while pending and targets[pending[0]] < origin:
        scored = pending.popleft()
        actual = y[targets[scored]]
        for level, (lo, hi) in bands.items():
            aci.update(horizon, level, bool(lo[scored] <= actual <= hi[scored]))


def served_walk_forward(
    closes: np.ndarray,
    available_days: np.ndarray,
    *,
    horizon: int,
    test_size: int,
    policy: SelectionPolicy,
    champion_at: ChampionAt | None = None,
    levels: Sequence[float] = (0.5, 0.8, 0.95),
    level: float = 0.8,
    state: AciState | None = None,
    min_history: int = 3,
    refit_every: int = 25,
    phases: np.ndarray | None = None,
) -> ServedRun:
    """The served forecast of every test target of ``closes`` (step ``horizon``); the
    champion (``champion_at``, e.g. a retrained LSTM) is asked again every ``refit_every``
    targets, ARIMA is fitted at every origin like the service does. ``phases``: the hour of
    day of every bar, for intraday bars (``ml.calibration.bar_phases``)."""
    y = np.asarray(closes, dtype=np.float64)
    all_levels = check_levels((*levels, level))
    targets = target_indices(y.size, test_size, horizon, min_history)
    mean = np.full(targets.size, np.nan)
    bands: Bands = {
        band_level: (np.full(targets.size, np.nan), np.full(targets.size, np.nan))
        for band_level in all_levels
    }
    run = ServedRun(WalkForward(targets, y[targets], y[targets - horizon], mean, *bands[level]))
    run.walk.bands = bands
    run.walk.scale = naive_scale(y, int(targets[0])) if targets.size else None
    aci = run.state = state or AciState()
    pending: deque[int] = deque()  # indices into targets, forecast made, not yet scored
    champion: LoadedModel | None = None
    for slot, target in enumerate(targets):
        origin = int(target) - horizon
        _score_closed(y, targets, origin, horizon, bands, pending, aci)
        history = y[: origin + 1]
        days = int(available_days[origin])
        if champion_at is not None and slot % refit_every == 0:
            champion = champion_at(history, days)
        effective = {
            (horizon, band_level): aci.effective_level(horizon, band_level)
            for band_level in all_levels
        }
        try:
            served = serve_forecast(
                history,
                horizon,
                days,
                champion,
                policy,
                Calibration.of(
                    all_levels, level, effective, None if phases is None else phases[: origin + 1]
                ),
            )
        except InsufficientHistory as exc:
            run.choices["insufficient_history"] += 1
            run.insufficient.append((exc.required_days, exc.available_days))
            continue
        run.choices[served.model] += 1
        run.reasons[served.fallback_reason or "none"] += 1
        mean[slot] = served.mean[horizon - 1]
        for band in served.intervals:
            bands[band.level][0][slot] = band.lower[horizon - 1]
            bands[band.level][1][slot] = band.upper[horizon - 1]
        pending.append(slot)
    return run


def replay_bands(
    closes: np.ndarray,
    targets: np.ndarray,
    horizon: int,
    means: np.ndarray,
    levels: Sequence[float] = (0.5, 0.8, 0.95),
    state: AciState | None = None,
    phases: np.ndarray | None = None,
) -> tuple[Bands, AciState]:
    """The bands :func:`served_walk_forward` serves for ``targets`` when its point forecast
    (step ``horizon``) of each target is ``means`` (NaN: no forecast, as for an origin with
    too little history); the update order is the walk's."""
    y = np.asarray(closes, dtype=np.float64)
    all_levels = check_levels(levels)
    aci = state or AciState()
    bands: Bands = {
        level: (np.full(targets.size, np.nan), np.full(targets.size, np.nan))
        for level in all_levels
    }
    pending: deque[int] = deque()
    for slot, target in enumerate(targets):
        origin = int(target) - horizon
        _score_closed(y, targets, origin, horizon, bands, pending, aci)
        if not np.isfinite(means[slot]):
            continue
        effective = {(horizon, level): aci.effective_level(horizon, level) for level in all_levels}
        # only step ``horizon`` of the forecast is kept, so the earlier steps' means are moot
        path = np.full(horizon, float(means[slot]))
        history_phases = None if phases is None else phases[: origin + 1]
        for band in calibrated_bands(y[: origin + 1], path, all_levels, effective, history_phases):
            bands[band.level][0][slot] = band.lower[horizon - 1]
            bands[band.level][1][slot] = band.upper[horizon - 1]
        pending.append(slot)
    return bands, aci
