from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ml_synthetic import ar_prices, busy_hour_prices, random_walk

from ml.backtest import build_parser, main
from services.cli import build_parser as cli_parser
from services.cli import main as cli_main


def write_csv(path: Path, closes: np.ndarray, column: str = "date") -> Path:
    dates = pd.date_range("2022-01-01", periods=closes.size, freq="D")
    pd.DataFrame({column: dates.strftime("%Y-%m-%d"), "close": closes}).to_csv(path, index=False)
    return path


def backtest(
    capsys: pytest.CaptureFixture[str],
    csv: Path,
    symbol: str,
    walk: tuple[int, int],
    *extra: str,
) -> dict:
    """``pricecast backtest`` on ``csv``: ``walk`` is (test size, refit every); its JSON report."""
    test_size, refit_every = walk
    argv = ["--csv", str(csv), "--symbol", symbol, "--test-size", str(test_size)]
    assert main([*argv, "--refit-every", str(refit_every), *extra]) == 0
    return json.loads(capsys.readouterr().out)


def test_backtest_cli_on_a_random_walk_serves_no_worse_than_naive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "rw.csv", random_walk(420, seed=3), column="time")
    out = backtest(capsys, csv, "RW", (100, 50), "--horizon", "2")
    for name in ("naive", "drift", "arima", "lstm", "served"):
        assert set(out[name]) >= {"mae", "mape", "mase", "coverage", "count"}
    assert out["served"]["count"] == 100
    assert out["naive"]["mase"] == 1.0
    assert out["served"]["mase"] <= 1.0
    assert sum(out["served"]["choices"].values()) == 100


def test_backtest_cli_on_ar_data_beats_naive(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "ar.csv", ar_prices(400, seed=4))
    out = backtest(capsys, csv, "AR", (100, 50), "--no-lstm")
    assert out["served"]["mase"] < 0.95
    assert out["served"]["choices"] == {"arima": 100}
    assert 0.6 <= out["served"]["coverage"] <= 0.95


def test_backtest_rejects_a_csv_without_close(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,price\n2022-01-01,1\n")
    assert main(["--csv", str(bad), "--symbol", "X"]) == 2


def test_backtest_reports_every_level_with_interval_scores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "rw.csv", random_walk(300, seed=5))
    out = backtest(capsys, csv, "RW", (60, 30), "--no-lstm", "--levels", "0.5,0.95")
    assert out["levels"] == [0.5, 0.8, 0.95]  # the default level is always reported
    for name in ("naive", "arima", "served"):
        row = out[name]
        assert set(row["coverage_by_level"]) == {"0.5", "0.8", "0.95"}
        assert row["coverage_by_level"]["0.8"] == row["coverage"]
        cov = row["coverage_by_level"]
        assert cov["0.5"] <= cov["0.8"] <= cov["0.95"]
        scores = row["interval_score"]
        assert all(v is not None and v > 0 for v in scores.values())
        assert all(row["msis"][k] > 0 for k in scores)
    assert set(out["served"]["calibration"]) == {"h1:0.5", "h1:0.8", "h1:0.95"}


def test_backtest_counts_origins_without_enough_history_as_err_pred_001(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = write_csv(tmp_path / "short.csv", random_walk(60, seed=6))
    out = backtest(capsys, csv, "S", (50, 25), "--no-lstm")
    report = out["served"]["ERR_PRED_001"]
    # origins 9..28 have 10..29 days: below the 30 days ARIMA needs
    assert report["count"] == out["served"]["choices"]["insufficient_history"] == 20
    assert report["required_days"] == 30
    assert report["available_days"] == {"min": 10, "max": 29}
    assert report["message"] == "Insufficient history. Required: 30 days, Available: 29 days"
    assert out["served"]["count"] == 30


def test_backtest_rejects_bad_levels(tmp_path: Path) -> None:
    csv = write_csv(tmp_path / "rw.csv", random_walk(100, seed=5))
    with pytest.raises(SystemExit):
        main(["--csv", str(csv), "--symbol", "X", "--levels", "0.5,1.2"])


def test_backtest_of_hourly_bars_uses_their_hours_of_day(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Returns into hours 8-15 UTC move 3x more: ``--interval 1h`` builds the served bands with
    the bars' hours (the intraday profile) and scores better than the same bars without them."""
    times = pd.date_range("2022-01-03", periods=900, freq="h", tz="UTC")
    closes = busy_hour_prices(times.hour.to_numpy(), seed=7)
    csv = tmp_path / "hourly.csv"
    pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%SZ"), "close": closes}).to_csv(
        csv, index=False
    )
    walk = (200, 100)
    hourly = backtest(capsys, csv, "FX", walk, "--no-lstm", "--interval", "1h")["served"]
    flat = backtest(capsys, csv, "FX", walk, "--no-lstm", "--interval", "1d")["served"]
    assert hourly["count"] == flat["count"] == 200
    assert hourly["interval_score"]["0.8"] < 0.92 * flat["interval_score"]["0.8"]
    assert abs(hourly["coverage"] - 0.8) <= 0.08


def test_pricecast_backtest_takes_every_option_of_the_backtest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``pricecast backtest`` declares the options of ``ml.backtest``'s parser (same flags, same
    defaults) and hands them on: ``--levels`` and ``--no-lstm`` reach the report."""
    ours = {
        action.dest: action.default
        for action in build_parser()._actions
        if action.option_strings and action.dest != "help"
    }
    backtest_parser = cli_parser()._subparsers._group_actions[0].choices["backtest"]
    theirs = {
        action.dest: action.default
        for action in backtest_parser._actions
        if action.option_strings and action.dest != "help"
    }
    assert theirs.keys() == ours.keys()
    assert theirs.pop("levels") == ",".join(f"{level:g}" for level in ours.pop("levels"))
    assert theirs == ours

    csv = write_csv(tmp_path / "rw.csv", random_walk(300, seed=5))
    argv = ["backtest", "--csv", str(csv), "--symbol", "RW", "--test-size", "40"]
    assert cli_main([*argv, "--refit-every", "40", "--no-lstm", "--levels", "0.9"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["levels"] == [0.8, 0.9]
    assert out["lstm"]["count"] == 0 and out["served"]["choices"] == {"arima": 40}
