"""The worker's writes to its broker and backend: acks, requeues, dead letters and result records.

Every write waits out an outage of its store (``Persistent``: retried with backoff, each attempt
bounded by the wedge timeout) and gives up only on a cold shutdown, logging what is left undone. Acks
and result records made in the same moment travel together (``Batcher``). The worker holds one
``Writer`` while it runs (``Worker.writer``); middleware writes through it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._exception_records import exception_to_dict
from celeriac._outages import is_outage, safe_url
from celeriac.backends.base import EXTENDED_FIELDS, Backend, ResultMeta
from celeriac.brokers.base import Broker, Delivery
from celeriac.protocol.envelope import readable_ids
from celeriac.worker._backoff import Persistent, describe
from celeriac.worker._batch import Batcher

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.middleware import WorkItem
    from celeriac.protocol.message import TaskCall

__all__ = ["Writer"]


class Writer:
    """Writes one worker's acks, requeues, dead letters and result records, outages waited out.

    ``backend`` is None when results are disabled: result writes are then no-ops. ``stats`` is the
    worker's counters (``dead_lettered`` is counted here). ``wedge_timeout`` bounds the one attempt a
    message gets to be given back on the way out (``give_back``).
    """

    def __init__(
        self,
        app: Celeriac,
        broker: Broker,
        backend: Backend | None,
        *,
        hostname: str,
        log: logging.Logger | logging.LoggerAdapter[logging.Logger],
        stats: dict[str, int],
        persistent: Persistent,
        wedge_timeout: float,
    ) -> None:
        self.app = app
        self.broker = broker
        self.backend = backend
        self.hostname = hostname
        self.log = log
        self.stats = stats
        self.wedge_timeout = wedge_timeout
        self._persistent = persistent
        self._where_broker = safe_url(app.broker_url)
        self._where_backend = safe_url(app.backend_url)
        self._acks: Batcher[Delivery] = Batcher(self._ack_batch)
        self._stores: Batcher[ResultMeta] = Batcher(self._store_batch)

    async def ack(self, delivery: Delivery) -> None:
        """Ack one delivery; acks made in the same moment travel to the broker together."""
        await self._acks.add(delivery)

    async def still_held(self, item: WorkItem, status: str) -> bool:
        """Whether this worker still holds the message of a task whose run just ended (``Broker.holds``).

        When it does not (the worker was paused or cut off for longer than its lease, and the message
        went to another worker, which runs the task again) the late run is logged and counted
        (``lease_lost``), and the caller writes nothing of it: no result over the newer run's, no
        follow-ups, no ack. A broker that cannot answer now counts as holding: a result stored twice
        beats a result lost.
        """
        try:
            async with asyncio.timeout(self.wedge_timeout):
                held = (await self.broker.holds([item.delivery]))[0]
        except Exception as exc:
            if not is_outage(exc):
                raise
            return True
        if held:
            return True
        self.stats["lease_lost"] += 1
        self.log.warning(
            "Task %s[%s] ended (%s) after this worker lost its message's lease: it was paused or cut off "
            "for longer than the lease, and %s gave the message to another worker, which runs the task "
            "again; this late run's result, follow-ups and ack are dropped",
            item.task.name,
            item.call.id,
            status,
            self._where_broker,
        )
        return False

    async def requeue(self, delivery: Delivery, reason: str) -> None:
        """Give a delivery back to its queue, counted as a delivery (the task ran, or tried to)."""
        await self._persistent.write(
            lambda: self.broker.reject(delivery, requeue=True, reason=reason),
            what=f"requeue a message of {delivery.queue!r} ({reason})",
            where=self._where_broker,
            undone="it returns to its queue when this worker's lease runs out",
        )

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give deliveries that never started back to their queues, uncounted."""
        await self._persistent.write(
            lambda: self.broker.release(deliveries),
            what=f"give back {len(deliveries)} message(s)",
            where=self._where_broker,
            undone="they return to their queues when this worker's lease runs out",
        )

    async def give_back(self, deliveries: Sequence[Delivery]) -> None:
        """Release on the way out: tried once, since closing the broker (or, failing that, the end of
        this worker's lease) gives the messages back anyway. While running, use ``release``."""
        try:
            async with asyncio.timeout(min(self.wedge_timeout, 10.0)):
                await self.broker.release(deliveries)
        except Exception as exc:
            self.log.warning(
                "could not give back %d message(s) to %s (%s); they return to their queues when this "
                "worker's lease runs out",
                len(deliveries),
                self._where_broker,
                describe(exc),
            )

    async def dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None = None,
        *,
        call: TaskCall | None = None,
    ) -> None:
        """Set a message aside with ``reason`` and log it; with ``exc``, fail its result so no caller
        waits forever (the decoded ``call`` names it, else the message's headers).

        Telling the workflows that wait on the task is the worker's part (``Worker.abandoned``).
        """
        self.stats["dead_lettered"] += 1
        self.log.error("message dead-lettered from queue %r: %s", delivery.queue, reason)
        await self._persistent.write(
            lambda: self.broker.reject(delivery, requeue=False, reason=reason),
            what=f"dead-letter a message of {delivery.queue!r}",
            where=self._where_broker,
            undone="it returns to its queue when this worker's lease runs out",
        )
        task_id, reply_to = _ids(delivery, call)
        if exc is not None and task_id and self.backend is not None:
            # A record the serializer refuses is not stored; an outage is waited out.
            with contextlib.suppress(Exception):
                await self.store(
                    [
                        ResultMeta(
                            task_id=task_id,
                            status=states.FAILURE,
                            result=exception_to_dict(exc),
                            traceback=reason,
                            date_done=self.app.now(),
                            reply_to=reply_to,
                        )
                    ]
                )

    async def send(self, send: Callable[[], Awaitable[object]], *, what: str) -> None:
        """Send what a task's end calls for (a callback, a chain's next step, a chord's body) with
        ``send()``, waiting out an outage of the broker as writes do; an error that is not an outage (the
        message cannot be built or encoded) is raised at once: retrying cannot mend it."""
        await self._persistent.write(
            send,
            what=what,
            where=self._where_broker,
            undone="the workflow stops here; the task's own result is kept",
            permanent=lambda exc: not is_outage(exc),
        )

    async def store(self, metas: Sequence[ResultMeta]) -> None:
        """Store result records as they are, waiting out an outage of the backend (which must exist)."""
        assert self.backend is not None
        backend = self.backend
        ids = [meta.task_id for meta in metas]
        await self._persistent.write(
            lambda: backend.store(metas),
            what=f"store {len(metas)} result(s)",
            where=self._where_backend,
            undone=f"lost the states of {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}",
        )

    async def store_state(
        self,
        item: WorkItem,
        status: str,
        result: Any,
        *,
        traceback: str | None = None,
        children: Sequence[str] = (),
    ) -> None:
        """Write a task's state to the backend (no-op without one); records written in the same moment
        travel together. A successful result the serializer refuses is stored as a FAILURE that says so.
        """
        if self.backend is None:
            return
        call = item.call
        meta = ResultMeta(
            task_id=call.id,
            status=status,
            result=exception_to_dict(result) if isinstance(result, BaseException) else result,
            traceback=traceback,
            date_done=self.app.now() if status in states.READY_STATES else None,
            children=[[[child, None], None] for child in children],
            parent_id=call.parent_id,
            group_id=call.group_id,
            reply_to=call.reply_to or "",
        )
        if self.app.conf.result_extended:
            args, kwargs = item.task.redaction.values(call.args, call.kwargs)
            values = (call.name, args, kwargs, self.hostname, call.retries, item.delivery.queue)
            meta.extended = dict(zip(EXTENDED_FIELDS, values, strict=True))
        try:
            await self._stores.add(meta)
        except (TypeError, ValueError) as exc:
            if status != states.SUCCESS:
                raise
            error = TypeError(
                f"the result of {call.name}[{call.id}] cannot be stored with the "
                f"{self.backend.serializer!r} serializer: {exc}"
            )
            meta.status, meta.result = states.FAILURE, exception_to_dict(error)
            await self.store([meta])

    async def _ack_batch(self, deliveries: Sequence[Delivery]) -> None:
        await self._persistent.write(
            lambda: self.broker.ack(deliveries),
            what=f"ack {len(deliveries)} message(s)",
            where=self._where_broker,
            undone="they stay leased to this worker and run again once its lease runs out",
        )

    async def _store_batch(self, metas: Sequence[ResultMeta]) -> list[BaseException | None] | None:
        try:
            await self.store(metas)
            return None
        except (TypeError, ValueError):
            if len(metas) == 1:
                raise
        # One record could not be serialized: store the others one by one and fail only that one.
        errors: list[BaseException | None] = []
        for meta in metas:
            try:
                await self.store([meta])
                errors.append(None)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        return errors


def _ids(delivery: Delivery, call: TaskCall | None) -> tuple[str | None, str]:
    """The task id and reply queue of a message being dead-lettered: from the decoded call, else the
    message's headers, else (the broker could not read its stored form) what can be read of that."""
    if delivery.message is None:
        return readable_ids(delivery.raw)
    return (call.id if call is not None else delivery.message.task_id), _reply_to(delivery)


def _reply_to(delivery: Delivery) -> str:
    """The reply queue a delivered message names ("" when none), for backends that answer the caller."""
    value = delivery.message.properties.get("reply_to") if delivery.message else None
    return value if isinstance(value, str) else ""
