"""Single-flight: one call per key in flight, owned by the table, surviving its callers' cancellation."""

from __future__ import annotations

import asyncio

import pytest

from service.caching.singleflight import SingleFlight


class Call:
    """A call that counts how often it ran and finishes when released."""

    def __init__(self) -> None:
        self.count = 0
        self.release = asyncio.Event()
        self.error: Exception | None = None

    async def __call__(self) -> str:
        self.count += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return f"result-{self.count}"


async def test_concurrent_callers_share_one_call() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    call = Call()
    waiters = [asyncio.create_task(flights.do("k", call)) for _ in range(100)]
    await asyncio.sleep(0)
    call.release.set()
    results = await asyncio.gather(*waiters)
    assert call.count == 1
    assert {value for value, _ in results} == {"result-1"}
    assert [joined for _, joined in results].count(False) == 1
    assert len(flights) == 0


async def test_different_keys_do_not_share() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    call = Call()
    call.release.set()
    await asyncio.gather(flights.do("a", call), flights.do("b", call))
    assert call.count == 2


async def test_error_reaches_every_waiter_and_next_call_retries() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    call = Call()
    call.error = RuntimeError("model down")
    waiters = [asyncio.create_task(flights.do("k", call)) for _ in range(10)]
    await asyncio.sleep(0)
    call.release.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    call.error = None
    assert await flights.do("k", call) == ("result-2", False)


@pytest.mark.parametrize("cancelled", ["leader", "follower", "everyone"])
async def test_cancelled_callers_never_cancel_the_call(cancelled: str) -> None:
    """The call belongs to the table: whoever leaves, it completes and the rest get its result."""
    flights: SingleFlight[str, str] = SingleFlight()
    call = Call()
    leader = asyncio.create_task(flights.do("k", call))
    await asyncio.sleep(0)
    follower = asyncio.create_task(flights.do("k", call))
    await asyncio.sleep(0)
    leaving = {"leader": [leader], "follower": [follower], "everyone": [leader, follower]}[cancelled]
    for task in leaving:
        task.cancel()
    await asyncio.sleep(0)
    assert "k" in flights
    call.release.set()
    for task in (leader, follower):
        if task in leaving:
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            assert (await task)[0] == "result-1"
    # The call ran to completion even if nobody waited, and then left the table.
    await asyncio.sleep(0.01)
    assert call.count == 1
    assert len(flights) == 0


async def test_error_with_no_waiter_left_is_not_reported_as_unretrieved() -> None:
    flights: SingleFlight[str, str] = SingleFlight()
    call = Call()
    call.error = RuntimeError("boom")
    waiter = asyncio.create_task(flights.do("k", call))
    await asyncio.sleep(0)
    waiter.cancel()
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    call.release.set()
    await asyncio.sleep(0.01)
    import gc

    gc.collect()
    await asyncio.sleep(0)
    assert reported == []
    assert len(flights) == 0


async def test_a_detached_call_keeps_its_callers_and_takes_no_new_ones() -> None:
    """What an invalidation does to a call in flight: its callers get its answer, a caller after the
    invalidation starts a call of its own, and shutdown still cancels both."""
    flights: SingleFlight[str, str] = SingleFlight()
    old, new = Call(), Call()
    before = asyncio.create_task(flights.do("k", old))
    await asyncio.sleep(0)
    flights.detach("k")
    after = asyncio.create_task(flights.do("k", new))
    await asyncio.sleep(0.01)
    assert (old.count, new.count) == (1, 1)
    old.release.set()
    assert await before == ("result-1", False)
    new.release.set()
    assert await after == ("result-1", False)
    hanging = Call()
    stuck = asyncio.create_task(flights.do("k", hanging))
    await asyncio.sleep(0.01)
    flights.detach()
    await flights.close()
    with pytest.raises(asyncio.CancelledError):
        await stuck
