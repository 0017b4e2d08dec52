"""A semaphore whose limit can change while it is held: the worker's and the pools' slots, resized by
``pool_grow``, ``pool_shrink`` and the autoscaler."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["Slots"]


class Slots:
    """At most ``limit`` holders at a time, served first come, first served.

    ``resize`` takes effect at once for those waiting: a larger limit lets them in, a smaller one lets
    no one else in until enough holders have released (holders are never taken away).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: How many hold a slot now (more than ``limit`` after a shrink, until they release).
        self.held = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> int:
        """How many wait for a slot."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        """Take a slot, waiting for one if need be."""
        if self.held < self.limit and not self._waiters:
            self.held += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # given a slot just as the caller was cancelled: pass it on
            raise
        finally:
            if not waiter.done() or waiter.cancelled():
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)

    def release(self) -> None:
        """Give a slot back (and to the next waiter, if the limit allows)."""
        self.held -= 1
        self._wake()

    def resize(self, limit: int) -> None:
        """Change the limit; waiters the new limit allows are let in now."""
        self.limit = limit
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self.held < self.limit:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.held += 1
                waiter.set_result(None)
