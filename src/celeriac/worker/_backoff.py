"""Waiting out an outage of the broker or the result backend: backoff, writes that are retried, and
how an outage is named in the logs.

A worker cut off from Redis or a database keeps running. Its fetches back off (the loop in
``worker.py``), and what it must write — acks, requeues, dead letters, results — is written again until
it goes through, since an ack that is dropped runs its task twice and a result that is dropped is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


class Backoff:
    """Delays that double from ``base`` up to ``cap``, each drawn uniformly below its bound ("full
    jitter"), so workers cut off together do not all come back in the same instant.

    ``next()`` gives the delay before the next attempt; ``reset()`` after a success starts again at
    ``base``.
    """

    def __init__(self, base: float = 0.1, cap: float = 5.0, rng: Callable[[], float] = random.random) -> None:
        self.base = base
        self.cap = cap
        self.failures = 0
        self._rng = rng

    def bound(self) -> float:
        """The most the next delay can be."""
        return min(self.cap, self.base * 2.0 ** min(self.failures, 64))

    def next(self) -> float:
        """The delay before the next attempt, counting one more failure."""
        delay = self._rng() * self.bound()
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Start again at ``base``, after a success."""
        self.failures = 0


async def sleep_unless(event: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds``, or less if ``event`` is set first; return whether it is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()
    return event.is_set()


class Persistent:
    """Runs writes until they go through, backing off while the store they go to is down.

    Each attempt may take ``timeout`` seconds before it counts as wedged and is cancelled (the writes
    a worker makes are idempotent: acking twice, or storing a result twice, changes nothing). Errors
    of the data itself (``TypeError``, ``ValueError``: a result the serializer refuses) are not
    outages and are raised at once. When ``give_up`` is set (a cold shutdown), a failing write is
    logged with what it leaves undone and its error is raised.
    """

    permanent: tuple[type[Exception], ...] = (TypeError, ValueError)

    def __init__(self, log: logging.Logger, timeout: float, give_up: asyncio.Event) -> None:
        self.log = log
        self.timeout = timeout
        self.give_up = give_up

    async def write(
        self,
        write: Callable[[], Awaitable[T]],
        *,
        what: str,
        where: str,
        undone: str,
        permanent: Callable[[Exception], bool] | None = None,
    ) -> T:
        """``write()`` until it succeeds; ``what`` and ``where`` name it in logs ("ack 3 message(s)",
        "redis://host:6379/0"), ``undone`` says what a write given up on leaves behind. ``permanent``
        tells the errors that no retry can mend (default: those of ``Persistent.permanent``), raised
        at once."""
        backoff = Backoff()
        while True:
            deadline = asyncio.timeout(self.timeout)
            try:
                async with deadline:
                    result = await write()
            except Exception as exc:
                if permanent(exc) if permanent is not None else isinstance(exc, self.permanent):
                    raise
                error = exc
            else:
                if backoff.failures:
                    self.log.info("%s on %s: done after %d failed attempt(s)", what, where, backoff.failures)
                return result
            reason = describe(error, self.timeout if deadline.expired() else None)
            if self.give_up.is_set():
                self.log.error("cold shutdown: could not %s on %s (%s); %s", what, where, reason, undone)
                raise error
            delay = backoff.next()
            self.log.warning("could not %s on %s (%s); trying again in %.2fs", what, where, reason, delay)
            await sleep_unless(self.give_up, delay)


def describe(exc: BaseException, timed_out_after: float | None = None) -> str:
    """An error as a log names it; a call cut off by our own timeout says so (its message is empty)."""
    if timed_out_after is not None:
        return f"no answer within {timed_out_after:g}s: wedged, cancelled"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
