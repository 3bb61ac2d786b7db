"""CLI glue for commands implemented in ``ml/`` (which never imports ``services``)."""

from __future__ import annotations

import argparse


def backtest_main(args: argparse.Namespace) -> int:
    """``pricecast backtest``: ``ml.backtest``'s own command line, every option passed on as
    given (its parser is the reference: ``services/cli.py`` declares the same options without
    importing ``ml`` for ``--help``; a test holds the two equal)."""
    from ml.backtest import build_parser, main

    argv: list[str] = []
    for action in build_parser()._actions:
        if not action.option_strings or action.dest == "help":
            continue
        value = getattr(args, action.dest)
        if action.nargs == 0:  # a flag (store_true)
            argv += [action.option_strings[0]] if value else []
        else:
            argv += [action.option_strings[0], str(value)]
    return int(main(argv))
