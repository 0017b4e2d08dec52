"""Backoff and retried writes: what a worker does while its broker or backend is unreachable."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from celeriac._outages import is_outage
from celeriac.worker._backoff import Backoff, Persistent, sleep_unless
from celeriac.worker._batch import Batcher


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an ``async def`` test on a fresh event loop (pytest sees the wrapped signature)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def test_backoff_doubles_to_its_cap_with_full_jitter_and_resets() -> None:
    top = Backoff(base=0.1, cap=5.0, rng=lambda: 1.0)
    assert [round(top.next(), 3) for _ in range(8)] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    top.reset()
    assert top.next() == pytest.approx(0.1)
    low = Backoff(rng=lambda: 0.0)
    assert [low.next() for _ in range(3)] == [0.0, 0.0, 0.0]  # full jitter: anywhere down to zero
    real = Backoff(base=0.1, cap=5.0)
    for _ in range(1000):
        bound = real.bound()
        assert 0.0 <= real.next() <= bound <= 5.0
    assert real.bound() == 5.0  # and no overflow after many failures


@in_loop
async def test_sleep_unless_wakes_when_the_event_is_set() -> None:
    event = asyncio.Event()
    assert await sleep_unless(event, 0.01) is False
    asyncio.get_running_loop().call_later(0.02, event.set)
    loop = asyncio.get_running_loop()
    began = loop.time()
    assert await sleep_unless(event, 30) is True
    assert loop.time() - began < 1


class Flaky:
    """A write that fails ``failures`` times (with ``error``, or by hanging), then succeeds."""

    def __init__(self, failures: int, error: Exception | None = None) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            if self.error is None:
                await asyncio.sleep(3600)  # wedged
            raise self.error or AssertionError
        return "written"


@in_loop
async def test_a_write_is_retried_through_an_outage(caplog: pytest.LogCaptureFixture) -> None:
    persistent = Persistent(logging.getLogger("test"), timeout=5, give_up=asyncio.Event())
    write = Flaky(3, ConnectionError("refused"))
    with caplog.at_level(logging.INFO):
        assert await persistent.write(write, what="ack 1 message(s)", where="x://", undone="-") == "written"
    assert write.calls == 4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 3
    assert warnings[0].startswith("could not ack 1 message(s) on x:// (ConnectionError: refused)")
    assert "done after 3 failed attempt(s)" in caplog.records[-1].getMessage()


@in_loop
async def test_a_wedged_write_is_cancelled_and_made_again(caplog: pytest.LogCaptureFixture) -> None:
    persistent = Persistent(logging.getLogger("test"), timeout=0.05, give_up=asyncio.Event())
    write = Flaky(2)
    assert await persistent.write(write, what="store 1 result(s)", where="x://", undone="-") == "written"
    assert write.calls == 3
    assert "no answer within 0.05s: wedged, cancelled" in caplog.records[0].getMessage()


@in_loop
async def test_errors_of_the_data_are_not_retried() -> None:
    persistent = Persistent(logging.getLogger("test"), timeout=5, give_up=asyncio.Event())
    write = Flaky(5, TypeError("not JSON serializable"))
    with pytest.raises(TypeError):
        await persistent.write(write, what="store", where="x://", undone="-")
    assert write.calls == 1


def test_outages_are_told_from_errors_no_retry_mends() -> None:
    import redis.exceptions
    import sqlalchemy.exc

    from celeriac.exceptions import ConfigurationError, OperationalError

    outages = [
        ConnectionRefusedError(),
        TimeoutError(),
        OperationalError("down"),
        redis.exceptions.ConnectionError("reset"),
        redis.exceptions.BusyLoadingError("loading"),
        redis.exceptions.OutOfMemoryError("maxmemory"),
        sqlalchemy.exc.OperationalError("select 1", {}, Exception("gone away")),
    ]
    assert all(is_outage(exc) for exc in outages)
    faults = [TypeError("bad option"), ValueError("priority 999"), KeyError("x"), ConfigurationError("queue")]
    assert not any(is_outage(exc) for exc in faults)


@in_loop
async def test_a_send_is_retried_through_an_outage_and_refused_at_once_when_it_is_wrong() -> None:
    persistent = Persistent(logging.getLogger("test"), timeout=5, give_up=asyncio.Event())
    lasting = Flaky(2, OSError("unreachable"))
    wrong = Flaky(5, ValueError("priority must be an int from 0 to 255"))
    permanent = lambda exc: not is_outage(exc)  # noqa: E731 - as Writer.send passes it
    assert await persistent.write(lasting, what="send", where="x://", undone="-", permanent=permanent)
    with pytest.raises(ValueError):
        await persistent.write(wrong, what="send", where="x://", undone="-", permanent=permanent)
    assert (lasting.calls, wrong.calls) == (3, 1)


@in_loop
async def test_a_cold_shutdown_gives_up_and_says_what_is_left_undone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cold = asyncio.Event()
    persistent = Persistent(logging.getLogger("test"), timeout=5, give_up=cold)
    write = Flaky(10**6, ConnectionError("refused"))
    pending = asyncio.create_task(
        persistent.write(write, what="ack 2 message(s)", where="x://", undone="rerun")
    )
    await asyncio.sleep(0.3)
    calls = write.calls
    cold.set()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pending, 5)  # the backoff sleep is cut short, one last try fails
    assert write.calls <= calls + 1
    last = caplog.records[-1]
    assert last.levelno == logging.ERROR
    assert (
        last.getMessage()
        == "cold shutdown: could not ack 2 message(s) on x:// (ConnectionError: refused); rerun"
    )


@in_loop
async def test_a_batcher_whose_flush_retries_carries_what_came_meanwhile_in_its_next_flush() -> None:
    persistent = Persistent(logging.getLogger("test"), timeout=5, give_up=asyncio.Event())
    flushes: list[list[int]] = []
    down = Flaky(3, ConnectionError("refused"))

    async def flush(items: Sequence[int]) -> None:
        async def write() -> None:
            if not flushes:
                await down()
            flushes.append(list(items))

        await persistent.write(write, what="ack", where="x://", undone="-")

    batcher: Batcher[int] = Batcher(flush)
    first = asyncio.create_task(batcher.add(1))
    await asyncio.sleep(0.01)  # the first flush is failing now; these wait for the next one
    rest = [asyncio.create_task(batcher.add(n)) for n in (2, 3, 4)]
    await asyncio.wait_for(asyncio.gather(first, *rest), 10)
    assert flushes == [[1], [2, 3, 4]]
