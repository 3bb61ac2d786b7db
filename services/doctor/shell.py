"""``make db-shell`` / ``make redis-cli``: the interactive clients on the configured URLs.

Passwords travel in the client's environment (PGPASSWORD, REDISCLI_AUTH), never on its
command line where ``ps`` would show them.
"""

from __future__ import annotations

import os
import shutil
from urllib.parse import unquote, urlparse

from sqlalchemy.engine import make_url

from services.common.config import Settings


def psql_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    parsed = make_url(settings.database_url)
    argv = ["psql", "-h", parsed.host or "127.0.0.1", "-p", str(parsed.port or 5432)]
    argv += ["-U", parsed.username or "postgres", "-d", parsed.database or "postgres"]
    env = {"PGAPPNAME": "pricecast-db-shell"}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return argv, env


def redis_cli_command(settings: Settings) -> tuple[list[str], dict[str, str]]:
    parsed = urlparse(settings.redis_url)
    argv = ["redis-cli", "-h", parsed.hostname or "127.0.0.1", "-p", str(parsed.port or 6379)]
    db = (parsed.path or "/0").lstrip("/") or "0"
    argv += ["-n", db]
    if parsed.scheme == "rediss":
        argv.append("--tls")
    if parsed.username:
        argv += ["--user", unquote(parsed.username)]
    env: dict[str, str] = {}
    if parsed.password:
        env["REDISCLI_AUTH"] = unquote(parsed.password)
    return argv, env


def exec_shell(settings: Settings, which: str) -> int:
    argv, env = psql_command(settings) if which == "db" else redis_cli_command(settings)
    binary = shutil.which(argv[0])
    if binary is None:
        print(f"{argv[0]} is not installed (apt-get install postgresql-client / redis-tools)")
        return 127
    os.execvpe(binary, argv, {**os.environ, **env})  # noqa: S606 - replaces this process
    return 0  # pragma: no cover - exec does not return
