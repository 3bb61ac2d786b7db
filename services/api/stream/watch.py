"""``pricecast watch SYMBOL [--interval 1h]``: print predictions as they arrive.

A client of ``/api/v1/stream`` (python-websockets): the token goes in the ``Authorization``
header, never in the URL. It reconnects with exponential backoff and jitter when the
connection drops or the server closes with 1001 (restart), 4408 (too slow) or 4429 (limits);
4401 re-reads the token file once (a renewed token reconnects) and otherwise ends, as does 4403.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import orjson
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from services.api.stream.protocol import CLOSE_AUTH, CLOSE_SCOPE
from services.common.config import Settings, get_settings
from services.common.errors import StreamError

FATAL = {CLOSE_SCOPE: "the token lacks the scope predictions:read"}
MAX_BACKOFF_S = 30.0


class WatchError(StreamError):
    """The watch cannot go on (bad token, scope); the message says why."""


def default_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host  # noqa: S104
    return f"ws://{host}:{settings.api_port}/api/v1/stream"


def read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise WatchError(f"cannot read the token file {path}: {exc}") from None
    if not token:
        raise WatchError(f"the token file {path} is empty")
    return token


def describe(record: dict[str, Any]) -> str:
    fallback = f" (fallback: {record['fallback_reason']})" if record.get("fallback_reason") else ""
    return (
        f"{record['generated_at']} {record['symbol']} {record['interval']} "
        f"h={record['horizon']} target {record['target_time']}: "
        f"{record['predicted_price']:.6g} [{record['lower_bound']:.6g}, "
        f"{record['upper_bound']:.6g}] {record['model']} {record['model_version']}{fallback}"
    )


@dataclass(eq=False)
class Watcher:
    url: str
    token_file: Path
    channel: str
    _: KW_ONLY
    as_json: bool = False
    count: int | None = None
    out: TextIO = sys.stdout
    sleep: Callable[[float], Any] = asyncio.sleep
    printed: int = field(default=0, init=False)
    reconnects: int = field(default=0, init=False)

    def _print(self, record: dict[str, Any]) -> None:
        line = orjson.dumps(record).decode() if self.as_json else describe(record)
        print(line, file=self.out, flush=True)
        self.printed += 1

    def done(self) -> bool:
        return self.count is not None and self.printed >= self.count

    async def run(self) -> None:
        token = read_token(self.token_file)
        delay = 0.5
        while not self.done():
            try:
                if await self._session(token):
                    delay = 0.5  # it delivered something: start the backoff anew
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code in FATAL:
                    raise WatchError(FATAL[code]) from None
                if code == CLOSE_AUTH:
                    fresh = read_token(self.token_file)
                    if fresh == token:
                        reason = (exc.rcvd.reason if exc.rcvd else "") or "invalid or expired"
                        raise WatchError(f"token refused ({reason})") from None
                    token = fresh
                    continue
            except InvalidStatus as exc:
                if exc.response.status_code in (401, 403):
                    raise WatchError(f"HTTP {exc.response.status_code} on upgrade") from None
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                print(f"watch: cannot connect ({exc}); retrying", file=sys.stderr)
            if self.done():
                return
            self.reconnects += 1
            await self.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, MAX_BACKOFF_S)

    async def _session(self, token: str) -> bool:
        """One connection until it closes; True when it printed something."""
        before = self.printed
        headers = {"Authorization": f"Bearer {token}"}
        async with connect(self.url, additional_headers=headers, open_timeout=10) as ws:
            await ws.send(orjson.dumps({"type": "subscribe", "channels": [self.channel]}))
            async for raw in ws:
                msg = orjson.loads(raw)
                if msg["type"] == "snapshot":
                    for record in msg["data"].get("predictions", []):
                        self._print(record)
                elif msg["type"] == "prediction":
                    self._print(msg["data"])
                elif msg["type"] == "error":
                    print(f"watch: server error: {msg['data']}", file=sys.stderr)
                if self.done():
                    return True
        return self.printed > before


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    token_file = Path(args.token_file) if args.token_file else settings.state_dir / "demo-token"
    channel = f"predictions:{args.symbol.upper()}:{args.interval}"
    watcher = Watcher(
        args.url or default_url(settings),
        token_file,
        channel,
        as_json=args.json,
        count=args.count,
    )
    try:
        asyncio.run(watcher.run())
    except WatchError as exc:
        print(f"pricecast watch: {exc}", file=sys.stderr)
        return 1
    return 0
