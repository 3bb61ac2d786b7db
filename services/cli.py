"""The ``pricecast`` command line (docs/architecture.md, "Command line").

Each subcommand names the function that implements it as ``module:function``; modules are
imported only when their command runs, so ``pricecast --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError

Handler = Callable[[argparse.Namespace], int]


def _lazy(target: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        module, _, func = target.partition(":")
        handler: Handler = getattr(importlib.import_module(module), func)
        return int(handler(args) or 0)

    run.__qualname__ = target
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pricecast", description="Pricecast asset-price forecasts"
    )
    parser.add_argument("--log-level", default=None, help="override PRICECAST_LOG_LEVEL")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="whole stack in the foreground (infra, migrate, demo, services)")
    p.add_argument("--no-demo", action="store_true", help="do not load demo history")
    p.add_argument("--port", type=int, default=None, help="API port (default 8000)")
    p.set_defaults(func=_lazy("services.runner:main"))

    p = sub.add_parser("api", help="the REST API service")
    p.add_argument("--host", default=None)
    p.add_argument("--port", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.set_defaults(func=_lazy("services.api.server:main"))

    p = sub.add_parser("ingest", help="the ingestion service (sources -> Kafka -> writer)")
    p.add_argument(
        "--role",
        choices=("all", "sources", "writer"),
        default="all",
        help="run the price sources, the writer, or both",
    )
    p.set_defaults(func=_lazy("services.ingestion.service:main"))

    p = sub.add_parser("predict", help="the prediction service")
    p.set_defaults(func=_lazy("services.prediction.service:main"))

    p = sub.add_parser("migrate", help="alembic upgrade head")
    p.add_argument("--revision", default="head")
    p.set_defaults(func=_lazy("services.common.commands:migrate_main"))

    p = sub.add_parser("train", help="retraining job: train, validate, register, promote")
    p.add_argument("--symbols", nargs="*", default=None)
    p.add_argument("--pending", action="store_true", help="serve only queued retrain requests")
    p.add_argument("--interval", default="1d", choices=("1h", "1d"))
    p.set_defaults(func=_lazy("services.prediction.training:main"))

    p = sub.add_parser("backfill", help="load history through the live validation path")
    p.add_argument("--csv", default=None, help="CSV file with date/time and close columns")
    p.add_argument("--symbol", default=None)
    p.add_argument("--synthetic", action="store_true", help="generate synthetic history")
    p.add_argument("--symbols", nargs="*", default=None)
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--step-minutes", type=int, default=60, help="synthetic tick spacing")
    p.add_argument("--venue", default=None, help="binance|coinbase|kraken|finnhub: REST trades")
    p.add_argument("--pair", default=None, help="with --venue: venue-symbol:SYMBOL")
    p.add_argument("--since", default=None, help="with --venue: start (ISO 8601, UTC)")
    p.add_argument("--until", default=None, help="with --venue: end (ISO 8601; default now)")
    p.add_argument("--with-writer", action="store_true", help="store it with an in-process writer")
    p.add_argument(
        "--no-wait", action="store_true", help="exit once published (do not wait for the writer)"
    )
    p.add_argument("--wait-timeout", type=float, default=600.0, help="seconds to wait for storage")
    p.set_defaults(func=_lazy("services.ingestion.backfill:main"))

    p = sub.add_parser("backtest", help="walk-forward backtest of the served model choice")
    p.add_argument("--csv", required=True)
    p.add_argument("--symbol", required=True)
    p.add_argument("--interval", default="1d", choices=("1h", "1d"))
    p.add_argument("--horizon", type=int, default=1)
    p.add_argument("--test-size", type=int, default=250)
    p.add_argument("--refit-every", type=int, default=25)
    p.set_defaults(func=_lazy("services.commands_ml:backtest_main"))

    p = sub.add_parser("token", help="mint an access token with the configured private key")
    p.add_argument("--subject", required=True)
    p.add_argument("--scopes", default="prices:read predictions:read models:read")
    p.add_argument("--ttl", type=int, default=None, help="seconds (default: access-token TTL)")
    p.set_defaults(func=_lazy("services.api.commands:token_main"))

    clients = sub.add_parser("clients", help="API clients (client credentials)")
    csub = clients.add_subparsers(dest="clients_command", required=True, metavar="ACTION")
    p = csub.add_parser("create", help="create an API client and print its id and secret")
    p.add_argument("--name", required=True)
    p.add_argument("--scopes", default="prices:read predictions:read models:read")
    p.add_argument("--client-id", default=None)
    p.set_defaults(func=_lazy("services.api.commands:clients_create_main"))

    models = sub.add_parser("models", help="model registry operations")
    msub = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    p = msub.add_parser("rollback", help="restore the previous champion")
    p.add_argument("--symbol", required=True)
    p.add_argument("--model", default="lstm")
    p.add_argument("--interval", default="1d", choices=("1h", "1d"))
    p.set_defaults(func=_lazy("services.prediction.training:rollback_main"))

    storage = sub.add_parser("storage", help="time-series storage upkeep")
    ssub = storage.add_subparsers(dest="storage_command", required=True, metavar="ACTION")
    p = ssub.add_parser("maintain", help="one round: tick retention, storage status as JSON")
    p.set_defaults(func=_lazy("services.storage.maintenance:main"))

    p = sub.add_parser("watch", help="print a symbol's predictions as they arrive (live stream)")
    p.add_argument("symbol")
    p.add_argument("--interval", default="1d", choices=("1h", "1d"))
    p.add_argument("--url", default=None, help="ws(s)://host/api/v1/stream (default: the API)")
    p.add_argument("--token-file", default=None, help="access token (default: the demo token)")
    p.add_argument("--json", action="store_true", help="one JSON record per line")
    p.add_argument("--count", type=int, default=None, help="exit after N predictions")
    p.set_defaults(func=_lazy("services.api.stream.watch:main"))

    p = sub.add_parser("doctor", help="check every dependency and known failure mode")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--only",
        action="append",
        metavar="CHECKS",
        help="comma list of checks, prefixes (kafka) or globs (*.reachable); repeatable",
    )
    p.add_argument("--show", choices=("topics", "lag"), help="print Kafka topics or group lag")
    p.add_argument("--shell", choices=("db", "redis"), help="open psql / redis-cli on the config")
    p.set_defaults(func=_lazy("services.doctor:main"))
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
