"""``sources.exchange_streams``: each configured venue's WebSocket answers its handshake."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
from websockets.http11 import Request, Response
from websockets.sync.server import Server, ServerConnection, serve

from services.common import infra
from services.common.config import Settings
from services.doctor.checks.exchange import exchange_streams
from services.doctor.model import Context

KEY = "doctor-key"


def _refuse_wrong_token(conn: ServerConnection, request: Request) -> Response | None:
    if "token=" in request.path and f"token={KEY}" not in request.path:
        return conn.respond(HTTPStatus.UNAUTHORIZED, "invalid token\n")
    return None


def _until_closed(ws: ServerConnection) -> None:
    ws.close()  # the check only needs the handshake


@pytest.fixture
def venue() -> Iterator[int]:
    server: Server = serve(_until_closed, "127.0.0.1", 0, process_request=_refuse_wrong_token)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.socket.getsockname()[1])
    server.shutdown()
    thread.join(5)


def _check(settings: Settings, **update: object) -> tuple[str, str, str, dict[str, object]]:
    f = exchange_streams(Context(settings.model_copy(update=update)))
    return f.status, f.evidence, f.fix, f.data


def test_no_stream_configured_is_ok(settings: Settings) -> None:
    status, evidence, _, _ = _check(settings, ingest_sources="synthetic")
    assert status == "ok" and "no exchange stream" in evidence


def test_reachable_venue_ok_and_refused_port_fails(settings: Settings, venue: int) -> None:
    status, evidence, _, data = _check(
        settings, ingest_sources="binance", binance_ws_url=f"ws://127.0.0.1:{venue}"
    )
    assert status == "ok", evidence
    assert data == {"binance": "ok"}
    status, evidence, fix, data = _check(
        settings,
        ingest_sources="synthetic,kraken",
        kraken_ws_url=f"ws://127.0.0.1:{infra.free_port()}/v2",
    )
    assert status == "fail" and data == {"kraken": "unreachable"}
    assert "PRICECAST_KRAKEN_WS_URL" in fix


def test_finnhub_key_refused_names_the_key_file_never_the_key(
    settings: Settings, venue: int, tmp_path: Path
) -> None:
    key = tmp_path / "finnhub.key"
    key.write_text("wrong-key\n")
    status, evidence, fix, data = _check(
        settings,
        ingest_sources="finnhub",
        finnhub_ws_url=f"ws://127.0.0.1:{venue}",
        finnhub_api_key_file=key,
    )
    assert status == "fail" and data == {"finnhub": "refused"}
    assert "HTTP 401" in evidence and "token=***" in evidence
    assert "wrong-key" not in evidence + fix
    assert "PRICECAST_FINNHUB_API_KEY_FILE" in fix
