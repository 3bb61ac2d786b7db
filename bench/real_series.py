"""Real price series that ship inside PyPI packages (the optional ``bench`` extra).

| name        | package (module)                   | asset class          | bars        |
|-------------|------------------------------------|----------------------|-------------|
| sp500       | arch (arch.data.sp500, Adj Close)  | equity index         | daily       |
| nasdaq      | arch (arch.data.nasdaq, Adj Close) | equity index         | daily       |
| wti         | arch (arch.data.wti, DCOILWTICO)   | commodity (crude)    | daily       |
| goog        | backtesting (backtesting.test)     | large-cap stock      | daily       |
| msft        | pmdarima (datasets.load_msft)      | large-cap stock      | daily       |
| eurusd      | backtesting (backtesting.test)     | FX                   | hourly      |

Each loader returns (bar times as ``datetime64[D]`` days for the history-days rule, as Unix
seconds, closes), oldest first, non-positive and missing closes dropped; an hourly series keeps
the hours of day of its bars as ``phases`` (``ml.calibration.bar_phases``: the intraday profile
of its bands).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ml.calibration import bar_phases


@dataclass(frozen=True)
class Series:
    name: str
    asset_class: str
    interval: str  # 1d | 1h
    source: str
    days: np.ndarray
    closes: np.ndarray
    phases: np.ndarray | None = None  # hourly series: the hour of day (UTC) of every bar


def _frame(index: pd.Index, close: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = pd.DataFrame({"ts": pd.to_datetime(index), "close": close.to_numpy()}).dropna()
    frame = frame[frame["close"] > 0]
    days = frame["ts"].dt.floor("D").to_numpy().astype("datetime64[D]")
    seconds = frame["ts"].to_numpy().astype("datetime64[s]").astype(np.int64)
    return days, seconds, frame["close"].to_numpy(dtype=np.float64)


def _arch(module: str, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import importlib

    data = importlib.import_module(f"arch.data.{module}").load()
    return _frame(data.index, data[column])


def _backtesting(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    import backtesting.test as bt

    data = getattr(bt, name)
    return _frame(data.index, data["Close"])


def _msft() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from pmdarima.datasets import load_msft

    data = load_msft()
    return _frame(pd.Index(data["Date"]), data["Close"])


Loader = Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]  # days, seconds, closes
SOURCES: dict[str, tuple[str, str, str, Loader]] = {
    "sp500": ("equity index", "1d", "arch.data.sp500", lambda: _arch("sp500", "Adj Close")),
    "nasdaq": ("equity index", "1d", "arch.data.nasdaq", lambda: _arch("nasdaq", "Adj Close")),
    "wti": ("commodity", "1d", "arch.data.wti", lambda: _arch("wti", "DCOILWTICO")),
    "goog": ("stock", "1d", "backtesting.test.GOOG", lambda: _backtesting("GOOG")),
    "msft": ("stock", "1d", "pmdarima.datasets.load_msft", _msft),
    "eurusd": ("fx", "1h", "backtesting.test.EURUSD", lambda: _backtesting("EURUSD")),
}


def load_all(last: int | None = None) -> list[Series]:
    """Every series (its newest ``last`` bars when given)."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, (asset_class, interval, source, load) in SOURCES.items():
            days, seconds, closes = load()
            if last is not None:
                days, seconds, closes = days[-last:], seconds[-last:], closes[-last:]
            phases = bar_phases(interval, seconds)
            out.append(Series(name, asset_class, interval, source, days, closes, phases))
    return out
