"""CLI glue for commands implemented in ``ml/`` (which never imports ``services``)."""

from __future__ import annotations

import argparse


def backtest_main(args: argparse.Namespace) -> int:
    from ml.backtest import main

    options = {
        "--csv": args.csv,
        "--symbol": args.symbol,
        "--interval": args.interval,
        "--horizon": args.horizon,
        "--test-size": args.test_size,
        "--refit-every": args.refit_every,
    }
    return int(main([part for item in options.items() for part in map(str, item)]))
