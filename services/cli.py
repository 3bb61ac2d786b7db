"""The ``pricecast`` command line (docs/architecture.md, "Command line").

Each subcommand names the function that implements it as ``module:function``; modules are
imported only when their command runs, so ``pricecast --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

Handler = Callable[[argparse.Namespace], int]


def _lazy(target: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        module, _, func = target.partition(":")
        handler: Handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)

    run.__qualname__ = target
    return run


Option = tuple[tuple[str, ...], dict[str, Any]]


def _opt(*flags: str, **settings: Any) -> Option:
    """One ``add_argument`` call: its flags (or positional name) and keyword arguments."""
    return flags, settings


@dataclass(frozen=True)
class Command:
    """A subcommand (``"clients create"``: an action of a group, see ``GROUPS``): the
    ``module:function`` that runs it, its options and its help line."""

    name: str
    target: str
    help: str
    options: tuple[Option, ...] = ()


INTERVAL = _opt("--interval", default="1d", choices=("1h", "1d"))
DEFAULT_SCOPES = "prices:read predictions:read models:read"

RUN = Command(
    "run",
    "services.runner:main",
    "whole stack in the foreground (infra, migrate, demo, services)",
    (
        _opt("--no-demo", action="store_true", help="do not load demo history"),
        _opt("--port", type=int, default=None, help="API port (default 8000)"),
    ),
)
API = Command(
    "api",
    "services.api.server:main",
    "the REST API service",
    (
        _opt("--host", default=None),
        _opt("--port", type=int, default=None),
        _opt("--workers", type=int, default=None),
    ),
)
INGEST = Command(
    "ingest",
    "services.ingestion.service:main",
    "the ingestion service (sources -> Kafka -> writer)",
    (
        _opt(
            "--role",
            choices=("all", "sources", "writer"),
            default="all",
            help="run the price sources, the writer, or both",
        ),
    ),
)
PREDICT = Command("predict", "services.prediction.service:main", "the prediction service")
MIGRATE = Command(
    "migrate",
    "services.common.commands:migrate_main",
    "alembic upgrade head",
    (_opt("--revision", default="head"),),
)
TRAIN = Command(
    "train",
    "services.prediction.training:main",
    "retraining job: train, validate, register, promote",
    (
        _opt("--symbols", nargs="*", default=None),
        _opt("--pending", action="store_true", help="serve only queued retrain requests"),
        INTERVAL,
    ),
)
BACKFILL = Command(
    "backfill",
    "services.ingestion.backfill:main",
    "load history through the live validation path",
    (
        _opt("--csv", default=None, help="CSV file with date/time and close columns"),
        _opt("--symbol", default=None),
        _opt("--synthetic", action="store_true", help="generate synthetic history"),
        _opt("--symbols", nargs="*", default=None),
        _opt("--days", type=int, default=365),
        _opt("--seed", type=int, default=None),
        _opt("--step-minutes", type=int, default=60, help="synthetic tick spacing"),
        _opt("--venue", default=None, help="binance|coinbase|kraken|finnhub: REST trades"),
        _opt("--pair", default=None, help="with --venue: venue-symbol:SYMBOL"),
        _opt("--since", default=None, help="with --venue: start (ISO 8601, UTC)"),
        _opt("--until", default=None, help="with --venue: end (ISO 8601; default now)"),
        _opt("--with-writer", action="store_true", help="store it with an in-process writer"),
        _opt(
            "--no-wait",
            action="store_true",
            help="exit once published (do not wait for the writer)",
        ),
        _opt("--wait-timeout", type=float, default=600.0, help="seconds to wait for storage"),
    ),
)
BACKTEST = Command(
    "backtest",
    "services.commands_ml:backtest_main",
    "walk-forward backtest of the served model choice",
    (
        _opt("--csv", required=True),
        _opt("--symbol", required=True),
        INTERVAL,
        _opt("--horizon", type=int, default=1),
        _opt("--test-size", type=int, default=250),
        _opt("--refit-every", type=int, default=25),
        _opt("--min-arima-days", type=int, default=30),
        _opt("--min-lstm-days", type=int, default=90),
        _opt("--no-lstm", action="store_true", help="skip LSTM training"),
        _opt("--seed", type=int, default=0),
        _opt(
            "--levels",
            default="0.5,0.8,0.95",
            help="interval levels to report, comma-separated (default 0.5,0.8,0.95)",
        ),
    ),
)
TOKEN = Command(
    "token",
    "services.api.commands:token_main",
    "mint an access token with the configured private key",
    (
        _opt("--subject", required=True),
        _opt("--scopes", default=DEFAULT_SCOPES),
        _opt("--ttl", type=int, default=None, help="seconds (default: access-token TTL)"),
    ),
)
CLIENTS_CREATE = Command(
    "clients create",
    "services.api.commands:clients_create_main",
    "create an API client and print its id and secret",
    (
        _opt("--name", required=True),
        _opt("--scopes", default=DEFAULT_SCOPES),
        _opt("--client-id", default=None),
    ),
)
MODELS_ROLLBACK = Command(
    "models rollback",
    "services.prediction.training:rollback_main",
    "restore the previous champion",
    (_opt("--symbol", required=True), _opt("--model", default="lstm"), INTERVAL),
)
STORAGE_MAINTAIN = Command(
    "storage maintain",
    "services.storage.maintenance:main",
    "one round: tick retention, storage status as JSON",
)
WATCH = Command(
    "watch",
    "services.api.stream.watch:main",
    "print a symbol's predictions as they arrive (live stream)",
    (
        _opt("symbol"),
        INTERVAL,
        _opt("--url", default=None, help="ws(s)://host/api/v1/stream (default: the API)"),
        _opt("--token-file", default=None, help="access token (default: the demo token)"),
        _opt("--json", action="store_true", help="one JSON record per line"),
        _opt("--count", type=int, default=None, help="exit after N predictions"),
    ),
)
DOCTOR = Command(
    "doctor",
    "services.doctor:main",
    "check every dependency and known failure mode",
    (
        _opt("--json", action="store_true", help="machine-readable output"),
        _opt(
            "--only",
            action="append",
            metavar="CHECKS",
            help="comma list of checks, prefixes (kafka) or globs (*.reachable); repeatable",
        ),
        _opt("--show", choices=("topics", "lag"), help="print Kafka topics or group lag"),
        _opt("--shell", choices=("db", "redis"), help="open psql / redis-cli on the config"),
    ),
)

# Groups of actions (``pricecast clients create``): their help lines.
GROUPS = {
    "clients": "API clients (client credentials)",
    "models": "model registry operations",
    "storage": "time-series storage upkeep",
}

# In the order ``pricecast --help`` lists them.
COMMANDS: tuple[Command, ...] = (
    RUN,
    API,
    INGEST,
    PREDICT,
    MIGRATE,
    TRAIN,
    BACKFILL,
    BACKTEST,
    TOKEN,
    CLIENTS_CREATE,
    MODELS_ROLLBACK,
    STORAGE_MAINTAIN,
    WATCH,
    DOCTOR,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pricecast", description="Pricecast asset-price forecasts"
    )
    parser.add_argument("--log-level", default=None, help="override PRICECAST_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups: dict[str, argparse._SubParsersAction[argparse.ArgumentParser]] = {}
    for command in COMMANDS:
        group, _, action = command.name.rpartition(" ")
        subparsers = sub
        if group:
            if group not in groups:
                group_parser = sub.add_parser(group, help=GROUPS[group])
                groups[group] = group_parser.add_subparsers(
                    dest=f"{group}_command", required=True, metavar="ACTION"
                )
            subparsers = groups[group]
        command_parser = subparsers.add_parser(action, help=command.help)
        for flags, settings in command.options:
            command_parser.add_argument(*flags, **settings)
        command_parser.set_defaults(func=_lazy(command.target))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from services.common.config import get_settings
    from services.common.logging import configure_logging

    try:
        settings = get_settings()
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(part) for part in error['loc'])}: {error['msg']}"
            for error in exc.errors()
        )
        print(f"pricecast: invalid settings: {errors}", file=sys.stderr)
        return 2
    configure_logging(args.log_level or settings.log_level, json=settings.log_json)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
