"""The solo pool: one job at a time, in the worker process itself.

A sync task runs on one dedicated thread, so the worker's loop keeps serving heartbeats, remote control
and broker leases while it runs; an ``async def`` task runs on the loop. Time limits and terminating a
running task (``revoke(terminate=True)``) are the threads pool's (``celeriac.worker.pools.threads``):
because the task never runs in the loop's own thread, the worker stays free to stop it; a sync task gets
``Terminated`` raised in its thread, a coroutine is cancelled. It cannot be resized: it is one slot.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac.worker.pools.threads import ThreadPool

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger(__name__)


class SoloPool(ThreadPool):
    """Runs one job at a time, whatever ``concurrency`` it is given."""

    name: ClassVar[str] = "solo"

    def __init__(self, app: Celeriac, concurrency: int = 1, **options: Any) -> None:
        if concurrency != 1:
            logger.warning("the solo pool runs one task at a time; concurrency %d is ignored", concurrency)
        super().__init__(app, 1, **options)

    def resize(self, concurrency: int) -> None:
        """Refuse: the solo pool is one slot by definition (``-P threads -c 1`` can grow).

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError("the solo pool runs one task at a time: it cannot be resized")
