"""``pricecast backtest``: walk-forward backtest of the served model-selection logic on a CSV.

Columns: ``date`` or ``time`` and ``close`` (others ignored). Prints one JSON object: metrics
per model (naive, drift, arima, lstm: each model's own intervals) and for ``served`` (what
the service would have answered origin by origin, fallbacks and the online calibration
included, see ``ml.served_walk``), each with ``coverage_by_level``, the interval score and
MSIS per level; origins with too little history are reported under ``ERR_PRED_001``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ml.arima import ArimaForecaster
from ml.base import DEFAULT_LEVEL, Forecast
from ml.calibration import DEFAULT_LEVELS, bar_phases, check_levels
from ml.evaluation import Fitter, Predictor, level_key, predictor_of, walk_forward
from ml.lstm import LSTMConfig, LSTMForecaster
from ml.naive import DriftForecaster, NaiveForecaster
from ml.promotion import decide_promotion, score, train_candidate
from ml.selection import SelectionPolicy
from ml.served_walk import served_walk_forward
from ml.serving import LoadedModel

BACKTEST_LSTM = LSTMConfig(epochs=25, max_train_seconds=20.0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pricecast backtest", description=__doc__)
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--csv", required=True, type=Path, help="CSV with date|time and close")
    parser.add_argument("--symbol", required=True)
    parser.add_argument("--interval", default="1d", choices=["1d", "1h"])
    parser.add_argument("--horizon", type=int, default=1)
    parser.add_argument("--test-size", type=int, default=250)
    parser.add_argument("--refit-every", type=int, default=25)
    parser.add_argument("--min-arima-days", type=int, default=30)
    parser.add_argument("--min-lstm-days", type=int, default=90)
    parser.add_argument("--no-lstm", action="store_true", help="skip LSTM training")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--levels",
        type=parse_levels,
        default=DEFAULT_LEVELS,
        help="interval levels to report, comma-separated (default 0.5,0.8,0.95)",
    )


def parse_levels(text: str) -> tuple[float, ...]:
    try:
        return check_levels(float(part) for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --levels {text!r}: {exc}") from None


def load_csv(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times as Unix seconds, dates as numpy datetime64[D], closes) per row, oldest first,
    invalid rows dropped."""
    df = pd.read_csv(path)
    cols = {column.lower().strip(): column for column in df.columns}
    tcol = cols.get("date") or cols.get("time") or cols.get("timestamp")
    ccol = cols.get("close") or cols.get("adj close")
    if tcol is None or ccol is None:
        raise ValueError(f"{path}: need a 'date' (or 'time') and a 'close' column")
    ts = pd.to_datetime(df[tcol], utc=True, errors="coerce")
    close = pd.to_numeric(df[ccol], errors="coerce")
    frame = pd.DataFrame({"ts": ts, "close": close}).dropna()
    frame = frame[frame["close"] > 0].sort_values("ts").drop_duplicates("ts", keep="last")
    naive = frame["ts"].dt.tz_convert(None)
    days = naive.dt.floor("D").to_numpy().astype("datetime64[D]")
    seconds = naive.to_numpy().astype("datetime64[s]").astype(np.int64)
    return seconds, days, frame["close"].to_numpy(dtype=np.float64)


def days_available(days: np.ndarray) -> np.ndarray:
    """Distinct calendar days with data up to and including each row."""
    new_day = np.r_[True, days[1:] != days[:-1]]
    return np.cumsum(new_day)


class _LstmChampion:
    """Backtest stand-in for the registry: retrain at every refit, promote like the job."""

    def __init__(self, horizon: int, policy: SelectionPolicy, seed: int) -> None:
        self.horizon = horizon
        self.policy = policy
        self.config = LSTMConfig(**{**BACKTEST_LSTM.__dict__, "seed": seed})
        self.champion: LoadedModel | None = None
        self.latest: LSTMForecaster | None = None
        self.cache: dict[int, tuple[LSTMForecaster | None, LoadedModel | None]] = {}
        self.log: list[dict[str, Any]] = []

    def at(
        self, history: np.ndarray, days: int
    ) -> tuple[LSTMForecaster | None, LoadedModel | None]:
        key = history.size
        if key in self.cache:
            return self.cache[key]
        latest: LSTMForecaster | None = None
        if days >= self.policy.min_lstm_days:
            try:
                latest, holdouts = train_candidate(
                    {"s": history}, horizon=self.horizon, config=self.config
                )
            except ValueError as exc:
                self.log.append({"at": key, "trained": False, "reason": str(exc)})
            else:
                cand = score(latest, {"s": history}, holdouts, self.horizon)
                champ = (
                    None
                    if self.champion is None
                    else score(self.champion.model, {"s": history}, holdouts, self.horizon)
                )
                decision = decide_promotion(
                    cand.mase, None if champ is None else champ.mase, advantage_t=cand.advantage_t
                )
                if decision.promote:
                    self.champion = LoadedModel(
                        latest, f"lstm:backtest:{key}", cand.mase, cand.advantage_t
                    )
                elif self.champion is not None and champ is not None and champ.mase is not None:
                    self.champion = LoadedModel(
                        self.champion.model, self.champion.version, champ.mase, champ.advantage_t
                    )
                self.log.append(
                    {"at": key, "promoted": decision.promote, "reason": decision.reason}
                )
        self.cache[key] = (latest, self.champion)
        return self.cache[key]


def _nan_forecast(steps: int) -> Forecast:
    nan = np.full(steps, np.nan)
    return Forecast(nan, nan.copy(), nan.copy())


def run_backtest(
    days: np.ndarray,
    closes: np.ndarray,
    *,
    horizon: int = 1,
    test_size: int = 250,
    refit_every: int = 25,
    policy: SelectionPolicy | None = None,
    use_lstm: bool = True,
    seed: int = 0,
    levels: Sequence[float] = DEFAULT_LEVELS,
    phases: np.ndarray | None = None,
) -> dict[str, Any]:
    """Every model's walk-forward and the served one's; ``phases`` (the hour of day of every
    bar, intraday bars only) gives the served bands their intraday volatility profile."""
    policy = policy or SelectionPolicy()
    lv = check_levels((*levels, DEFAULT_LEVEL))
    avail = days_available(days)
    lstm = _LstmChampion(horizon, policy, seed)

    def simple(factory: type[NaiveForecaster] | type[ArimaForecaster]) -> Fitter:
        return lambda hist: predictor_of(factory().fit(hist), levels=lv)

    def lstm_fitter(hist: np.ndarray) -> Predictor:
        model, _ = lstm.at(hist, int(avail[hist.size - 1])) if use_lstm else (None, None)
        if model is None:
            return lambda histories, h: [_nan_forecast(h) for _ in histories]
        return predictor_of(model, levels=lv)

    kw: dict[str, Any] = {"horizon": horizon, "test_size": test_size, "refit_every": refit_every}
    result: dict[str, Any] = {}
    timings: dict[str, float] = {}
    fitters: dict[str, Fitter] = {
        "naive": simple(NaiveForecaster),
        "drift": simple(DriftForecaster),
        "arima": simple(ArimaForecaster),
        "lstm": lstm_fitter,
    }
    for name, fitter in fitters.items():
        t0 = time.perf_counter()
        wf = walk_forward(closes, fitter, min_history=3, **kw)
        timings[name] = round(time.perf_counter() - t0, 2)
        result[name] = wf.metrics().to_dict()
    t0 = time.perf_counter()
    served = served_walk_forward(
        closes,
        avail,
        horizon=horizon,
        test_size=test_size,
        refit_every=refit_every,
        policy=policy,
        champion_at=(lambda hist, history_days: lstm.at(hist, history_days)[1])
        if use_lstm
        else None,
        levels=lv,
        phases=phases,
    )
    timings["served"] = round(time.perf_counter() - t0, 2)
    result["served"] = served.walk.metrics().to_dict()
    result["served"]["choices"] = dict(served.choices)
    result["served"]["fallback_reasons"] = dict(served.reasons.most_common(5))
    insufficient = served.insufficient_report()
    if insufficient is not None:
        result["served"]["ERR_PRED_001"] = insufficient
    result["served"]["calibration"] = {
        f"h{step}:{level_key(band_level)}": round(alpha, 5)
        for (step, band_level), alpha in sorted(served.state.alpha.items())
    }
    result["lstm"]["promotions"] = lstm.log
    result["seconds"] = timings
    return result


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Entry point for an already parsed namespace (``services/cli.py`` wiring)."""
    started = time.perf_counter()
    try:
        seconds, days, closes = load_csv(args.csv)
    except (OSError, ValueError) as exc:
        print(json.dumps({"error": str(exc)}), file=sys.stderr)
        return 2
    if closes.size < args.horizon + 4:
        print(json.dumps({"error": f"only {closes.size} valid rows"}), file=sys.stderr)
        return 2
    policy = SelectionPolicy(min_arima_days=args.min_arima_days, min_lstm_days=args.min_lstm_days)
    metrics = run_backtest(
        days,
        closes,
        horizon=args.horizon,
        test_size=args.test_size,
        refit_every=args.refit_every,
        policy=policy,
        use_lstm=not args.no_lstm,
        seed=args.seed,
        levels=args.levels,
        phases=bar_phases(args.interval, seconds),
    )
    out = {
        "symbol": args.symbol,
        "interval": args.interval,
        "horizon": args.horizon,
        "test_size": args.test_size,
        "refit_every": args.refit_every,
        "rows": int(closes.size),
        "level": DEFAULT_LEVEL,
        "levels": list(check_levels((*args.levels, DEFAULT_LEVEL))),
        **metrics,
        "elapsed_s": round(time.perf_counter() - started, 2),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
