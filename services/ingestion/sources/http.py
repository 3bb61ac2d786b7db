"""Polling an HTTP price API safely: budget, circuit breaker, retries, error accounting.

Each request: wait for the request budget, ask the breaker, send. A failed attempt (timeout,
connection error, HTTP 5xx, HTTP 429) is retried by tenacity with exponential backoff and
jitter; a 429 waits at least its ``Retry-After`` (and no request at all goes out before that
moment, even on the next poll). Timeouts are counted and logged as ERR_EXT_001, quota
refusals as ERR_EXT_003. An open breaker fails the poll at once, with no network call.

A tick is offered to the publisher only if it is newer than the last one published for its
symbol, so polling an unchanged upstream (or retrying) never publishes a tick twice.
URLs are logged without their query string (API keys travel there sometimes).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from abc import abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from services.common.errors import IngestError
from services.common.metrics import UPSTREAM_ERRORS
from services.ingestion.sources.base import RawTick, Source
from services.ingestion.sources.resilience import CircuitBreaker, CircuitOpenError, RequestBudget
from services.ingestion.validation import ValidationFailed, parse_ts

log = logging.getLogger(__name__)

ERR_TIMEOUT = "ERR_EXT_001"
ERR_QUOTA = "ERR_EXT_003"


@dataclass(frozen=True)
class HttpPolicy:
    interval_s: float = 30.0
    timeout_s: float = 10.0
    requests_per_minute: float = 30.0
    max_attempts: int = 4
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = 120.0
    breaker_failures: int = 5
    breaker_recovery_s: float = 60.0


class UpstreamError(IngestError):
    """A failed attempt worth retrying."""

    def __init__(self, code: str, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after_s = retry_after_s


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def field_at(document: Any, path: str) -> Any:
    """``a.b.0.c`` into nested objects and lists; None when absent."""
    node = document
    for part in path.split(".") if path else []:
        if isinstance(node, dict):
            node = node.get(part)
        elif (
            isinstance(node, list)
            and part.lstrip("-").isdigit()
            and -len(node) <= int(part) < len(node)
        ):
            node = node[int(part)]
        else:
            return None
    return node


def safe_url(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


class HttpSource(Source):
    """Base of the HTTP adapters: ``requests()`` to make, ``parse()`` each answer."""

    def __init__(
        self,
        name: str,
        policy: HttpPolicy,
        client: httpx.AsyncClient | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self.interval_s = policy.interval_s
        self.client = client or httpx.AsyncClient(
            timeout=policy.timeout_s, headers=headers or {}, follow_redirects=True
        )
        self.breaker = CircuitBreaker(name, policy.breaker_failures, policy.breaker_recovery_s)
        self.budget = RequestBudget(policy.requests_per_minute)
        self.not_before = 0.0  # monotonic: no request before (Retry-After)
        self.last_published: dict[str, datetime] = {}
        self.requests_sent = 0
        self.errors: dict[str, int] = {}

    @abstractmethod
    def requests(self) -> list[str]:
        """URLs to fetch this poll."""

    @abstractmethod
    def parse(self, url: str, document: Any) -> list[RawTick]:
        """Raw ticks from one decoded answer."""

    # --- one request, with retries ----------------------------------------------------------
    def _count(self, code: str, message: str) -> None:
        self.errors[code] = self.errors.get(code, 0) + 1
        UPSTREAM_ERRORS.labels(self.name, code).inc()
        log.warning("%s %s: %s", self.name, code, message)

    async def _attempt(self, url: str) -> Any:
        wait = self.not_before - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        await self.budget.take()
        self.breaker.before_call()
        self.requests_sent += 1
        try:
            response = await self.client.get(url)
        except httpx.TimeoutException as exc:
            self.breaker.failure()
            self._count(ERR_TIMEOUT, f"timeout after {self.policy.timeout_s}s on {safe_url(url)}")
            raise UpstreamError(ERR_TIMEOUT, "upstream timeout") from exc
        except httpx.TransportError as exc:
            self.breaker.failure()
            self._count("upstream_unreachable", f"{type(exc).__name__} on {safe_url(url)}")
            raise UpstreamError("upstream_unreachable", str(exc)) from exc
        if response.status_code == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            delay = retry_after if retry_after is not None else self.policy.backoff_initial_s
            self.not_before = max(self.not_before, time.monotonic() + delay)
            self._count(ERR_QUOTA, f"quota exceeded on {safe_url(url)}; Retry-After {delay:.1f}s")
            if self.breaker.trial_in_flight:
                self.breaker.success()  # it answers: quota is not an outage
            raise UpstreamError(ERR_QUOTA, "quota exceeded", retry_after)
        if response.status_code >= 500:
            self.breaker.failure()
            self._count("upstream_5xx", f"HTTP {response.status_code} on {safe_url(url)}")
            raise UpstreamError("upstream_5xx", f"HTTP {response.status_code}")
        if response.status_code >= 400:
            self.breaker.success()  # the upstream answers; the request is wrong: do not retry
            self._count("upstream_4xx", f"HTTP {response.status_code} on {safe_url(url)}")
            return None
        self.breaker.success()
        try:
            return response.json()
        except ValueError:
            self._count("bad_response", f"non-JSON answer from {safe_url(url)}")
            return None

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = wait_exponential_jitter(
            initial=self.policy.backoff_initial_s, max=self.policy.backoff_max_s
        )(state)
        if isinstance(exc, UpstreamError) and exc.retry_after_s is not None:
            return max(exc.retry_after_s, 0.0)
        return float(backoff)

    def _stop(self, state: RetryCallState) -> bool:
        if stop_after_attempt(self.policy.max_attempts)(state):
            return True
        exc = state.outcome.exception() if state.outcome else None
        if (
            isinstance(exc, UpstreamError)
            and (exc.retry_after_s or 0) > self.policy.max_retry_after_s
        ):
            return True  # honour it across polls (not_before) rather than block here
        return self.breaker.state == "open"

    async def get_json(self, url: str) -> Any:
        """One logical request; raises UpstreamError or CircuitOpenError when it gave up."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type(UpstreamError),
            wait=self._wait,
            stop=self._stop,
            reraise=True,
        ):
            with attempt:
                return await self._attempt(url)
        return None  # pragma: no cover - AsyncRetrying either returns or raises

    # --- Source ----------------------------------------------------------------------------
    async def fetch(self) -> list[RawTick]:
        out: list[RawTick] = []
        for url in self.requests():
            try:
                document = await self.get_json(url)
            except CircuitOpenError as exc:
                log.info("%s: %s; skipping this poll", self.name, exc)
                break
            except UpstreamError as exc:
                log.warning("%s gave up on %s this poll: %s", self.name, safe_url(url), exc)
                continue
            if document is None:
                continue
            try:
                ticks = self.parse(url, document)
            except (ValueError, TypeError, KeyError) as exc:
                self._count("bad_response", f"unexpected shape from {safe_url(url)}: {exc}")
                continue
            out.extend(tick for tick in ticks if self._is_new(tick))
        return out

    def _is_new(self, tick: RawTick) -> bool:
        symbol = tick.get("symbol")
        if not isinstance(symbol, str):
            return True  # let validation reject it
        try:
            ts = parse_ts(tick.get("ts"))
        except ValidationFailed:
            return True
        last = self.last_published.get(symbol)
        return last is None or ts > last

    def published(self, ticks: list[RawTick]) -> None:
        for tick in ticks:
            try:
                ts = parse_ts(tick.get("ts"))
            except ValidationFailed:
                continue
            symbol = str(tick.get("symbol"))
            if symbol not in self.last_published or ts > self.last_published[symbol]:
                self.last_published[symbol] = ts

    async def close(self) -> None:
        await self.client.aclose()
