"""Storing each task's state and result in the backend, in Celery's record layout."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from celeriac import states
from celeriac.exceptions import Retry
from celeriac.middleware.base import Fate, Middleware, WorkItem
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


class Results(Middleware):
    """Stores states and results; deletes records older than ``result_expires`` once an hour."""

    cleanup_interval = 3600.0

    def __init__(self) -> None:
        self._cleaner: asyncio.Task[None] | None = None

    async def worker_start(self, worker: Worker) -> None:
        """Start the hourly cleanup, for a backend that can delete expired records itself."""
        cleanup = getattr(worker.backend, "cleanup", None)
        if cleanup is not None and worker.app.conf.result_expires:
            self._cleaner = asyncio.create_task(self._clean(worker, cleanup))

    async def worker_stop(self, worker: Worker) -> None:
        """Stop the cleanup."""
        if self._cleaner is not None:
            self._cleaner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._cleaner

    async def _clean(self, worker: Worker, cleanup: Callable[[], Awaitable[int]]) -> None:
        while True:
            try:
                removed = await cleanup()
                if removed:
                    worker.log.info("deleted %d result(s) older than result_expires", removed)
            except Exception:
                worker.log.exception("result cleanup failed; trying again in an hour")
            await asyncio.sleep(self.cleanup_interval)

    def wants_start(self, worker: Worker, item: WorkItem) -> bool:
        """Whether ``track_started`` (the task's, else ``task_track_started``) asks for a STARTED record."""
        track = item.task.track_started
        return bool(worker.app.conf.task_track_started if track is None else track) and not item.ignore_result

    async def on_start(self, worker: Worker, item: WorkItem) -> None:
        """Record STARTED, with the pid and hostname Celery records."""
        await worker.writer.store_state(
            item, states.STARTED, {"pid": worker.pid, "hostname": worker.hostname}
        )

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """Record how the task ended, unless its run does not count or its result is ignored (errors are
        kept even then when ``store_errors_even_if_ignored`` says so)."""
        if item.fate is Fate.REQUEUE:
            return  # the message goes back to the queue; its run did not count
        status = outcome.status
        if status in (states.IGNORED, states.REJECTED):
            return  # a rejected message's result is settled where it is dead-lettered or requeued
        ignored = item.ignore_result
        if status == states.SUCCESS:
            if not ignored:
                await worker.writer.store_state(item, status, outcome.value, children=outcome.children)
            return
        conf = worker.app.conf
        keep_errors = item.task.store_errors_even_if_ignored
        if ignored and not (conf.task_store_errors_even_if_ignored if keep_errors is None else keep_errors):
            return
        exc = outcome.exc
        if status == states.RETRY and isinstance(exc, Retry):
            exc = exc.exc  # as Celery: the cause, or None for a retry() without exc
        await worker.writer.store_state(
            item, status, exc, traceback=outcome.traceback, children=outcome.children
        )
