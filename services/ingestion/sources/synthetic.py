"""The deterministic synthetic feed: a seeded random walk with drift, jumps and mean reversion.

Two faces of one model per symbol:

* :func:`history` — a fast, vectorised generator of ticks on a fixed time grid (multiples of
  ``step`` since :data:`EPOCH`). The value at a grid point depends only on (seed, symbol, step,
  grid index), so running a backfill twice yields the same ticks (stored once).
  ``log price = log(base) + drift * years + x + cycle``, where ``x`` is an AR(1) of Gaussian
  shocks plus Poisson jumps (mean reversion keeps years of history in a plausible band) and
  ``cycle`` an optional weekly sine (BTC-USD's demo history has one: learnable structure).
* :class:`SyntheticSource` — the live feed: one tick per symbol every ``interval_s``, stamped
  now, continuing from the newest stored price when one is known (or from the model's value
  now), with the same volatility and jump parameters; the sequence of moves is seeded.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from services.ingestion.sources.base import RawTick, Source

EPOCH = datetime(2020, 1, 1, tzinfo=UTC)
BASE_DATE = datetime(2025, 1, 1, tzinfo=UTC)
YEAR_S = 365.0 * 86400.0
MEAN_REVERSION_HALF_LIFE_Y = 0.5


@dataclass(frozen=True)
class AssetModel:
    base: float  # price level at BASE_DATE
    drift: float  # annual log drift
    vol: float  # annual volatility
    jumps_per_day: float
    jump_sd: float  # log size of a jump
    volume: float  # typical trade size
    # A weekly cycle in the log price (0 = none). BTC-USD has one in the demo so that the
    # LSTM has structure to learn and can beat naive walk-forward; the others are pure noise.
    cycle_amp: float = 0.0
    cycle_days: float = 7.0


DEMO_MODELS: dict[str, AssetModel] = {
    "BTC-USD": AssetModel(60_000.0, 0.15, 0.45, 0.05, 0.03, 0.5, cycle_amp=0.05),
    "ETH-USD": AssetModel(3_000.0, 0.10, 0.70, 0.05, 0.04, 5.0),
    "TBILL-USD": AssetModel(100.0, 0.04, 0.01, 0.0, 0.0, 1_000.0),
    "NEW-USD": AssetModel(10.0, 0.0, 0.9, 0.1, 0.05, 200.0),
}


def _symbol_seed(symbol: str) -> int:
    return zlib.crc32(symbol.encode())


def model_for(symbol: str) -> AssetModel:
    """The demo model, or one derived deterministically from the symbol's name."""
    known = DEMO_MODELS.get(symbol)
    if known is not None:
        return known
    name_hash = _symbol_seed(symbol)
    base = 10 ** (1 + (name_hash % 4000) / 1000.0)  # 10 .. 100k
    vol = 0.2 + ((name_hash >> 12) % 60) / 100.0
    return AssetModel(round(base, 2), 0.05, vol, 0.05, 0.03, 10.0)


def _grid_index(ts: datetime, step_s: int) -> int:
    return math.floor((ts - EPOCH).total_seconds() / step_s)


def _path(symbol: str, seed: int, step_s: int, last_index: int) -> np.ndarray:
    """Log-price deviations ``x`` for grid indices 0..last_index."""
    model = model_for(symbol)
    points = last_index + 1
    rng = np.random.default_rng([seed, _symbol_seed(symbol), step_s])
    dt = step_s / YEAR_S
    shocks = model.vol * math.sqrt(dt) * rng.standard_normal(points)
    if model.jumps_per_day > 0:
        jump_chance = min(1.0, model.jumps_per_day * step_s / 86400.0)
        jumps = (rng.random(points) < jump_chance) * rng.normal(0.0, model.jump_sd, points)
        shocks = shocks + jumps
    phi = 0.5 ** (dt / MEAN_REVERSION_HALF_LIFE_Y)
    return ar1(shocks, phi)


def ar1(shocks: np.ndarray, phi: float, chunk: int = 4096) -> np.ndarray:
    """``x[t] = phi * x[t-1] + shocks[t]`` (x[-1] = 0), vectorised chunk by chunk:
    within a chunk ``x[s+j] = phi**j * (x[s] + sum_i<=j shocks[s+i] * phi**-i)``."""
    out = np.empty_like(shocks)
    powers = phi ** np.arange(1, chunk + 1, dtype=np.float64)
    carry = 0.0
    for start in range(0, len(shocks), chunk):
        block_shocks = shocks[start : start + chunk]
        block_powers = powers[: len(block_shocks)]
        block = block_powers * (carry + np.cumsum(block_shocks / block_powers))
        out[start : start + len(block_shocks)] = block
        carry = float(block[-1])
    return out


def history(
    symbol: str,
    start: datetime,
    end: datetime,
    step: timedelta = timedelta(hours=1),
    seed: int = 42,
    source: str = "synthetic",
) -> Iterator[RawTick]:
    """Raw ticks on the grid points in [start, end] (inclusive), ascending."""
    step_s = int(step.total_seconds())
    if step_s <= 0:
        raise ValueError("step must be positive")
    if start < EPOCH:
        raise ValueError(f"synthetic history starts at {EPOCH.date()} at the earliest")
    first = math.ceil((start - EPOCH).total_seconds() / step_s)
    last = _grid_index(end, step_s)
    if last < first:
        return
    model = model_for(symbol)
    deviations = _path(symbol, seed, step_s, last)[first:]
    idx = np.arange(first, last + 1, dtype=np.float64)
    years = (idx * step_s - (BASE_DATE - EPOCH).total_seconds()) / YEAR_S
    cycle = model.cycle_amp * np.sin(2 * math.pi * idx * step_s / (model.cycle_days * 86400.0))
    prices = np.exp(math.log(model.base) + model.drift * years + deviations + cycle)
    rng = np.random.default_rng([seed, _symbol_seed(symbol), step_s, 1])
    sizes = rng.lognormal(0.0, 0.5, last + 1)[first:]  # by grid index, like the prices
    volumes = model.volume * sizes * max(1.0, step_s / 60.0)
    for index in range(len(prices)):
        yield {
            "symbol": symbol,
            "ts": EPOCH + timedelta(seconds=(first + index) * step_s),
            "price": round(float(prices[index]), 6),
            "volume": round(float(volumes[index]), 6),
            "source": source,
        }


def model_price(symbol: str, at: datetime, seed: int = 42) -> float:
    """The model's hourly-grid price at ``at`` (where the live feed starts by default)."""
    ticks = list(history(symbol, at - timedelta(hours=1), at, seed=seed))
    return float(ticks[-1]["price"]) if ticks else model_for(symbol).base


class SyntheticSource(Source):
    name = "synthetic"

    def __init__(
        self,
        symbols: list[str],
        interval_s: float = 1.0,
        seed: int = 42,
        start_prices: Mapping[str, float] | None = None,
        source: str = "synthetic",
    ) -> None:
        self.symbols = symbols
        self.interval_s = interval_s
        self.source = source
        self.models = {symbol: model_for(symbol) for symbol in symbols}
        now = datetime.now(UTC)
        given = dict(start_prices or {})
        self.prices = {
            symbol: given.get(symbol) or model_price(symbol, now, seed) for symbol in symbols
        }
        self._rng = {
            symbol: np.random.default_rng([seed, _symbol_seed(symbol), 7]) for symbol in symbols
        }
        self._last_ts: datetime | None = None

    def _step(self, symbol: str) -> tuple[float, float]:
        model = self.models[symbol]
        rng = self._rng[symbol]
        dt = self.interval_s / YEAR_S
        drift = (model.drift - 0.5 * model.vol**2) * dt
        ret = drift + model.vol * math.sqrt(dt) * rng.standard_normal()
        jump_chance = model.jumps_per_day * self.interval_s / 86400.0
        if model.jumps_per_day > 0 and rng.random() < jump_chance:
            ret += rng.normal(0.0, model.jump_sd)
        self.prices[symbol] *= math.exp(ret)
        volume = model.volume * rng.lognormal(0.0, 0.5)
        return self.prices[symbol], volume

    async def fetch(self) -> list[RawTick]:
        ts = datetime.now(UTC)
        if self._last_ts is not None and ts <= self._last_ts:
            ts = self._last_ts + timedelta(microseconds=1)  # natural key stays unique
        self._last_ts = ts
        out = []
        for symbol in self.symbols:
            price, volume = self._step(symbol)
            out.append(
                {
                    "symbol": symbol,
                    "ts": ts,
                    "price": round(price, 6),
                    "volume": round(volume, 6),
                    "source": self.source,
                }
            )
        return out
