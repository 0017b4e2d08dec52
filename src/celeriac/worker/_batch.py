"""Coalescing writes: everything added while a flush is running goes out together in the next one.

Under load this turns one round trip per message (ack, result write) into one per batch; when idle a
lone item is flushed at once, so nothing waits for a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


Flush = Callable[[Sequence[T]], Awaitable[Sequence[Any] | None]]


class Batcher(Generic[T]):
    """Calls ``flush(items)`` with every item added since the last call began; ``add`` returns after the
    flush that carried its item.

    ``flush`` returns None when every item went through, or one outcome per item: an exception, which
    ``add`` raises, or a value, which ``add`` returns. What the whole flush raised, every ``add`` raises.
    """

    def __init__(self, flush: Flush[T], max_items: int = 500) -> None:
        self._flush = flush
        self._max = max_items
        self._items: list[T] = []
        self._waiters: list[asyncio.Future[Any]] = []
        self._runner: asyncio.Task[None] | None = None

    async def add(self, item: T) -> Any:
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._items.append(item)
        self._waiters.append(done)
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run())
        return await done

    async def _run(self) -> None:
        await asyncio.sleep(0)  # let the items made ready in this same tick join the batch
        while self._items:
            items, waiters = self._items[: self._max], self._waiters[: self._max]
            del self._items[: self._max], self._waiters[: self._max]
            try:
                errors = await self._flush(items)
            except BaseException as exc:  # handed to every caller in the batch
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
            else:
                for n, waiter in enumerate(waiters):
                    outcome = errors[n] if errors is not None else None
                    if waiter.done():
                        continue
                    if isinstance(outcome, BaseException):
                        waiter.set_exception(outcome)
                    else:
                        waiter.set_result(outcome)
