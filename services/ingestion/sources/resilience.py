"""Guards for calling upstream price APIs: a circuit breaker and a per-source request budget."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Literal

from services.common.errors import IngestError
from services.common.metrics import CIRCUIT_OPEN

State = Literal["closed", "open", "half_open"]


class CircuitOpenError(IngestError):
    """The breaker refuses calls until its recovery timeout has passed."""


class CircuitBreaker:
    """Opens after ``failure_threshold`` consecutive failures; after ``recovery_s`` lets one
    trial call through (half-open): success closes it, failure opens it again."""

    def __init__(
        self,
        name: str,
        failure_threshold: int = 5,
        recovery_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failure_threshold = failure_threshold
        self.recovery_s = recovery_s
        self.clock = clock
        self.failures = 0
        self.opened_at: float | None = None
        self.trial_in_flight = False
        self.times_opened = 0
        self.times_closed = 0
        CIRCUIT_OPEN.labels(name).set(0)

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if self.clock() - self.opened_at >= self.recovery_s:
            return "half_open"
        return "open"

    def before_call(self) -> None:
        state = self.state
        if state == "open":
            raise CircuitOpenError(f"circuit of {self.name} is open")
        if state == "half_open":
            if self.trial_in_flight:
                raise CircuitOpenError(f"circuit of {self.name} is half-open, trial in flight")
            self.trial_in_flight = True

    def success(self) -> None:
        if self.opened_at is not None:
            self.times_closed += 1
        self.failures = 0
        self.opened_at = None
        self.trial_in_flight = False
        CIRCUIT_OPEN.labels(self.name).set(0)

    def failure(self) -> None:
        self.failures += 1
        half_open = self.trial_in_flight
        self.trial_in_flight = False
        if half_open or (self.opened_at is None and self.failures >= self.failure_threshold):
            if self.opened_at is None:
                self.times_opened += 1
            self.opened_at = self.clock()
            CIRCUIT_OPEN.labels(self.name).set(1)


class RequestBudget:
    """A token bucket of ``per_minute`` requests per minute (burst up to ``per_minute``)."""

    def __init__(self, per_minute: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, per_minute)
        self.tokens = self.capacity
        self.clock = clock
        self._at = clock()

    def _refill(self) -> None:
        now = self.clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def wait_s(self) -> float:
        """Seconds until a request may go out (0 if now)."""
        self._refill()
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def try_take(self) -> bool:
        self._refill()
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    async def take(self) -> None:
        while not self.try_take():  # noqa: ASYNC110 - a timed wait, nothing to signal
            await asyncio.sleep(self.wait_s())
