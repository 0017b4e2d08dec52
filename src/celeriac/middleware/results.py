"""Storing each task's state and result in the backend, in Celery's record layout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from celeriac import states
from celeriac.exceptions import Retry
from celeriac.middleware.base import Middleware, WorkItem
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


class Results(Middleware):
    async def on_start(self, worker: Worker, item: WorkItem) -> None:
        track = item.task.track_started
        if (worker.app.conf.task_track_started if track is None else track) and not item.call.ignore_result:
            await worker.store_state(item, states.STARTED, {"pid": worker.pid, "hostname": worker.hostname})

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        if item.extra.get("requeue"):
            return  # the message goes back to the queue; its run did not count
        status = outcome.status
        if status == states.IGNORED:
            return
        ignored = item.call.ignore_result or bool(item.task.ignore_result)
        if status == states.SUCCESS:
            if not ignored:
                await worker.store_state(item, status, outcome.value, children=outcome.children)
            return
        conf = worker.app.conf
        keep_errors = item.task.store_errors_even_if_ignored
        if ignored and not (conf.task_store_errors_even_if_ignored if keep_errors is None else keep_errors):
            return
        exc = outcome.exc
        if status == states.RETRY and isinstance(exc, Retry):
            exc = exc.exc or exc
        await worker.store_state(item, status, exc, traceback=outcome.traceback, children=outcome.children)
