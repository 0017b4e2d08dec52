"""Testing your own tasks: an in-process worker and pytest fixtures (``celeriac.testing.plugin``).

from celeriac.testing import start_worker

def test_add(app):
    with start_worker(app):
        assert add.delay(2, 2).get(timeout=5) == 4
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.worker import Worker


@contextmanager
def start_worker(
    app: Celeriac,
    *,
    pool: str = "threads",
    concurrency: int = 2,
    queues: Sequence[str] | None = None,
    timeout: float = 10.0,
    **options: Any,
) -> Iterator[Worker]:
    """Run a worker for ``app`` on a thread of this process for the duration of the ``with`` block.

    It uses the app's own broker and backend (``memory://`` works, since both ends share the process).
    Leaving the block stops it warmly and waits for it.
    """
    from celeriac.worker import Worker

    worker = Worker(app, pool=pool, concurrency=concurrency, queues=queues, fetch_timeout=0.2, **options)
    ready = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        async def main() -> None:
            task = asyncio.create_task(worker.arun(install_signals=False))
            readied = asyncio.create_task(worker.ready.wait())
            # A worker that fails to start never gets ready: its error is reported at once.
            await asyncio.wait({task, readied}, return_when=asyncio.FIRST_COMPLETED)
            readied.cancel()
            if task.done():
                await task
            ready.set()
            await task

        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=serve, name=f"celeriac-worker-{worker.hostname}", daemon=True)
    thread.start()
    if not ready.wait(timeout):
        raise TimeoutError(f"in-process worker did not start within {timeout}s")
    if failure:
        raise failure[0]
    try:
        yield worker
    finally:
        worker.request_stop()
        thread.join(timeout)
        if failure:
            raise failure[0]


__all__ = ["start_worker"]
