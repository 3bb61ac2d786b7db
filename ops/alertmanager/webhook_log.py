"""The default webhook receiver: prints every Alertmanager notification as one JSON line.

Standard library only, so it runs from any Python 3.11 image (docker/compose.yaml runs it in
the Pricecast image as the ``alert-webhook`` service: ``docker compose logs alert-webhook``).
Point the receivers of ops/alertmanager/alertmanager.yml at your incident tool instead once
you have one. The end-to-end alert test uses it as its receiver.

    python ops/alertmanager/webhook_log.py --host 127.0.0.1 --port 0

Prints ``listening on HOST:PORT`` first; then, per notification, ``{"received_at": ...,
"receiver", "status", "groupKey", "groupLabels", "alerts": [{"status", "labels",
"startsAt", "endsAt"}]}``. ``GET /health`` answers 200 (a container health check).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 1 << 20  # Alertmanager caps a notification with max_alerts; 1 MiB is plenty


def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """The parts of a notification an operator reads (Alertmanager's webhook format v4)."""
    return {
        "received_at": round(time.time(), 3),
        "receiver": payload.get("receiver"),
        "status": payload.get("status"),
        "groupKey": payload.get("groupKey"),
        "groupLabels": payload.get("groupLabels", {}),
        "alerts": [
            {
                "status": a.get("status"),
                "labels": a.get("labels", {}),
                "summary": a.get("annotations", {}).get("summary", ""),
                "startsAt": a.get("startsAt"),
                "endsAt": a.get("endsAt"),
            }
            for a in payload.get("alerts", [])
        ],
    }


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self._answer(200 if self.path == "/health" else 404)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if not 0 < length <= MAX_BODY:
            self._answer(413 if length else 400)
            return
        try:
            payload = json.loads(self.rfile.read(length))
        except ValueError:
            self._answer(400)
            return
        if not isinstance(payload, dict):
            self._answer(400)
            return
        sys.stdout.write(json.dumps(summarize(payload), sort_keys=True) + "\n")
        sys.stdout.flush()
        self._answer(200)

    def _answer(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one JSON line per notification on stdout is the whole output


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM stops it like Ctrl-C (as PID 1 it would be ignored)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    host, port = server.server_address[:2]
    print(f"listening on {host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
