"""``pricecast api``: uvicorn serving the app factory (uvloop + httptools when installed)."""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any

import uvicorn

from services.common.config import Settings, get_settings

log = logging.getLogger(__name__)


def websocket_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options for the live streams (also bench/stream_fanout's): protocol pings find
    dead peers; client messages are small; no permessage-deflate (its zlib state costs ~300 kB
    per connection, messages are small)."""
    return {
        "ws_per_message_deflate": False,
        "ws_ping_interval": settings.stream_heartbeat_s,
        "ws_ping_timeout": settings.stream_heartbeat_s,
        "ws_max_size": settings.stream_max_message_bytes,
    }


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if not settings.jwt_keys_configured and not settings.is_production:
        # One development key pair for every worker process (they read the environment).
        from services.api.core.keys import ensure_dev_keys

        private, public = ensure_dev_keys(settings.state_dir)
        os.environ["PRICECAST_JWT_PRIVATE_KEY_FILE"] = str(private.resolve())
        os.environ["PRICECAST_JWT_PUBLIC_KEYS_DIR"] = str(public.resolve())
    host = getattr(args, "host", None) or settings.api_host
    port = getattr(args, "port", None) or settings.api_port
    workers = getattr(args, "workers", None) or settings.api_workers
    log.info("API listening on http://%s:%s (%d worker(s))", host, port, workers)
    uvicorn.run(
        "services.api.main:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=settings.log_level.lower(),
        access_log=False,
        proxy_headers=True,
        server_header=False,
        timeout_graceful_shutdown=10,
        **websocket_options(settings),
    )
    return 0
