"""One background event loop per process that runs the async core for synchronous callers.

``delay()`` in a plain script, a thread or a Flask view hands its coroutine to this loop and waits.
Connections opened on the portal's loop stay there and are reused by every synchronous call. After a
fork the child gets a fresh portal: loops and sockets do not survive a fork.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class Portal:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None or self._thread is None or not self._thread.is_alive():
                ready = threading.Event()
                loop = asyncio.new_event_loop()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=serve, name="celeriac-portal", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` on the portal's loop and return its result here.

        Raises ``TimeoutError`` after ``timeout`` seconds. Whatever ends the wait early (the timeout,
        Ctrl-C) cancels the coroutine: nothing runs on for a caller that left.
        """
        loop = self.loop
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a synchronous celeriac call was made on the portal's own loop; "
                "use the async twin (adelay, aget, ...) inside async code"
            )
        # A bare lock and a done-callback: two thread wake-ups per call, and nothing more (a
        # concurrent.futures.Future chained to a task costs ~20 us more per call on a small VM).
        finished = threading.Lock()
        finished.acquire()
        started: list[asyncio.Task[T]] = []

        def start() -> None:
            task = loop.create_task(coro)
            started.append(task)
            task.add_done_callback(lambda _: finished.release())

        loop.call_soon_threadsafe(start)
        try:
            if not finished.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
                raise TimeoutError(f"no answer from the portal's loop in {timeout} s")
        except BaseException:
            loop.call_soon_threadsafe(lambda: started[0].cancel())  # runs after ``start``
            raise
        return started[0].result()

    def stop(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=5)
            loop.close()

    def _after_fork(self) -> None:
        # The thread did not survive the fork; its loop's selector is shared with the parent.
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None


portal = Portal()
os.register_at_fork(after_in_child=portal._after_fork)
