"""A wake-up that crosses threads and event loops, for waiters on in-process state."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

__all__ = ["Wakeup", "wakeup_for"]


class Wakeup:
    """Wakes coroutines that wait on any thread's event loop; ``notify`` may be called from any thread.

    A waiter arms a future *before* it looks at the state it waits on, then awaits the future, so a
    change made between the look and the await still wakes it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[asyncio.Future[None], asyncio.AbstractEventLoop] = {}

    @contextlib.contextmanager
    def armed(self) -> Iterator[asyncio.Future[None]]:
        """A future of the running loop that the next ``notify`` completes."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        with self._lock:
            self._waiters[future] = loop
        try:
            yield future
        finally:
            with self._lock:
                self._waiters.pop(future, None)

    def notify(self) -> None:
        """Wake every armed waiter, on whatever loop it waits."""
        with self._lock:
            waiters, self._waiters = self._waiters, {}
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for future, loop in waiters.items():
            if loop is current:
                _wake(future)
            else:
                # A closed loop has no one left waiting on it.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_wake, future)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_named: dict[str, Wakeup] = {}
_named_lock = threading.Lock()


def wakeup_for(key: str) -> Wakeup:
    """The process's one wake-up named ``key``: every broker or backend on the same store shares it."""
    with _named_lock:
        return _named.setdefault(key, Wakeup())
