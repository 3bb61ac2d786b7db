"""The live stream answers: a WebSocket to the API authenticates and gets a snapshot."""

from __future__ import annotations

import time

import orjson

from services.doctor.model import CheckSpec, Context, Finding, describe


def stream_url(ctx: Context) -> str:
    settings = ctx.settings
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::") else settings.api_host  # noqa: S104
    return f"ws://{host}:{settings.api_port}/api/v1/stream"


def _probe_token(ctx: Context) -> str | None:
    """A one-minute token from the configured signing key, else the demo token."""
    from services.api.core.security import TokenService

    keyset = getattr(ctx, "keyset", None)
    if keyset is not None and keyset.signing_key is not None:
        token, _ = TokenService(keyset, ctx.settings).mint("doctor", ["prices:read"], ttl_s=60)
        return str(token)
    path = ctx.settings.state_dir / "demo-token"
    return path.read_text().strip() if path.exists() else None


def answers(ctx: Context) -> Finding:
    """Connect, authenticate (header), subscribe to one tick channel, wait for the snapshot."""
    from websockets.exceptions import ConnectionClosed, InvalidHandshake
    from websockets.sync.client import connect

    name = "stream.answers"
    url = stream_url(ctx)
    if not ctx.settings.stream_enabled:
        return Finding(name, "ok", "streams are off (PRICECAST_STREAM_ENABLED=false)")
    token = _probe_token(ctx)
    if token is None:
        return Finding(
            name,
            "skip",
            "no signing key and no demo token to authenticate a probe",
            "run where PRICECAST_JWT_PRIVATE_KEY_FILE is set, or after pricecast run",
        )
    symbol = (ctx.settings.symbols() or ["BTC-USD"])[0]
    budget = ctx.timeout_s * 0.8
    started = time.perf_counter()
    try:
        with connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            open_timeout=budget,
            close_timeout=1,
        ) as ws:
            status = orjson.loads(ws.recv(timeout=budget))
            ws.send(orjson.dumps({"type": "subscribe", "channels": [f"ticks:{symbol}"]}).decode())
            while True:
                msg = orjson.loads(ws.recv(timeout=budget))
                if msg["type"] == "snapshot":
                    break
                if msg["type"] == "error":
                    raise RuntimeError(f"server error: {msg['data']}")
    except ConnectionClosed as exc:
        code = exc.rcvd.code if exc.rcvd is not None else None
        reason = exc.rcvd.reason if exc.rcvd is not None else ""
        return Finding(
            name,
            "fail",
            f"{url} closed the stream with {code} {reason}".strip(),
            "4401: token/keys (see auth.*); 4429: connection limits "
            "(PRICECAST_STREAM_MAX_CONNECTIONS*); see docs/troubleshooting.md",
            {"close_code": code},
        )
    except ConnectionRefusedError:
        # Like runtime.ports: no API on this host is not a failure of this host.
        return Finding(
            name,
            "ok",
            f"no API listens on {url}: nothing to check here (run the doctor in the API pod)",
            data={"listening": False},
        )
    except (OSError, InvalidHandshake, TimeoutError, RuntimeError) as exc:
        return Finding(
            name,
            "fail",
            f"{url}: {describe(exc)}",
            "is the API running and reachable on PRICECAST_API_HOST/PORT? Behind an ingress: "
            "it must pass Upgrade/Connection headers (see docs/deploy.md, live streams)",
        )
    ms = (time.perf_counter() - started) * 1000
    return Finding(
        name,
        "ok",
        f"{url} answered: {status.get('data', {}).get('status')}, snapshot of ticks:{symbol} "
        f"in {ms:.0f} ms",
        data={"ms": round(ms, 1)},
    )


CHECKS = (
    CheckSpec(
        "stream.answers", answers, needs=("auth.jwt_keys",), about="live stream WebSocket answers"
    ),
)
