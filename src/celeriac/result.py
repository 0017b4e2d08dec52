"""Result handles: ``AsyncResult`` (a task's state and value, read from the backend) and ``EagerResult``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from celeriac import states
from celeriac._exceptions import exception_from_dict
from celeriac.backends.base import ResultMeta
from celeriac.exceptions import CeleriacError

if TYPE_CHECKING:
    from celeriac.app import Celeriac

R = TypeVar("R")


class AsyncResult(Generic[R]):
    """The result of a task sent to a worker.

    ``get`` waits for it; ``aget`` is the same for async code. State reads go to the backend each time
    until the task is ready; after that the record is kept.
    """

    def __init__(
        self, id: str, *, app: Celeriac, task_name: str | None = None, parent: AsyncResult[Any] | None = None
    ) -> None:
        self.id = id
        self.app = app
        self.task_name = task_name
        self.parent = parent
        self._meta: ResultMeta | None = None

    def __repr__(self) -> str:
        return f"<AsyncResult: {self.id}>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, AsyncResult):
            return self.id == other.id
        return isinstance(other, str) and other == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    @property
    def task_id(self) -> str:
        return self.id

    # -- reading ------------------------------------------------------------------------------------
    async def ameta(self) -> ResultMeta:
        """The task's record now (PENDING when the backend has none)."""
        if self._meta is None or not self._meta.ready:
            meta = await self.app.backend().get(self.id)
            if meta.ready:
                self._meta = meta
            return meta
        return self._meta

    def meta(self) -> ResultMeta:
        if self._meta is not None and self._meta.ready:
            return self._meta
        return self.app.run(self.ameta())

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """Wait for the task and return its value; re-raise its exception when ``propagate``.

        Raises ``celeriac.exceptions.TimeoutError`` when ``timeout`` seconds pass first.
        """
        if disable_sync_subtasks:
            _refuse_inside_task()
        return self.app.run(self.aget(timeout, propagate, interval))

    async def aget(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> R:
        """``get`` for code running in an event loop."""
        if self._meta is None or not self._meta.ready:
            self._meta = await self.app.backend().wait(self.id, timeout=timeout, interval=interval)
        value: R = self._value(self._meta, propagate)
        return value

    def _value(self, meta: ResultMeta, propagate: bool) -> Any:
        if meta.status in states.EXCEPTION_STATES:
            exc = exception_from_dict(meta.result)
            if propagate and meta.status in states.PROPAGATE_STATES:
                raise exc
            return exc
        return meta.result

    @property
    def state(self) -> str:
        return self.meta().status

    status = state

    @property
    def result(self) -> Any:
        """The value, or the exception for failed tasks, or None while not ready."""
        meta = self.meta()
        return self._value(meta, propagate=False)

    info = result

    @property
    def traceback(self) -> str | None:
        return self.meta().traceback

    @property
    def date_done(self) -> datetime | None:
        return self.meta().date_done

    @property
    def children(self) -> list[AsyncResult[Any]]:
        found = []
        for child in self.meta().children:
            child_id = _child_id(child)
            if child_id:
                found.append(AsyncResult[Any](child_id, app=self.app, parent=self))
        return found

    def ready(self) -> bool:
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        return self.state == states.FAILURE

    def forget(self) -> None:
        """Delete the task's record from the backend."""
        self._meta = None
        self.app.run(self.aforget())

    async def aforget(self) -> None:
        """``forget`` for code running in an event loop."""
        self._meta = None
        await self.app.backend().forget(self.id)

    def revoke(self, terminate: bool = False) -> None:
        """Mark the task revoked: a worker that receives it later acks it without running it.

        The mark is kept in the result backend, so it survives worker restarts. ``terminate`` (stopping a
        task already running) needs remote control and is not available yet.
        """
        self.app.run(self.arevoke(terminate))

    async def arevoke(self, terminate: bool = False) -> None:
        """``revoke`` for code running in an event loop."""
        if terminate:
            raise NotImplementedError("revoke(terminate=True) needs remote control, not available yet")
        await revoke(self.app, [self.id])


async def revoke(app: Celeriac, task_ids: list[str]) -> None:
    from datetime import UTC

    from celeriac._exceptions import exception_to_dict
    from celeriac.exceptions import TaskRevokedError

    backend = app.backend()
    existing = await backend.get_many(task_ids)
    now = datetime.now(UTC)
    await backend.store(
        [
            ResultMeta(
                task_id=tid,
                status=states.REVOKED,
                date_done=now,
                result=exception_to_dict(TaskRevokedError("revoked")),
            )
            for tid in task_ids
            if not (tid in existing and existing[tid].ready)
        ]
    )


def _child_id(entry: Any) -> str | None:
    # Celery's result tuple: [[id, parent], children] or [id, parent]
    while isinstance(entry, (list, tuple)) and entry:
        entry = entry[0]
    return entry if isinstance(entry, str) else None


def _refuse_inside_task() -> None:
    from celeriac.task import current_request

    request = current_request()
    if request is not None and request.id and not request.is_eager:
        raise CeleriacError(
            "Never call result.get() within a task: it can deadlock the pool. Chain the tasks instead, "
            "or pass disable_sync_subtasks=False if you know the risk."
        )


class EagerResult(AsyncResult[R]):
    """The result of a task run here with ``apply()`` or ``task_always_eager``: already known."""

    def __init__(self, id: str, *, app: Celeriac, meta: ResultMeta, task_name: str | None = None) -> None:
        super().__init__(id, app=app, task_name=task_name)
        self._meta = meta

    def __repr__(self) -> str:
        return f"<EagerResult: {self.id}>"

    def meta(self) -> ResultMeta:
        assert self._meta is not None
        return self._meta

    async def ameta(self) -> ResultMeta:
        return self.meta()

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> R:
        return self._value(self.meta(), propagate)  # type: ignore[no-any-return]

    async def aget(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> R:
        return self.get(propagate=propagate)

    def forget(self) -> None:
        self._meta = ResultMeta(task_id=self.id)
