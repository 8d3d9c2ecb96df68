"""The circuit breaker: opens after failures, lets one probe through per cool-down, closes on success."""

from __future__ import annotations

from service.redis.breaker import CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_opens_after_threshold_and_refuses_until_cooldown() -> None:
    clock = Clock()
    breaker = CircuitBreaker(cooldown_s=1.0, failure_threshold=3, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.is_closed
    breaker.record_failure()
    assert not breaker.is_closed
    assert not breaker.allow()
    clock.now += 0.99
    assert not breaker.allow()


def test_one_probe_per_cooldown() -> None:
    """After the cool-down exactly one caller probes; the rest are refused until it reports."""
    clock = Clock()
    breaker = CircuitBreaker(cooldown_s=1.0, failure_threshold=1, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    allowed = [breaker.allow() for _ in range(1000)]
    assert allowed.count(True) == 1
    breaker.record_failure()  # the probe failed: another full cool-down
    assert not breaker.allow()
    clock.now += 1.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.is_closed
    assert all(breaker.allow() for _ in range(10))
    assert breaker.times_opened == 1


def test_success_resets_the_failure_count() -> None:
    breaker = CircuitBreaker(cooldown_s=1.0, failure_threshold=2, clock=Clock())
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.is_closed


def test_a_cancelled_probe_hands_its_slot_back() -> None:
    """A probe whose client hung up must not leave the breaker waiting for a verdict forever."""
    clock = Clock()
    breaker = CircuitBreaker(cooldown_s=1.0, failure_threshold=1, clock=clock)
    breaker.record_failure()
    clock.now += 1.0
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release_probe()
    assert breaker.allow()


async def test_wait_closed_returns_when_a_probe_succeeds() -> None:
    import asyncio

    breaker = CircuitBreaker(cooldown_s=1.0, failure_threshold=1, clock=Clock())
    await breaker.wait_closed()  # closed: returns at once
    breaker.record_failure()
    waiter = asyncio.create_task(breaker.wait_closed())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    breaker.record_success()
    await asyncio.wait_for(waiter, 1)


def test_a_tripping_failure_opens_at_once() -> None:
    breaker = CircuitBreaker(cooldown_s=1.0, failure_threshold=3, clock=Clock())
    breaker.record_failure(trip=True)
    assert not breaker.is_closed
