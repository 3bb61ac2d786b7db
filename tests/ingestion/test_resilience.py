from __future__ import annotations

import pytest

from services.ingestion.sources.resilience import CircuitBreaker, CircuitOpenError, RequestBudget


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_and_half_opens_after_recovery() -> None:
    clock = Clock()
    breaker = CircuitBreaker("t-breaker", failure_threshold=3, recovery_s=10, clock=clock)
    for _ in range(2):
        breaker.before_call()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.failure()
    assert breaker.state == "open" and breaker.times_opened == 1
    with pytest.raises(CircuitOpenError):
        breaker.before_call()
    clock.now += 10
    assert breaker.state == "half_open"
    breaker.before_call()  # the one trial
    with pytest.raises(CircuitOpenError):
        breaker.before_call()  # no second caller while the trial runs
    breaker.failure()  # trial failed: open again, timer restarted
    assert breaker.state == "open"
    clock.now += 9.9
    assert breaker.state == "open"
    clock.now += 0.1
    breaker.before_call()
    breaker.success()
    assert breaker.state == "closed" and breaker.times_closed == 1 and breaker.failures == 0


def test_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker("t-reset", failure_threshold=2, recovery_s=1, clock=Clock())
    breaker.failure()
    breaker.success()
    breaker.failure()
    assert breaker.state == "closed"


def test_budget_allows_a_burst_then_refills_at_the_rate() -> None:
    clock = Clock()
    budget = RequestBudget(per_minute=6, clock=clock)  # one per 10 s, burst 6
    assert all(budget.try_take() for _ in range(6))
    assert not budget.try_take()
    assert budget.wait_s() == pytest.approx(10.0)
    clock.now += 5
    assert not budget.try_take()
    clock.now += 5
    assert budget.try_take()
