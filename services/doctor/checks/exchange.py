"""Exchange streams: each configured venue's WebSocket answers the opening handshake."""

from __future__ import annotations

import asyncio

from websockets.exceptions import InvalidStatus

from services.doctor.model import CheckSpec, Context, Finding, describe
from services.ingestion.sources.exchange.common import redact
from services.ingestion.sources.exchange.numbers import parse_pairs
from services.ingestion.sources.exchange.registry import VENUES, build_exchange_source
from services.ingestion.sources.exchange.wire import Connection


def _fix(kind: str, error: str) -> str:
    low = error.lower()
    if "401" in low or "403" in low:
        if kind == "finnhub":
            return (
                "the venue refused the key: check PRICECAST_FINNHUB_API_KEY_FILE (the Secret) "
                "holds a valid Finnhub API key"
            )
        return f"the venue refused the handshake: check PRICECAST_{kind.upper()}_WS_URL"
    if "429" in low:
        return "rate limited by the venue: fewer replicas or reconnects; it recovers by itself"
    if "refused" in low:
        return f"nothing listens there: fix PRICECAST_{kind.upper()}_WS_URL or the egress policy"
    if "name or service not known" in low or "resolve" in low or "nodename" in low:
        return "the venue's host does not resolve: DNS / egress from the pod"
    if "timeout" in low or "timed out" in low:
        return "no answer in time: egress firewall / NetworkPolicy towards the venue"
    if "certificate" in low or "ssl" in low:
        return "TLS failed: a proxy intercepting TLS, or the venue's certificate chain"
    return f"see the ingestion log for {kind}; docs/troubleshooting.md, 'connection fails'"


async def _handshake(url: str, timeout_s: float) -> None:
    async with Connection(url, open_timeout_s=timeout_s):
        pass


def exchange_streams(ctx: Context) -> Finding:
    name = "sources.exchange_streams"
    settings = ctx.settings
    kinds = [kind for kind in settings.ingest_sources if kind in VENUES]
    if not kinds:
        return Finding(name, "ok", "no exchange stream configured (PRICECAST_INGEST_SOURCES)")
    problems, fixes, parts = [], [], []
    data: dict[str, str] = {}
    for kind in kinds:
        try:
            parse_pairs(getattr(settings, f"{kind}_symbols"), kind)
            source = build_exchange_source(settings, kind)
            url = source.ws_url()
        except (ValueError, OSError) as exc:
            problems.append(f"{kind}: {describe(exc)}")
            fixes.append(f"fix PRICECAST_{kind.upper()}_* ({exc})")
            data[kind] = "misconfigured"
            continue
        try:
            asyncio.run(_handshake(url, min(ctx.timeout_s * 0.7, 5.0)))
        except InvalidStatus as exc:
            error = f"HTTP {exc.response.status_code}"
            problems.append(f"{kind} {redact(url)}: handshake refused ({error})")
            fixes.append(_fix(kind, error))
            data[kind] = "refused"
            continue
        except Exception as exc:  # noqa: BLE001 - the error is the evidence
            error = describe(exc)
            problems.append(f"{kind} {redact(url)}: {error}")
            fixes.append(_fix(kind, error))
            data[kind] = "unreachable"
            continue
        parts.append(f"{kind} {redact(url)} answered the handshake")
        data[kind] = "ok"
    if problems:
        return Finding(name, "fail", "; ".join(problems + parts), "; ".join(fixes), data)
    return Finding(name, "ok", "; ".join(parts), data=data)


CHECKS = (
    CheckSpec(
        "sources.exchange_streams",
        exchange_streams,
        about="each configured venue's WebSocket answers (URL, egress, key)",
    ),
)
