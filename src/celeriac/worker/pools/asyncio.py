"""The async pool (``-P async``): ``async def`` tasks as coroutines on the worker's own loop.

Up to ``concurrency`` jobs run at once, coroutines and sync tasks together; a sync task runs on a thread
of its own (reused for later sync tasks) so that it never blocks the loop. This is the threads pool's
machinery with the emphasis reversed, so time limits are the threads pool's
(``celeriac.worker.pools.threads``): an ``async def`` task is cancelled at its soft limit (it sees
``CancelledError``) and given up at its hard limit; a sync task gets ``SoftTimeLimitExceeded`` /
``TimeLimitExceeded`` raised in its thread, and ``run`` returns at the hard limit even if the thread is
stuck in C code.
"""

from __future__ import annotations

from typing import ClassVar

from celeriac.worker.pools.threads import ThreadPool


class AsyncPool(ThreadPool):
    """Runs ``async def`` tasks natively on the loop, at most ``concurrency`` jobs at a time.

    Meant for I/O-bound async code, where a high ``concurrency`` (hundreds) is cheap; sync tasks still
    work, each on a thread while it runs.
    """

    name: ClassVar[str] = "async"
