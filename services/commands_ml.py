"""CLI glue for commands implemented in ``ml/`` (which never imports ``services``)."""

from __future__ import annotations

import argparse


def backtest_main(args: argparse.Namespace) -> int:
    from ml.backtest import main

    argv = [
        "--csv", args.csv, "--symbol", args.symbol, "--interval", args.interval,
        "--horizon", str(args.horizon), "--test-size", str(args.test_size),
        "--refit-every", str(args.refit_every),
    ]
    return int(main(argv))
