"""The Middleware contract: named hooks around a message's life in the worker (D11).

Hooks run in the order the middleware are listed. What becomes of a message is its ``Fate``: a hook
that decides it is not to run sets one on the item (``WorkItem.settle``, from ``after_fetch``), or
raises ``Skip`` with one (from ``before_start``), and the worker does what it says. The worker loop
itself knows nothing of expiry, revocation, ETA, rate limits, results or workflows: each is a
middleware.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celeriac.brokers.base import Delivery
from celeriac.protocol.message import TaskCall
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.task import Task
    from celeriac.worker.worker import Worker


class Fate(enum.Enum):
    """What the worker does with a message: the one word middleware and worker settle it by."""

    #: Nothing decided: the task runs, and the worker settles its message by how it ended.
    RUN = "run"
    #: Done with: the message is acked (expired, revoked, handed to the broker's delayed store).
    ACK = "ack"
    #: Given back uncounted: it never started, and runs later here or on another worker.
    RELEASE = "release"
    #: Given back counted towards ``broker_max_deliveries``: its run did not count (the process running
    #: it died, or finishing it failed), so its result and its workflow are left to the next run.
    REQUEUE = "requeue"
    #: Set aside with its reason, never to run.
    DEAD_LETTER = "dead_letter"


@dataclass(slots=True)
class WorkItem:
    """A decoded message on its way through the worker.

    ``fate`` stays ``RUN`` unless a middleware (or the worker, when it loses the run) settles the
    message otherwise; ``reason`` then says why, for the logs and the dead-letter place, and
    ``abandon`` is ``(state, error)`` when a task that will never run leaves a state to report to what
    waits on it (a chain's rest, a chord).
    """

    delivery: Delivery
    call: TaskCall
    task: Task[Any, Any]
    acked: bool = False
    fate: Fate = Fate.RUN
    reason: str = ""
    abandon: tuple[str, BaseException] | None = None
    #: When its task began running in the pool (unix time), else None.
    time_start: float | None = None
    #: When the worker fetched it (unix time), set by the middleware that needs it (metrics), else None.
    time_received: float | None = None

    def settle(
        self, fate: Fate, reason: str = "", *, abandon: tuple[str, BaseException] | None = None
    ) -> None:
        """Have the worker settle the message with ``fate`` instead of by the task's outcome.

        From ``after_fetch`` the item is then not run; from ``after_outcome`` its run is settled this
        way (``REQUEUE``: the run does not count). ``abandon`` is only told for an item that is not run.
        """
        self.fate = fate
        self.reason = reason
        self.abandon = abandon

    def runs_here(self, now: datetime, horizon: float) -> bool:
        """Whether the task is to run on this worker: not expired at ``now``, and due within ``horizon``
        seconds (``worker_eta_horizon``; one due later goes to the broker's delayed store)."""
        call = self.call
        if call.expires is not None and call.expires <= now:
            return False
        return call.eta is None or (call.eta - now).total_seconds() <= horizon

    @property
    def ignore_result(self) -> bool:
        """The message's ``ignore_result``; when it leaves it unset (Celery's ``null``), the task's."""
        if self.call.ignore_result is not None:
            return self.call.ignore_result
        own = self.task.ignore_result
        return bool(self.task.app.conf.task_ignore_result if own is None else own)

    @property
    def acks_late(self) -> bool:
        """Whether the message is acked after its task ran (the default) rather than before."""
        late = self.task.acks_late
        return bool(self.task.app.conf.task_acks_late if late is None else late)


class Skip(Exception):
    """Raised by ``before_start`` or ``before_run``: do not run the task; settle its message with
    ``fate`` instead.

    ``abandon`` is ``(state, error)`` when the task will never run (expired, revoked): what waits on
    it is told.
    """

    def __init__(
        self, fate: Fate, reason: str = "", *, abandon: tuple[str, BaseException] | None = None
    ) -> None:
        if fate is Fate.RUN:
            raise ValueError("Skip settles a message that does not run: give it a fate other than RUN")
        super().__init__(fate, reason)
        self.fate = fate
        self.reason = reason
        self.abandon = abandon


class Middleware:
    """Base class; override the hooks you need. Every hook is a coroutine on the worker's loop.

    The worker calls only the hooks a middleware overrides and, of those, only the ones ``live`` says
    have something to do: a per-message hook costs a coroutine per message even when it returns at
    once. It asks ``live`` once per hook and keeps the answer until ``worker.rehook()``, which a
    middleware calls whenever its answer may have changed (task events switched on, a first receiver
    connected to a signal).
    """

    def live(self, worker: Worker, hook: str) -> bool:
        """Whether ``hook`` (one of the per-message hooks: ``after_fetch``, ``before_start``,
        ``before_run``, ``on_start``, ``after_outcome``, ``on_refused``, ``on_abandoned``) has anything
        to do now."""
        return True

    async def worker_start(self, worker: Worker) -> None:
        """The worker is starting (pool and broker are up)."""

    async def worker_stop(self, worker: Worker) -> None:
        """The worker is stopping; flush whatever is buffered."""

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        """A batch was fetched and decoded; keep an item from running with ``item.settle(fate, ...)``.

        Each hook sees the items no hook before it settled."""

    async def before_start(self, worker: Worker, item: WorkItem) -> None:
        """The item is about to go to the pool; raise ``Skip`` to settle it otherwise."""

    async def before_run(self, worker: Worker, item: WorkItem) -> None:
        """A pool slot is held for the item and it goes to the pool now; raise ``Skip`` to settle it
        otherwise. For checks that must be fresh: an item may wait long for its slot after
        ``before_start``."""

    async def on_start(self, worker: Worker, item: WorkItem) -> None:
        """The task began running in the pool (only for items ``wants_start`` accepts)."""

    def wants_start(self, worker: Worker, item: WorkItem) -> bool:
        """Whether ``on_start`` has anything to do for ``item``: a cheap test, so that the worker starts
        no coroutine for the items it would ignore."""
        return True

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """The task ended (any status); runs before its message is settled.

        ``item.fate`` is ``REQUEUE`` when the run does not count (its process died): a hook then leaves
        the result and the workflow to the next run. A hook may settle the message itself with
        ``item.settle``; otherwise the worker acks it (or, for ``Reject``, requeues or dead-letters it).
        """

    async def on_refused(
        self,
        worker: Worker,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None,
        call: TaskCall | None,
    ) -> None:
        """A delivery cannot run (unreadable, undecodable, an unknown task, wrong arguments, delivered
        too often) and is about to be dead-lettered with ``reason``; ``call`` is None when it could not
        be decoded."""

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        """The task will never run (dead-lettered, expired, revoked before it started); its result was set
        to ``status`` with ``exc``. Workflows waiting on it learn it here."""
