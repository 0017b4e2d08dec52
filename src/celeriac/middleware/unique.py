"""Unique tasks in the worker: keys let go when a task starts or finishes, successful keyed runs
recorded, and a redelivered keyed message whose run already succeeded acked without running it.

A message is keyed when it carries the header ``celeriac_unique`` (``celeriac.unique.keys``). Until
this worker meets its first keyed message, only ``after_fetch`` runs (one look at each fetched
message's headers), so a fleet that sends no unique tasks pays nothing more.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.middleware.base import Fate, Middleware, WorkItem
from celeriac.protocol.message import TaskCall
from celeriac.unique.keys import HEADER
from celeriac.unique.store import KeyStore, key_store_for
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


def _unique(call: TaskCall) -> dict[str, Any] | None:
    value = call.headers.get(HEADER)
    return value if isinstance(value, dict) and isinstance(value.get("key"), str) else None


class Uniqueness(Middleware):
    """Keeps unique tasks' keys (``docs/unique-tasks.md``)."""

    def __init__(self) -> None:
        self._keyed = False  # met a keyed message yet: the other hooks go live
        self._store: KeyStore | None = None

    def _keys(self, worker: Worker) -> KeyStore:
        if self._store is None:
            self._store = key_store_for(worker.app)
        return self._store

    async def worker_stop(self, worker: Worker) -> None:
        """Close the key store."""
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    def live(self, worker: Worker, hook: str) -> bool:
        """``after_fetch`` and the rare ``on_abandoned`` always (a keyed message may expire before this
        middleware sees it fetched); the others once a keyed message was fetched."""
        return hook in ("after_fetch", "on_abandoned") or self._keyed

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        """Ack, without running it, each keyed message whose task id already succeeded with its key:
        a second delivery of a message whose first run ended well."""
        keyed = [(item, unique) for item in items if (unique := _unique(item.call)) is not None]
        if not keyed:
            return
        if not self._keyed:
            self._keyed = True
            worker.rehook()
        store = self._keys(worker)
        for item, unique in keyed:
            if await store.finished(unique["key"]) == item.call.id:
                item.settle(Fate.ACK, f"its run already succeeded (idempotency key {unique['key']!r})")

    def wants_start(self, worker: Worker, item: WorkItem) -> bool:
        """Only keyed messages held until their task starts."""
        unique = _unique(item.call)
        return unique is not None and unique.get("until") == "start"

    async def on_start(self, worker: Worker, item: WorkItem) -> None:
        """Let the key go: the task started (``unique_until="start"``)."""
        await self._release(worker, item.call)

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """Record a keyed run that succeeded; let the key go when the task finished (any way but a
        retry) and it was held until then."""
        unique = _unique(item.call)
        if unique is None or item.fate is Fate.REQUEUE:
            return  # the run does not count: the message runs again
        if outcome.status == states.SUCCESS:
            store = self._keys(worker)
            keep = float(unique.get("keep") or 86400.0)
            await worker.writer.send(
                lambda: store.finish(unique["key"], item.call.id, keep),
                what=f"record that {item.task.name}[{item.call.id}] succeeded with its idempotency key",
            )
        if unique.get("until") == "finish" and outcome.status not in (states.RETRY, states.REJECTED):
            await self._release(worker, item.call)

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        """The task will never run (expired, revoked, dead-lettered): a key held until it starts or
        finishes is let go."""
        unique = _unique(call)
        if unique is not None and unique.get("until") in ("start", "finish"):
            await self._release(worker, call)

    async def _release(self, worker: Worker, call: TaskCall) -> None:
        unique = _unique(call)
        assert unique is not None
        store = self._keys(worker)
        await worker.writer.send(
            lambda: store.release(unique["key"], call.id),
            what=f"let the unique key of {call.name}[{call.id}] go",
        )
