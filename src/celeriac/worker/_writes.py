"""The worker's writes to its broker and backend: acks, requeues, dead letters and result records.

Every write waits out an outage of its store (``Persistent``: retried with backoff, each attempt
bounded by the wedge timeout) and gives up only on a cold shutdown, logging what is left undone. Acks
and result records made in the same moment travel together (``Batcher``). Middleware writes through
these methods of the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._exceptions import exception_to_dict
from celeriac.backends.base import EXTENDED_FIELDS, Backend, ResultMeta
from celeriac.brokers.base import Broker, Delivery
from celeriac.worker._backoff import Persistent, describe
from celeriac.worker._batch import Batcher

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.middleware import Middleware, WorkItem
    from celeriac.protocol.message import TaskCall

__all__ = ["Writes"]


class Writes:
    """The write side of ``Worker`` (a base class of it): what it needs, the worker provides."""

    app: Celeriac
    broker: Broker
    backend: Backend | None
    hostname: str
    log: logging.Logger | logging.LoggerAdapter[logging.Logger]
    stats: dict[str, int]
    wedge_timeout: float
    middleware: list[Middleware]
    _persistent: Persistent
    _acks: Batcher[Delivery]
    _stores: Batcher[ResultMeta]

    @property
    def _where_broker(self) -> str:
        return _safe_url(self.app.broker_url)

    @property
    def _where_backend(self) -> str:
        return _safe_url(self.app.backend_url)

    async def ack(self, delivery: Delivery) -> None:
        """Ack one delivery; acks made in the same moment travel to the broker together."""
        await self._acks.add(delivery)

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

    async def _give_back(self, deliveries: Sequence[Delivery]) -> None:
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

    async def _ack_batch(self, deliveries: Sequence[Delivery]) -> None:
        await self._persistent.write(
            lambda: self.broker.ack(deliveries),
            what=f"ack {len(deliveries)} message(s)",
            where=self._where_broker,
            undone="they stay leased to this worker and run again once its lease runs out",
        )

    async def _store(self, metas: Sequence[ResultMeta]) -> None:
        """Store result records, waiting out an outage of the backend."""
        assert self.backend is not None
        backend = self.backend
        ids = [meta.task_id for meta in metas]
        await self._persistent.write(
            lambda: backend.store(metas),
            what=f"store {len(metas)} result(s)",
            where=self._where_backend,
            undone=f"lost the states of {', '.join(ids[:10])}{' ...' if len(ids) > 10 else ''}",
        )

    async def _store_batch(self, metas: Sequence[ResultMeta]) -> list[BaseException | None] | None:
        try:
            await self._store(metas)
            return None
        except (TypeError, ValueError):
            if len(metas) == 1:
                raise
        # One record could not be serialized: store the others one by one and fail only that one.
        errors: list[BaseException | None] = []
        for meta in metas:
            try:
                await self._store([meta])
                errors.append(None)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        return errors

    async def dead_letter(
        self,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None = None,
        *,
        call: TaskCall | None = None,
    ) -> None:
        """Set a message aside with ``reason``, log it, and fail its result so no caller waits forever.

        With the decoded ``call``, workflows waiting on it (a chain's rest, a chord) are told as well.
        """
        self.stats["dead_lettered"] += 1
        self.log.error("message dead-lettered from queue %r: %s", delivery.queue, reason)
        await self._persistent.write(
            lambda: self.broker.reject(delivery, requeue=False, reason=reason),
            what=f"dead-letter a message of {delivery.queue!r}",
            where=self._where_broker,
            undone="it returns to its queue when this worker's lease runs out",
        )
        task_id = call.id if call is not None else (delivery.message.task_id if delivery.message else None)
        if exc is not None and task_id and self.backend is not None:
            # A record the serializer refuses is not stored; an outage is waited out.
            with contextlib.suppress(Exception):
                await self._store(
                    [
                        ResultMeta(
                            task_id=task_id,
                            status=states.FAILURE,
                            result=exception_to_dict(exc),
                            traceback=reason,
                            date_done=datetime.now(UTC),
                            reply_to=_reply_to(delivery),
                        )
                    ]
                )
        if exc is not None and call is not None:
            await self.abandoned(call, states.FAILURE, exc)

    async def abandoned(self, call: TaskCall, status: str, exc: BaseException) -> None:
        """Tell the middleware that ``call`` will never run (so workflows waiting on it end)."""
        for mw in self.middleware:
            try:
                await mw.on_abandoned(self, call, status, exc)  # type: ignore[arg-type]
            except Exception:
                self.log.exception("Task %s[%s]: settling what waits on it failed", call.name, call.id)

    async def store_state(
        self,
        item: WorkItem,
        status: str,
        result: Any,
        *,
        traceback: str | None = None,
        children: Sequence[str] = (),
    ) -> None:
        """Write a task's state to the backend (no-op without one)."""
        if self.backend is None:
            return
        call = item.call
        meta = ResultMeta(
            task_id=call.id,
            status=status,
            result=exception_to_dict(result) if isinstance(result, BaseException) else result,
            traceback=traceback,
            date_done=datetime.now(UTC) if status in states.READY_STATES else None,
            children=[[[child, None], None] for child in children],
            parent_id=call.parent_id,
            group_id=call.group_id,
            reply_to=call.reply_to or "",
        )
        if self.app.conf.result_extended:
            values = (call.name, call.args, call.kwargs, self.hostname, call.retries, item.delivery.queue)
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
            await self._store([meta])


def _reply_to(delivery: Delivery) -> str:
    """The reply queue a delivered message names ("" when none), for backends that answer the caller."""
    value = delivery.message.properties.get("reply_to") if delivery.message else None
    return value if isinstance(value, str) else ""


def _safe_url(url: str) -> str:
    """The URL with its password hidden, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
