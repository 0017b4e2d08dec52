"""Sending the signals of the worker's own process: a message received, revoked, refused.

The signals of a task's run (``task_prerun`` ... ``task_postrun``) are sent by the tracer, in the process
that runs it; the worker's start and stop by the worker itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from celeriac import signals, states
from celeriac._request import Context, request_fields
from celeriac.exceptions import DecodeError, NotRegistered
from celeriac.middleware.base import Middleware, WorkItem
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.brokers.base import Delivery
    from celeriac.protocol.message import TaskCall
    from celeriac.worker.worker import Worker


class Signals(Middleware):
    """Sends ``task_received``, ``task_revoked``, ``task_rejected`` and ``task_unknown``.

    Listed after revocation, so that a revoked message is not reported received (as in Celery). Its
    per-message hooks are live only while their signal has a receiver: a worker whose signals nobody
    listens to pays nothing for them.
    """

    _SENDS = {"after_fetch": signals.task_received, "on_abandoned": signals.task_revoked}

    def live(self, worker: Worker, hook: str) -> bool:
        """Whether the signal ``hook`` sends has a receiver (``on_refused`` sends rare ones: always)."""
        sends = self._SENDS.get(hook)
        if sends is None:
            return True
        # Connecting or disconnecting a receiver later has the worker ask again.
        sends.watch(worker.rehook)
        return sends.has_receivers()

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        """``task_received`` for each item that is to run (sender: the worker)."""
        if not signals.task_received.has_receivers():
            return
        for item in items:
            fields = request_fields(
                item.call,
                worker.hostname,
                queue=item.delivery.queue,
                redelivered=item.delivery.redelivered,
                ignore_result=item.ignore_result,
            )
            signals.task_received.send(sender=worker, request=Context(**fields, called_directly=False))

    async def on_refused(
        self,
        worker: Worker,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None,
        call: TaskCall | None,
    ) -> None:
        """``task_unknown`` for a task not registered here, ``task_rejected`` for a message that is not a
        task message this worker can read (sender: the worker)."""
        if isinstance(exc, NotRegistered) and call is not None:
            signals.task_unknown.send(
                sender=worker, name=call.name, id=call.id, message=delivery.message, exc=exc
            )
        elif call is None and (exc is None or isinstance(exc, DecodeError)):
            signals.task_rejected.send(sender=worker, message=delivery.message, exc=exc)

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        """``task_revoked`` for a task that will not run because it was revoked or expired (sender: the
        task)."""
        task = worker.app.tasks.get(call.name)
        if status != states.REVOKED or task is None or not signals.task_revoked.has_receivers():
            return
        request = Context(**request_fields(call, worker.hostname), called_directly=False)
        expired = exc.args[:1] == ("expired",)
        signals.task_revoked.send(
            sender=task, request=request, terminated=False, signum=None, expired=expired
        )

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """``task_revoked`` with ``terminated`` and the signal for a running task that remote control
        terminated (sender: the task)."""
        if outcome.status != states.REVOKED or not signals.task_revoked.has_receivers():
            return
        request = Context(**request_fields(item.call, worker.hostname), called_directly=False)
        signals.task_revoked.send(
            sender=item.task, request=request, terminated=True, signum=outcome.signum, expired=False
        )
