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
    """A subcommand: its help line, the ``module:function`` that runs it, its options."""

    name: str
    help: str
    target: str
    options: tuple[Option, ...] = ()


@dataclass(frozen=True)
class Group:
    """A subcommand with actions of its own (``pricecast clients create``)."""

    name: str
    help: str
    dest: str
    actions: tuple[Command, ...]


INTERVAL = _opt("--interval", default="1d", choices=("1h", "1d"))
DEFAULT_SCOPES = "prices:read predictions:read models:read"

BACKFILL_OPTIONS = (
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
    _opt("--no-wait", action="store_true", help="exit once published (do not wait for the writer)"),
    _opt("--wait-timeout", type=float, default=600.0, help="seconds to wait for storage"),
)

WATCH_OPTIONS = (
    _opt("symbol"),
    INTERVAL,
    _opt("--url", default=None, help="ws(s)://host/api/v1/stream (default: the API)"),
    _opt("--token-file", default=None, help="access token (default: the demo token)"),
    _opt("--json", action="store_true", help="one JSON record per line"),
    _opt("--count", type=int, default=None, help="exit after N predictions"),
)

DOCTOR_OPTIONS = (
    _opt("--json", action="store_true", help="machine-readable output"),
    _opt(
        "--only",
        action="append",
        metavar="CHECKS",
        help="comma list of checks, prefixes (kafka) or globs (*.reachable); repeatable",
    ),
    _opt("--show", choices=("topics", "lag"), help="print Kafka topics or group lag"),
    _opt("--shell", choices=("db", "redis"), help="open psql / redis-cli on the config"),
)

# In the order ``pricecast --help`` lists them.
COMMANDS: tuple[Command | Group, ...] = (
    Command(
        "run",
        "whole stack in the foreground (infra, migrate, demo, services)",
        "services.runner:main",
        (
            _opt("--no-demo", action="store_true", help="do not load demo history"),
            _opt("--port", type=int, default=None, help="API port (default 8000)"),
        ),
    ),
    Command(
        "api",
        "the REST API service",
        "services.api.server:main",
        (
            _opt("--host", default=None),
            _opt("--port", type=int, default=None),
            _opt("--workers", type=int, default=None),
        ),
    ),
    Command(
        "ingest",
        "the ingestion service (sources -> Kafka -> writer)",
        "services.ingestion.service:main",
        (
            _opt(
                "--role",
                choices=("all", "sources", "writer"),
                default="all",
                help="run the price sources, the writer, or both",
            ),
        ),
    ),
    Command("predict", "the prediction service", "services.prediction.service:main"),
    Command(
        "migrate",
        "alembic upgrade head",
        "services.common.commands:migrate_main",
        (_opt("--revision", default="head"),),
    ),
    Command(
        "train",
        "retraining job: train, validate, register, promote",
        "services.prediction.training:main",
        (
            _opt("--symbols", nargs="*", default=None),
            _opt("--pending", action="store_true", help="serve only queued retrain requests"),
            INTERVAL,
        ),
    ),
    Command(
        "backfill",
        "load history through the live validation path",
        "services.ingestion.backfill:main",
        BACKFILL_OPTIONS,
    ),
    Command(
        "backtest",
        "walk-forward backtest of the served model choice",
        "services.commands_ml:backtest_main",
        (
            _opt("--csv", required=True),
            _opt("--symbol", required=True),
            INTERVAL,
            _opt("--horizon", type=int, default=1),
            _opt("--test-size", type=int, default=250),
            _opt("--refit-every", type=int, default=25),
        ),
    ),
    Command(
        "token",
        "mint an access token with the configured private key",
        "services.api.commands:token_main",
        (
            _opt("--subject", required=True),
            _opt("--scopes", default=DEFAULT_SCOPES),
            _opt("--ttl", type=int, default=None, help="seconds (default: access-token TTL)"),
        ),
    ),
    Group(
        "clients",
        "API clients (client credentials)",
        "clients_command",
        (
            Command(
                "create",
                "create an API client and print its id and secret",
                "services.api.commands:clients_create_main",
                (
                    _opt("--name", required=True),
                    _opt("--scopes", default=DEFAULT_SCOPES),
                    _opt("--client-id", default=None),
                ),
            ),
        ),
    ),
    Group(
        "models",
        "model registry operations",
        "models_command",
        (
            Command(
                "rollback",
                "restore the previous champion",
                "services.prediction.training:rollback_main",
                (_opt("--symbol", required=True), _opt("--model", default="lstm"), INTERVAL),
            ),
        ),
    ),
    Group(
        "storage",
        "time-series storage upkeep",
        "storage_command",
        (
            Command(
                "maintain",
                "one round: tick retention, storage status as JSON",
                "services.storage.maintenance:main",
            ),
        ),
    ),
    Command(
        "watch",
        "print a symbol's predictions as they arrive (live stream)",
        "services.api.stream.watch:main",
        WATCH_OPTIONS,
    ),
    Command(
        "doctor",
        "check every dependency and known failure mode",
        "services.doctor:main",
        DOCTOR_OPTIONS,
    ),
)


def _add_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: Command
) -> None:
    parser = subparsers.add_parser(command.name, help=command.help)
    for flags, settings in command.options:
        parser.add_argument(*flags, **settings)
    parser.set_defaults(func=_lazy(command.target))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pricecast", description="Pricecast asset-price forecasts"
    )
    parser.add_argument("--log-level", default=None, help="override PRICECAST_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for entry in COMMANDS:
        if isinstance(entry, Command):
            _add_command(sub, entry)
            continue
        group = sub.add_parser(entry.name, help=entry.help)
        actions = group.add_subparsers(dest=entry.dest, required=True, metavar="ACTION")
        for action in entry.actions:
            _add_command(actions, action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from services.common.config import get_settings
    from services.common.logging import configure_logging

    try:
        settings = get_settings()
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
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
