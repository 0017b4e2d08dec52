"""The Middleware contract: named hooks around a message's life in the worker (D11).

Hooks run in the order the middleware are listed. A hook ends a job early by raising ``Skip`` with
what to do with the message; the worker loop itself knows nothing of expiry, revocation, ETA, rate
limits, results or workflows: each is a middleware.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from celeriac.brokers.base import Delivery
from celeriac.protocol.message import TaskCall
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.task import Task
    from celeriac.worker.worker import Worker


@dataclass(slots=True)
class WorkItem:
    """A decoded message on its way through the worker."""

    delivery: Delivery
    call: TaskCall
    task: Task[Any, Any]
    acked: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ignore_result(self) -> bool:
        """The message's ``ignore_result``; when it leaves it unset (Celery's ``null``), the task's."""
        if self.call.ignore_result is not None:
            return self.call.ignore_result
        own = self.task.ignore_result
        return bool(self.task.app.conf.task_ignore_result if own is None else own)

    @property
    def acks_late(self) -> bool:
        late = self.task.acks_late
        return bool(self.task.app.conf.task_acks_late if late is None else late)


class Skip(Exception):
    """End a job before it runs: ``ack`` the message, ``release`` it (never started), or ``reject`` it."""

    def __init__(
        self,
        action: Literal["ack", "release", "reject"],
        reason: str = "",
        *,
        abandon: tuple[str, BaseException] | None = None,
    ) -> None:
        super().__init__(action, reason)
        self.action = action
        self.reason = reason
        #: ``(state, error)`` when the task will never run (expired, revoked): what waits on it is told.
        self.abandon = abandon


class Middleware:
    """Base class; override the hooks you need. Every hook is a coroutine on the worker's loop."""

    async def worker_start(self, worker: Worker) -> None:
        """The worker is starting (pool and broker are up)."""

    async def worker_stop(self, worker: Worker) -> None:
        """The worker is stopping; flush whatever is buffered."""

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        """A batch was fetched and decoded; drop items from it with ``worker.skip(item, ...)``."""

    async def before_start(self, worker: Worker, item: WorkItem) -> None:
        """The item is about to go to the pool; raise ``Skip`` to stop it."""

    async def on_start(self, worker: Worker, item: WorkItem) -> None:
        """The task began running in the pool (only for items ``wants_start`` accepts)."""

    def wants_start(self, worker: Worker, item: WorkItem) -> bool:
        """Whether ``on_start`` has anything to do for ``item``: a cheap test, so that the worker starts
        no coroutine for the items it would ignore."""
        return True

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """The task ended (any status); runs before the message is acked."""

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        """The task will never run (dead-lettered, expired, revoked before it started); its result was set
        to ``status`` with ``exc``. Workflows waiting on it learn it here."""
