"""Result handles: ``AsyncResult`` (a task's state and value, read from the backend), ``EagerResult``, and
``GroupResult`` (the results of a group, in order; saved and restored in Celery's layout)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar, overload

from celeriac import states
from celeriac._exception_records import exception_from_dict, exception_to_dict
from celeriac._outages import outages_as_ours
from celeriac._request import current_request
from celeriac.backends.base import ResultMeta
from celeriac.exceptions import CeleriacError, TaskRevokedError
from celeriac.exceptions import TimeoutError as ResultTimeout

if TYPE_CHECKING:
    from celeriac.app import Celeriac

R = TypeVar("R")


class AsyncResult(Generic[R]):
    """The result of a task sent to a worker.

    ``get`` waits for it; ``aget`` is the same for async code. State reads go to the backend each time
    until the task is ready; after that the record is kept.
    """

    def __init__(
        self, id: str, *, app: Celeriac, task_name: str | None = None, parent: ResultNode | None = None
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
        """The task's id (Celery's other name for ``id``)."""
        return self.id

    # -- reading ------------------------------------------------------------------------------------
    async def ameta(self) -> ResultMeta:
        """The task's record now (PENDING when the backend has none)."""
        if self._meta is None or not self._meta.ready:
            async with _backend_down(self.app, f"reading the state of task {self.id}"):
                meta = await self.app.backend().get(self.id)
            if meta.ready:
                self._meta = meta
            return meta
        return self._meta

    def meta(self) -> ResultMeta:
        """The task's record now (PENDING when the backend has none); kept once it is ready."""
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
            async with _backend_down(self.app, f"waiting for the result of task {self.id}"):
                self._meta = await self.app.backend().wait(self.id, timeout=timeout, interval=interval)
        value: R = self._value(self._meta, propagate)
        return value

    def _value(self, meta: ResultMeta, propagate: bool) -> Any:
        if meta.status in states.EXCEPTION_STATES and meta.result is not None:
            # None is what Celery stores for a retry() without exc: there is no exception to rebuild.
            exc = exception_from_dict(meta.result)
            if propagate and meta.status in states.PROPAGATE_STATES:
                raise exc
            return exc
        return meta.result

    @property
    def state(self) -> str:
        """The task's state now: ``PENDING``, ``STARTED``, ``SUCCESS``, ``FAILURE``..."""
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
        """The traceback of a failed task, as the worker formatted it."""
        return self.meta().traceback

    @property
    def date_done(self) -> datetime | None:
        """When the task ended; None while it has not."""
        return self.meta().date_done

    def as_tuple(self) -> tuple[tuple[str, Any], None]:
        """Celery's result tuple ``((id, parent tuple or None), None)``, as kept in records and groups."""
        return (self.id, self.parent.as_tuple() if self.parent is not None else None), None

    @property
    def children(self) -> list[AsyncResult[Any]]:
        """The results of the tasks this one sent while it ran (as its record lists them)."""
        found = []
        for child in self.meta().children:
            child_id = _child_id(child)
            if child_id:
                found.append(AsyncResult[Any](child_id, app=self.app, parent=self))
        return found

    def ready(self) -> bool:
        """Whether the task has ended (successfully or not)."""
        return self.state in states.READY_STATES

    def successful(self) -> bool:
        """Whether the task ended with a value."""
        return self.state == states.SUCCESS

    def failed(self) -> bool:
        """Whether the task ended with an exception."""
        return self.state == states.FAILURE

    def forget(self) -> None:
        """Delete the task's record from the backend."""
        self._meta = None
        self.app.run(self.aforget())

    async def aforget(self) -> None:
        """``forget`` for code running in an event loop."""
        self._meta = None
        async with _backend_down(self.app, f"forgetting the result of task {self.id}"):
            await self.app.backend().forget(self.id)

    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Mark the task revoked: a worker that receives it later acks it without running it.

        The mark is kept in the result backend, so it survives worker restarts, and broadcast to the
        running workers, which drop it at once wherever it waits (``app.control.revoke``). With
        ``terminate``, a worker running it sends ``signal`` to its process (processes pool only).
        """
        self.app.run(self.arevoke(terminate, signal))

    async def arevoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """``revoke`` for code running in an event loop."""
        await self.app.control.arevoke([self.id], terminate=terminate, signal=signal)


#: States a revoke may overwrite: the task has not started anywhere (or waits to run again).
_REVOCABLE = frozenset({states.PENDING, states.RECEIVED, states.RETRY, states.REJECTED})


async def revoke(app: Celeriac, task_ids: list[str]) -> None:
    """Record the tasks ``task_ids`` as REVOKED, except those that have already ended or that a worker
    has started (STARTED, or a state of its own such as PROGRESS: their state is that worker's, as in
    Celery 5.7); a worker skips a revoked task it fetches.
    """
    async with _backend_down(app, f"recording {len(task_ids)} task(s) revoked"):
        backend = app.backend()
        existing = await backend.get_many(task_ids)
        now = app.now()
        task_ids = [t for t in task_ids if t not in existing or existing[t].status in _REVOCABLE]
        await backend.revoke(
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


def _backend_down(app: Celeriac, what: str) -> AbstractAsyncContextManager[None]:
    """Inside, the result backend's driver errors for an outage become our ``OperationalError``."""
    check = "is the result backend up, reachable and not full? (result_backend)"
    return outages_as_ours(what, app.backend_url, check)


def _child_id(entry: Any) -> str | None:
    # Celery's result tuple: [[id, parent], children] or [id, parent]
    while isinstance(entry, (list, tuple)) and entry:
        entry = entry[0]
    return entry if isinstance(entry, str) else None


def _refuse_inside_task() -> None:
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
        """The record the run made."""
        assert self._meta is not None
        return self._meta

    async def ameta(self) -> ResultMeta:
        """``meta`` for code running in an event loop."""
        return self.meta()

    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> R:
        """The value, at once (the task has run); raises its exception with ``propagate``."""
        return self._value(self.meta(), propagate)  # type: ignore[no-any-return]

    async def aget(self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5) -> R:
        """``get`` for code running in an event loop."""
        return self.get(propagate=propagate)

    def forget(self) -> None:
        """Drop the record: the result reads as PENDING from now on."""
        self._meta = ResultMeta(task_id=self.id)


#: What a group holds and what a result's parent may be: a task's result or a (nested) group's.
ResultNode: TypeAlias = "AsyncResult[Any] | GroupResult[Any]"


class GroupResult(Generic[R]):
    """The results of a group's tasks, in the order the group listed them.

    ``get``/``join`` wait for all of them (concurrently, under one ``timeout``) and return their values
    in that order. ``save`` keeps the group in the result backend under Celery's layout, so that
    ``GroupResult.restore(id, app=app)`` (ours or Celery's) finds it again in another process.
    A member may itself be a ``GroupResult`` (a group nested in a group); its value is then the list of
    its own values.
    """

    def __init__(
        self,
        id: str,
        results: Sequence[AsyncResult[R] | GroupResult[Any]] = (),
        *,
        app: Celeriac | None = None,
        parent: ResultNode | None = None,
    ) -> None:
        self.id = id
        self.results: list[AsyncResult[R] | GroupResult[Any]] = list(results)
        self.parent = parent
        if app is None:
            if not self.results:
                raise ValueError("GroupResult needs app= when it has no results to take the app from")
            first: AsyncResult[Any] | GroupResult[Any] = self.results[0]
            app = first.app
        self.app: Celeriac = app

    def __repr__(self) -> str:
        return f"<GroupResult: {self.id} [{', '.join(r.id for r in self.results)}]>"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, GroupResult):
            return (self.id, self.results, self.parent) == (other.id, other.results, other.parent)
        return isinstance(other, str) and other == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __iter__(self) -> Iterator[AsyncResult[R] | GroupResult[Any]]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)

    @overload
    def __getitem__(self, index: int) -> AsyncResult[R] | GroupResult[Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[AsyncResult[R] | GroupResult[Any]]: ...
    def __getitem__(
        self, index: int | slice
    ) -> AsyncResult[R] | GroupResult[Any] | list[AsyncResult[R] | GroupResult[Any]]:
        return self.results[index]

    @property
    def children(self) -> list[AsyncResult[R] | GroupResult[Any]]:
        """The members (Celery's name)."""
        return self.results

    def as_tuple(self) -> tuple[tuple[str, Any], list[Any]]:
        """Celery's group tuple ``((id, parent tuple or None), [member tuples])``."""
        parent = self.parent.as_tuple() if self.parent is not None else None
        return (self.id, parent), [member.as_tuple() for member in self.results]

    def leaves(self) -> list[AsyncResult[Any]]:
        """The task results of this group and of the groups nested in it, in order."""
        found: list[AsyncResult[Any]] = []
        for member in self.results:
            found.extend(member.leaves() if isinstance(member, GroupResult) else [member])
        return found

    # -- waiting --------------------------------------------------------------------------------------
    def get(
        self,
        timeout: float | None = None,
        propagate: bool = True,
        interval: float = 0.5,
        disable_sync_subtasks: bool = True,
    ) -> list[R]:
        """Wait for every member and return their values in order (``join``).

        ``timeout`` bounds the whole wait, not each member's; ``celeriac.exceptions.TimeoutError`` when it
        passes. With ``propagate``, the first failure to arrive is raised at once (the other waits stop);
        without it, failed members give their exception as their value.
        """
        if disable_sync_subtasks:
            _refuse_inside_task()
        return self.app.run(self.aget(timeout, propagate, interval))

    async def aget(
        self, timeout: float | None = None, propagate: bool = True, interval: float = 0.5
    ) -> list[R]:
        """``get`` for code running in an event loop."""
        deadline = None if timeout is None else time.monotonic() + timeout
        await self._refresh()
        return await self._join(deadline, propagate, interval)

    join = get
    ajoin = aget

    async def _join(self, deadline: float | None, propagate: bool, interval: float) -> list[Any]:
        # One wait per member would open a connection each (10,000 members exhaust the pool): instead
        # read every member not known ready in one call, and between reads wait, woken by its message,
        # for the last member still pending (members mostly end in the order they were sent), at most
        # ``interval``, so that a failure elsewhere is raised within ``interval`` of its arrival.
        while True:
            leaves = self.leaves()
            pending = [leaf for leaf in leaves if leaf._meta is None or not leaf._meta.ready]
            if propagate:
                for leaf in leaves:
                    if leaf._meta is not None and leaf._meta.status in states.PROPAGATE_STATES:
                        leaf._value(leaf._meta, propagate=True)
            if not pending:
                return self._values(propagate)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise ResultTimeout(f"{len(pending)} of {len(leaves)} results of group {self.id} not ready")
            wait = interval if left is None else min(interval, left)
            with contextlib.suppress(ResultTimeout):
                await pending[-1].aget(wait, propagate=False, interval=interval)
            await self._refresh()

    def _values(self, propagate: bool) -> list[Any]:
        """The members' values in order (nested groups as lists), once every member is ready."""
        values: list[Any] = []
        for member in self.results:
            if isinstance(member, GroupResult):
                values.append(member._values(propagate))
            else:
                assert member._meta is not None
                values.append(member._value(member._meta, propagate))
        return values

    async def _refresh(self) -> dict[str, ResultMeta]:
        """Read the records of every task result not known ready, in one backend call; keep ready ones."""
        leaves = self.leaves()
        known = {leaf.id: leaf._meta for leaf in leaves if leaf._meta is not None and leaf._meta.ready}
        unknown = [leaf.id for leaf in leaves if leaf.id not in known]
        found: dict[str, ResultMeta] = {}
        if unknown:
            async with _backend_down(self.app, f"reading the results of group {self.id}"):
                found = await self.app.backend().get_many(unknown)
        for leaf in leaves:
            meta = found.get(leaf.id)
            if meta is not None and meta.ready:
                leaf._meta = meta
        return {**known, **{t: found.get(t) or ResultMeta(task_id=t) for t in unknown}}

    # -- state ----------------------------------------------------------------------------------------
    async def astates(self) -> list[str]:
        """Every member's state in order; a nested group's is SUCCESS, FAILURE, or PENDING until ready."""
        metas = await self._refresh()
        return [_state_of(member, metas) for member in self.results]

    def _states(self) -> list[str]:
        return self.app.run(self.astates())

    def ready(self) -> bool:
        """True when every member is ready (succeeded, failed or revoked)."""
        return all(state in states.READY_STATES for state in self._states())

    def successful(self) -> bool:
        """True when every member succeeded."""
        return all(state == states.SUCCESS for state in self._states())

    def failed(self) -> bool:
        """True when any member failed."""
        return any(state == states.FAILURE for state in self._states())

    def waiting(self) -> bool:
        """True while any member is not ready yet."""
        return not self.ready()

    def completed_count(self) -> int:
        """How many members succeeded."""
        return sum(state == states.SUCCESS for state in self._states())

    # -- changing ---------------------------------------------------------------------------------------
    def revoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """Revoke every task of the group (see ``AsyncResult.revoke``)."""
        self.app.run(self.arevoke(terminate, signal))

    async def arevoke(self, terminate: bool = False, signal: str = "SIGTERM") -> None:
        """``revoke`` for code running in an event loop."""
        ids = [leaf.id for leaf in self.leaves()]
        await self.app.control.arevoke(ids, terminate=terminate, signal=signal)

    def forget(self) -> None:
        """Delete every member's record, and the saved group."""
        self.app.run(self.aforget())

    async def aforget(self) -> None:
        """``forget`` for code running in an event loop."""
        async with _backend_down(self.app, f"forgetting group {self.id}"):
            backend = self.app.backend()
            for leaf in self.leaves():
                leaf._meta = None
                await backend.forget(leaf.id)
            await backend.forget_group(self.id)

    def delete(self) -> None:
        """Delete the saved group only (Celery's ``GroupResult.delete``); members' records stay."""
        self.app.run(self.adelete())

    async def adelete(self) -> None:
        """``delete`` for code running in an event loop."""
        async with _backend_down(self.app, f"deleting the saved group {self.id}"):
            await self.app.backend().forget_group(self.id)

    # -- saving -----------------------------------------------------------------------------------------
    def save(self) -> None:
        """Keep this group in the result backend (as ``celery-taskset-meta-<id>`` on Redis)."""
        self.app.run(self.asave())

    async def asave(self) -> None:
        """``save`` for code running in an event loop."""
        async with _backend_down(self.app, f"saving group {self.id}"):
            await self.app.backend().save_group(self.id, self.as_tuple())

    @classmethod
    def restore(cls, id: str, *, app: Celeriac) -> GroupResult[Any] | None:
        """The group saved as ``id`` (by us or by Celery), or None when none is saved."""
        return app.run(cls.arestore(id, app=app))

    @classmethod
    async def arestore(cls, id: str, *, app: Celeriac) -> GroupResult[Any] | None:
        """``restore`` for code running in an event loop."""
        async with _backend_down(app, f"restoring group {id}"):
            saved = await app.backend().restore_group(id)
        if saved is None:
            return None
        restored = result_from_tuple(saved, app)
        if not isinstance(restored, GroupResult):
            raise ValueError(f"the saved group {id} holds a task's result tuple, not a group's")
        return restored


def result_from_tuple(data: Any, app: Celeriac) -> ResultNode:
    """The result handle described by Celery's result tuple (``as_tuple``; lists or tuples).

    ``[[id, parent], None]`` is a task's result, ``[[id, parent], [members]]`` a group's; a bare
    ``[id, parent]`` head is accepted too. Raises ValueError for anything else.
    """
    try:
        head, members = data
        task_id, parent = head if isinstance(head, list | tuple) else (head, None)
    except (TypeError, ValueError):
        raise ValueError(f"not a result tuple: {data!r}") from None
    if not isinstance(task_id, str):
        raise ValueError(f"not a result tuple (the id is not a string): {data!r}")
    parent_result = result_from_tuple(parent, app) if parent else None
    if members is None:
        return AsyncResult[Any](task_id, app=app, parent=parent_result)
    if not isinstance(members, list | tuple):
        raise ValueError(f"not a result tuple (members are not a list): {data!r}")
    return GroupResult[Any](
        task_id, [result_from_tuple(member, app) for member in members], app=app, parent=parent_result
    )


def _state_of(member: ResultNode, metas: dict[str, ResultMeta]) -> str:
    if isinstance(member, GroupResult):
        inner = [_state_of(m, metas) for m in member.results]
        if any(state == states.FAILURE for state in inner):
            return states.FAILURE
        if all(state in states.READY_STATES for state in inner):
            return states.SUCCESS if all(s == states.SUCCESS for s in inner) else states.REVOKED
        return states.PENDING
    return metas[member.id].status
