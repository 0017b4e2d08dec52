"""The Pool contract: where task code runs. The worker's loop hands over a ``Job``, gets an ``Outcome``."""

from __future__ import annotations

import abc
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import states
from celeriac.exceptions import TaskRevokedError

if TYPE_CHECKING:
    from celeriac.app import Celeriac


@dataclass(slots=True)
class Job:
    """One task run, picklable so it can cross to a child process.

    ``request`` holds the fields of ``celeriac.task.Context`` (what ``self.request`` shows the task).
    """

    id: str
    name: str
    args: list[Any]
    kwargs: dict[str, Any]
    request: dict[str, Any] = field(default_factory=dict)
    time_limit: float | None = None
    soft_time_limit: float | None = None


@dataclass(slots=True)
class Outcome:
    """How a run ended.

    ``status`` is SUCCESS, FAILURE, RETRY, IGNORED, REJECTED or REVOKED (terminated by remote
    control) (``celeriac.states``). ``exc`` is the
    exception for FAILURE/RETRY/REJECTED (a ``Retry`` for RETRY, a ``Reject`` for REJECTED);
    ``worker_lost`` is true when the process running the task died (``exc`` is a ``WorkerLostError``,
    or ``TimeLimitExceeded`` when the pool killed it). ``children`` are ids of tasks the run sent.
    ``signum`` is, for a run remote control terminated, the signal it asked for (or sent).
    """

    status: str
    value: Any = None
    exc: BaseException | None = None
    traceback: str | None = None
    runtime: float = 0.0
    children: list[str] = field(default_factory=list)
    worker_lost: bool = False
    expected: bool = False
    signum: int | None = None


def revoked(signum: int | None = None, runtime: float = 0.0, children: list[str] | None = None) -> Outcome:
    """The REVOKED outcome of a run that remote control terminated (``TaskRevokedError``, Celery's)."""
    exc = TaskRevokedError("terminated")
    return Outcome(
        states.REVOKED,
        exc=exc,
        traceback="".join(traceback.format_exception_only(exc)),
        runtime=runtime,
        children=list(children or []),
        signum=signum,
    )


class Pool(abc.ABC):
    """Runs jobs with at most ``concurrency`` at a time.

    Guarantees: ``run`` never raises because of the task; a task that overruns its hard time limit ends
    as a FAILURE with ``TimeLimitExceeded`` (as far as the pool kind allows: see each pool); the pool
    stays at full strength after a crash of whatever ran a task.
    """

    name: ClassVar[str] = ""

    def __init__(
        self,
        app: Celeriac,
        concurrency: int,
        *,
        app_path: str | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        hostname: str = "",
    ) -> None:
        self.app = app
        self.concurrency = concurrency
        self.app_path = app_path
        self.max_tasks_per_child = max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child
        self.hostname = hostname
        self.busy = 0

    @property
    def free(self) -> int:
        """Slots free to start a job now."""
        return self.concurrency - self.busy

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Start whatever runs tasks (threads, child processes)."""

    @abc.abstractmethod
    async def run(self, job: Job, on_start: Callable[[], Any] | None = None) -> Outcome:
        """Run ``job`` when a slot is free; call ``on_start`` (on the worker's loop) as it starts."""

    async def stop(self, cold: bool = False) -> None:  # noqa: B027 - optional hook
        """Stop; with ``cold``, stop running tasks too (processes are killed, others abandoned)."""

    def pid_of(self, task_id: str) -> int | None:
        """The pid of the process running ``task_id`` when it is not the worker's own, else None."""
        return None

    def terminate(self, task_id: str, signum: int) -> bool:
        """Stop the running ``task_id`` and end its run as REVOKED (``revoked``); False when it does not
        run here. How it is stopped is the pool's: ``signum`` sent to its process (processes), a
        cancellation or an exception raised in its thread (threads, async, solo)."""
        return False

    def resize(self, concurrency: int) -> None:
        """Run at most ``concurrency`` jobs at a time from now on (``pool_grow``, ``pool_shrink``, the
        autoscaler); running jobs are never stopped by a shrink.

        Raises:
            NotImplementedError: this pool cannot be resized.
        """
        raise NotImplementedError(f"the {self.name} pool cannot be resized")

    def info(self) -> dict[str, Any]:
        """What the pool reports about itself: its name, concurrency and busy slots."""
        return {"pool": self.name, "concurrency": self.concurrency, "busy": self.busy}
