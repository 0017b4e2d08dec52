"""Task events, as Celery's workers send them: received, started, succeeded, failed, retried, rejected,
revoked; and the worker's own online, heartbeat and offline events (``celeriac.worker.events``).

Listed last, so that its hooks see what the others decided: a revoked or expired task is reported
revoked, not received, and ``task-succeeded`` goes out after the result is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.exceptions import NotRegistered, Reject, Retry
from celeriac.middleware.base import Fate, Middleware, WorkItem
from celeriac.protocol.codec import safe_repr
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.brokers.base import Delivery
    from celeriac.protocol.message import TaskCall
    from celeriac.worker.worker import Worker


def _repr(value: Any) -> str:
    # Most results are small and plain: their repr is cheap and short (safe_repr walks containers).
    if value is None or type(value) in (int, bool, float):
        return repr(value)
    if type(value) is str and len(value) <= 100:  # even escaped, within safe_repr's 1024
        return repr(value)
    return safe_repr(value)


class Events(Middleware):
    """Reports each message's life as Celery's task events, through ``worker.events``.

    Its per-message hooks are live only while task events are on: a worker without ``-E`` pays nothing
    for them (``WorkerEvents`` has the worker ask again when they are switched).
    """

    def live(self, worker: Worker, hook: str) -> bool:
        """Whether task events are on (every hook here but the worker's start and stop sends them)."""
        return worker.events.enabled

    async def worker_start(self, worker: Worker) -> None:
        """Say the worker is online and start its heartbeat."""
        assert worker.broker is not None
        pool, total = worker.pool, worker.total
        await worker.events.start(worker.broker, lambda: pool.busy, lambda: sum(total.values()))

    async def worker_stop(self, worker: Worker) -> None:
        """Say the worker is offline and send what is still buffered."""
        await worker.events.stop()

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        """``task-received`` for each task to run here: not for one that expired, nor for one due beyond
        ``worker_eta_horizon`` (it goes to the broker's delayed store, and is received when due)."""
        events = worker.events
        if not events.enabled or not items:
            return
        now = datetime.now(UTC)
        horizon = worker.app.conf.worker_eta_horizon
        for item in items:
            if not item.runs_here(now, horizon):
                continue
            call = item.call
            if item.task.redaction:  # whatever the sender wrote
                events.received(call, *item.task.redaction.reprs(call.args, call.kwargs))
                continue
            events.received(
                call,
                call.argsrepr if call.argsrepr is not None else safe_repr(tuple(call.args)),
                call.kwargsrepr if call.kwargsrepr is not None else safe_repr(call.kwargs),
            )

    def wants_start(self, worker: Worker, item: WorkItem) -> bool:
        """Send ``task-started``, here and now; wants no ``on_start`` coroutine.

        The worker asks this at the moment the task starts, on its loop: queueing the event here costs a
        dict, where ``on_start`` would cost an asyncio task per message.
        """
        events = worker.events
        if events.enabled:
            events.started(item.call.id)
        return False

    async def on_start(self, worker: Worker, item: WorkItem) -> None:
        """Never called (``wants_start`` says False); overridden so that the worker asks ``wants_start``."""

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """``task-succeeded``, ``-failed``, ``-retried``, ``-rejected`` (a ``Reject``, or a run that does
        not count and goes back to the queue), or ``-revoked`` (terminated while it ran)."""
        events = worker.events
        if not events.enabled:
            return
        uuid = item.call.id
        status, exc = outcome.status, outcome.exc
        if item.fate is Fate.REQUEUE:
            events.task("task-rejected", uuid=uuid, requeue=True)
        elif status == states.SUCCESS:
            events.succeeded(uuid, _repr(outcome.value), outcome.runtime)
        elif status == states.FAILURE:
            events.task("task-failed", uuid=uuid, exception=safe_repr(exc), traceback=outcome.traceback or "")
        elif status == states.RETRY:
            cause: Any = exc.exc if isinstance(exc, Retry) else exc
            events.task(
                "task-retried", uuid=uuid, exception=safe_repr(cause), traceback=outcome.traceback or ""
            )
        elif status == states.REJECTED:
            events.task("task-rejected", uuid=uuid, requeue=bool(isinstance(exc, Reject) and exc.requeue))
        elif status == states.REVOKED:  # terminated by remote control while it ran
            events.task("task-revoked", uuid=uuid, terminated=True, signum=outcome.signum, expired=False)

    async def on_refused(
        self,
        worker: Worker,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None,
        call: TaskCall | None,
    ) -> None:
        """``task-failed`` for a task message that cannot run (an unknown task, wrong arguments, delivered
        too often): its result fails too. A message that could not be decoded has no task id to report."""
        if call is None or not worker.events.enabled:
            return
        if isinstance(exc, NotRegistered):
            exception = f"NotRegistered({call.name!r})"  # Celery's words, whatever ours say
        else:
            exception = safe_repr(exc) if exc is not None else reason
        worker.events.task("task-failed", uuid=call.id, exception=exception, traceback="")

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        """``task-revoked`` for a task revoked or expired before it ran."""
        if status == states.REVOKED and worker.events.enabled:
            expired = exc.args[:1] == ("expired",)
            worker.events.task("task-revoked", uuid=call.id, terminated=False, signum=None, expired=expired)
