"""The one forecaster interface every model implements.

Follows the statsforecast / darts habits: ``fit(y)`` learns parameters from a price series,
``predict(h, level)`` forecasts from the end of the fitted series and ``forward(y, h, level)``
applies the *fitted* parameters to a new history (no refit), which is what serving and
walk-forward evaluation need between refits. Artifacts are plain bytes for the registry and
never pickles (loading an artifact must not execute code).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, ClassVar, Self

import numpy as np

from ml.calibration import Band
from ml.errors import ForecastError

DEFAULT_LEVEL = 0.8


@dataclass(frozen=True)
class Forecast:
    """Point forecast and a central prediction interval, all of length ``h``, in prices.

    ``bands`` holds the interval of every offered level (``ml.calibration.Band``); a model's
    own forecast has just the one of ``level``.
    """

    mean: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    level: float = DEFAULT_LEVEL
    bands: tuple[Band, ...] = ()

    def __post_init__(self) -> None:
        shapes = {self.mean.shape, self.lower.shape, self.upper.shape}
        if len(shapes) != 1 or self.mean.ndim != 1:
            raise ValueError(f"mean/lower/upper must be 1-D arrays of one length, got {shapes}")
        if not (0.0 < self.level < 1.0):
            raise ValueError(f"level must be in (0, 1), got {self.level}")
        if not self.bands:
            object.__setattr__(self, "bands", (Band(self.level, self.lower, self.upper),))

    @property
    def horizon(self) -> int:
        return int(self.mean.shape[0])

    @property
    def levels(self) -> tuple[float, ...]:
        return tuple(band.level for band in self.bands)

    def band(self, level: float) -> Band:
        for band in self.bands:
            if abs(band.level - level) < 1e-9:
                return band
        raise KeyError(f"no interval at level {level}; offered: {self.levels}")

    @classmethod
    def of_bands(cls, mean: np.ndarray, bands: Sequence[Band], level: float) -> Forecast:
        """A forecast whose ``lower``/``upper`` are the band of ``level`` among ``bands``."""
        main = next((band for band in bands if abs(band.level - level) < 1e-9), None)
        if main is None:
            raise ValueError(f"level {level} is not among {[band.level for band in bands]}")
        return cls(mean, main.lower, main.upper, main.level, tuple(bands))


def json_artifact(data: bytes, kind: str) -> dict[str, Any]:
    """The payload of a JSON model artifact (``to_bytes`` of a local model) of ``kind``;
    ValueError if the bytes are not JSON or hold another kind."""
    payload = json.loads(data)
    found = payload.get("kind") if isinstance(payload, dict) else None
    if found != kind:
        raise ValueError(f"not a {kind} artifact: {found!r}")
    return dict(payload)


def z_value(level: float) -> float:
    """Two-sided standard normal quantile for a central interval of ``level``."""
    if not (0.0 < level < 1.0):
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2.0)


def as_price_series(y: np.ndarray | list[float], *, min_len: int = 1) -> np.ndarray:
    """Validate a price series: 1-D, finite, strictly positive, at least ``min_len`` long."""
    arr = np.asarray(y, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"price series must be 1-D, got shape {arr.shape}")
    if arr.shape[0] < min_len:
        raise ValueError(f"price series needs at least {min_len} points, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError("price series must be finite and strictly positive")
    return arr


def check_horizon(h: int) -> None:
    if h < 1:
        raise ValueError(f"horizon must be >= 1, got {h}")


def log_price_forecast(
    last_price: float, log_mean: np.ndarray, log_sd: np.ndarray, level: float
) -> Forecast:
    """Turn cumulative log-return forecasts (mean, sd per step) into a price Forecast."""
    z = z_value(level)
    sd = np.maximum(log_sd, 0.0)
    return Forecast(
        mean=last_price * np.exp(log_mean),
        lower=last_price * np.exp(log_mean - z * sd),
        upper=last_price * np.exp(log_mean + z * sd),
        level=level,
    )


class NotFittedError(ForecastError, RuntimeError):
    """predict/forward/forward_many/to_bytes called before fit (every model raises it)."""


@dataclass
class FitInfo:
    """What fitting decided, for logs, the registry and fallback reasons."""

    model: str
    details: dict[str, Any] = field(default_factory=dict)
    fallback_reason: str | None = None


class Forecaster(ABC):
    """Fit on a price series, forecast ``h`` steps with a central ``level`` interval."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._y: np.ndarray | None = None
        self.info = FitInfo(model=self.name)

    @abstractmethod
    def fit(self, y: np.ndarray) -> Self:
        """Learn parameters from prices ``y`` (oldest first)."""

    @abstractmethod
    def forward(self, y: np.ndarray, h: int, level: float = DEFAULT_LEVEL) -> Forecast:
        """Forecast ``h`` steps after the end of ``y`` with the already fitted parameters."""

    def predict(self, h: int, level: float = DEFAULT_LEVEL) -> Forecast:
        """Forecast ``h`` steps after the end of the fitted series."""
        if self._y is None:
            raise NotFittedError(f"{self.name}: call fit() first")
        return self.forward(self._y, h, level)

    @property
    def served_model(self) -> str:
        """The model family that actually produces forecasts (a fallback may change it)."""
        return self.name

    @abstractmethod
    def to_bytes(self) -> bytes:
        """Serialize fitted parameters (no pickle)."""

    @classmethod
    @abstractmethod
    def from_bytes(cls, data: bytes) -> Self:
        """Inverse of :meth:`to_bytes`."""


class GlobalForecaster(Forecaster):
    """A model fitted once on many series (e.g. the LSTM) and applied to any of them.

    Callers dispatch on this type (batched inference, per-asset validation), never on a
    model's name. A global model still needs per-asset calibration: its intervals go through
    ``ml.calibration`` like every other model's when served.
    """

    @abstractmethod
    def fit_many(self, series: Sequence[np.ndarray]) -> Self:
        """Train on every series in ``series`` (oldest first each)."""

    @abstractmethod
    def forward_many(
        self, histories: Sequence[np.ndarray], h: int, level: float = DEFAULT_LEVEL
    ) -> list[Forecast]:
        """:meth:`forward` for many histories at once (one batched model call)."""

    def forward(self, y: np.ndarray, h: int, level: float = DEFAULT_LEVEL) -> Forecast:
        return self.forward_many([as_price_series(y)], h, level)[0]
