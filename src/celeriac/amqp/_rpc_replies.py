"""The reply queue of an rpc:// client: one consumer per queue per process, shared by every event loop.

A client's workers publish its results to one queue, named by the client's id (``app.oid``, the
``reply_to`` of every message it sends). RabbitMQ hands each message of a queue to one consumer only,
so two consumers of one queue would each see half of the results. ``Inbox`` is that one consumer: it
lives on the process's portal loop (the loop synchronous calls already use), keeps the latest state of
every task it heard of, and wakes waiters on any loop. The queue is consumed from the first read until
the last backend using it closes; RabbitMQ deletes it then (auto-delete), as Celery's queue.

The consumer is a plain aiormq connection that recovers by itself: when the connection or its channel
dies (or RabbitMQ cancels the consumer because the queue was deleted), it reconnects with a growing,
jittered delay, declares the queue again with the same arguments and consumes again. Waiters keep
waiting meanwhile; results published while no queue existed are lost, as with Celery's client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._exception_records import exception_to_dict
from celeriac._portal import portal
from celeriac.amqp.client import connect_plain
from celeriac.backends.base import ResultMeta
from celeriac.exceptions import DecodeError, OperationalError

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection, DeliveredMessage

__all__ = ["Inbox", "declare_reply_queue", "inbox_for", "is_consumed", "is_read"]

logger = logging.getLogger("celeriac.amqp.rpc")

#: How long the first read waits for the results that were queued before the consumer started.
BACKLOG_WAIT = 1.0

#: Delays between attempts to get the consumer back: the first bound, doubling up to the last.
RECOVER_FIRST, RECOVER_MOST = 0.2, 5.0

#: Reads a reply's body: (bytes, content type) -> the record as a mapping.
Decode = Callable[[bytes, str | None], Any]

_inboxes: dict[tuple[str, str], Inbox] = {}
_registry_lock = threading.Lock()


async def declare_reply_queue(channel: AbstractChannel, name: str, expires: float | None) -> int:
    """Declare reply queue ``name`` as Celery does: durable, auto-delete, ``x-expires`` = the result
    expiry in ms (so a queue nobody reads goes away after that long). Returns the messages it holds."""
    arguments: dict[str, Any] = {"x-expires": int(expires * 1000)} if expires else {}
    declared = await channel.queue_declare(name, durable=True, auto_delete=True, arguments=arguments)
    return int(declared.message_count or 0)


def inbox_for(
    url: str,
    options: Mapping[str, Any],
    queue: str,
    *,
    expires: float | None,
    limit: int,
    decode: Decode,
) -> Inbox:
    """The process's inbox for ``queue`` on ``url`` (made on first use); the caller holds one use of it
    until it calls ``release``."""
    with _registry_lock:
        inbox = _inboxes.get((url, queue))
        if inbox is None:
            inbox = _inboxes[url, queue] = Inbox(url, options, queue, expires, limit, decode)
        inbox.users += 1
        return inbox


def is_read(url: str, queue: str) -> bool:
    """Whether some backend of this process reads ``queue`` already."""
    with _registry_lock:
        return (url, queue) in _inboxes


def is_consumed(url: str, queue: str) -> bool:
    """Whether this process consumes ``queue`` right now (so the queue exists, and stays while it does)."""
    with _registry_lock:
        inbox = _inboxes.get((url, queue))
    return inbox is not None and inbox.consuming


class _Waiter:
    """One wait for one task on one loop; ``wake`` may be called from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.event = asyncio.Event()
        self.meta: ResultMeta | None = None

    def wake(self, meta: ResultMeta) -> None:
        self.meta = meta  # before the event: a waiter that sees the event set sees the record
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.event.set()
            return
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
            self.loop.call_soon_threadsafe(self.event.set)


class Inbox:
    """The consumer of one reply queue, and the latest state of every task whose result came in.

    At most ``limit`` tasks are remembered; past that the oldest are forgotten (with one warning), so a
    client that sends many tasks and never reads their results does not grow without bound.
    """

    def __init__(
        self,
        url: str,
        options: Mapping[str, Any],
        queue: str,
        expires: float | None,
        limit: int,
        decode: Decode,
    ) -> None:
        self.url = url
        self._decode = decode
        self.options = dict(options)
        self.queue = queue
        self.expires = expires
        self.limit = limit
        self.users = 0
        self._lock = threading.Lock()
        self._states: OrderedDict[str, ResultMeta] = OrderedDict()
        self._waiters: dict[str, set[_Waiter]] = {}
        self._warned = False
        self._connection: AbstractConnection | None = None
        self._opening: asyncio.Future[None] | None = None
        self._recovering: asyncio.Future[None] | None = None
        self._closed = False
        self._backlog = 0
        self._drained: asyncio.Event | None = None
        #: Started: the first consumer came up (it may be recovering since).
        self.ready = False

    @property
    def consuming(self) -> bool:
        """Whether the consumer is up now (not closed, not recovering from a lost connection)."""
        connection = self._connection
        return self.ready and connection is not None and not connection.is_closed

    # -- any thread --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Consume the queue (once per process); returns when the results queued before are read."""
        if self.ready:
            return
        if asyncio.get_running_loop() is portal.loop:
            await self._start()
        else:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._start(), portal.loop))

    def watch(self, task_id: str) -> _Waiter:
        """A waiter for ``task_id`` on the running loop, holding its latest state if one came in."""
        waiter = _Waiter(asyncio.get_running_loop())
        with self._lock:
            waiter.meta = self._states.get(task_id)
            self._waiters.setdefault(task_id, set()).add(waiter)
        return waiter

    def unwatch(self, task_id: str, waiter: _Waiter) -> None:
        with self._lock:
            waiters = self._waiters.get(task_id)
            if waiters is not None:
                waiters.discard(waiter)
                if not waiters:
                    del self._waiters[task_id]

    def lookup(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        with self._lock:
            return {t: self._states[t] for t in task_ids if t in self._states}

    def forget(self, task_id: str) -> None:
        with self._lock:
            self._states.pop(task_id, None)

    def release(self) -> asyncio.Future[None] | None:
        """Drop one use; the last one stops consuming (on the portal loop) and returns that step."""
        with _registry_lock:
            self.users -= 1
            if self.users > 0:
                return None
            _inboxes.pop((self.url, self.queue), None)
        if self._opening is None:
            return None
        return asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self._close(), portal.loop))

    # -- the portal loop -----------------------------------------------------------------------------
    async def _start(self) -> None:
        if self._opening is None or (self._opening.done() and self._opening.exception()):
            self._opening = asyncio.ensure_future(self._open())
        await asyncio.shield(self._opening)
        self.ready = True

    async def _open(self) -> None:
        self._backlog = await self._consume()
        self._drained = asyncio.Event()
        if self._backlog == 0:
            self._drained.set()
        # Results queued before we consumed are delivered now: read them before answering anyone.
        try:
            async with asyncio.timeout(BACKLOG_WAIT):
                await self._drained.wait()
        except TimeoutError:
            logger.debug("rpc:// reply queue %s: backlog not read within %ss", self.queue, BACKLOG_WAIT)

    async def _consume(self) -> int:
        """Connect, declare the queue, consume it; return how many results it held already.

        Raises:
            OperationalError: RabbitMQ cannot be reached, or refused a step.
        """
        import aiormq

        connection = await connect_plain(self.url, self.options, what="the rpc:// result backend")
        try:
            channel = await connection.channel(publisher_confirms=False)
            backlog = await declare_reply_queue(channel, self.queue, self.expires)
            channel.on_consumer_cancel_callbacks.add(lambda _: self._cancelled(connection))
            await channel.basic_consume(self.queue, self._on_message, no_ack=True)
        except BaseException as exc:
            with contextlib.suppress(Exception):
                await connection.close()
            if isinstance(exc, (aiormq.exceptions.AMQPError, RuntimeError, OSError)):
                raise OperationalError(
                    f"the rpc:// result backend cannot consume its reply queue {self.queue}: {exc!r}"
                ) from exc
            raise
        self._connection = connection
        # Observing the channel covers both its own death and its connection's.
        channel.closing.add_done_callback(lambda closing: self._lost(connection, closing))
        return backlog

    def _cancelled(self, connection: AbstractConnection) -> None:
        # RabbitMQ cancels the consumer of a deleted queue: start over on a new connection.
        if connection is self._connection and not self._closed:
            logger.warning(
                "rpc:// reply queue %s: RabbitMQ cancelled its consumer; consuming again", self.queue
            )
            self._recover_from(connection)

    def _lost(self, connection: AbstractConnection, closing: asyncio.Future[Any]) -> None:
        if connection is not self._connection or self._closed:
            return  # an old connection, or one we closed
        reason = None if closing.cancelled() else closing.exception()
        logger.warning(
            "rpc:// reply queue %s: consumer lost (%r); reconnecting", self.queue, reason or "closed"
        )
        self._recover_from(None)

    def _recover_from(self, old: AbstractConnection | None) -> None:
        self._connection = None  # from now on, the old connection's end is no news
        if self._recovering is None or self._recovering.done():
            self._recovering = asyncio.ensure_future(self._recover(old))

    async def _recover(self, old: AbstractConnection | None) -> None:
        """Get the consumer back, trying again after a growing delay until it works or we close."""
        if old is not None:
            with contextlib.suppress(Exception):
                await old.close()
        attempt = 0
        while not self._closed:
            bound = min(RECOVER_MOST, RECOVER_FIRST * 2**attempt)
            # Jittered, so the clients of one RabbitMQ that restarted do not all return at once.
            await asyncio.sleep(random.uniform(bound / 2, bound))
            if self._closed:
                return
            attempt += 1
            try:
                await self._consume()
            except Exception as exc:  # whatever it was, waiters are better served by another attempt
                log = logger.warning if attempt == 1 or bound == RECOVER_MOST else logger.debug
                log("rpc:// reply queue %s: cannot reconnect yet (attempt %d): %s", self.queue, attempt, exc)
                continue
            logger.info("rpc:// reply queue %s: consuming again", self.queue)
            return

    async def _close(self) -> None:
        self._closed = True
        self.ready = False
        recovering, self._recovering = self._recovering, None
        if recovering is not None:
            recovering.cancel()
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    async def _on_message(self, message: DeliveredMessage) -> None:
        self.put(self._read(message))
        if self._backlog:
            self._backlog -= 1
            if self._backlog == 0 and self._drained is not None:
                self._drained.set()

    def _read(self, message: DeliveredMessage) -> ResultMeta:
        properties = message.header.properties
        task_id = properties.correlation_id
        try:
            payload = self._decode(message.body, properties.content_type)
            if not isinstance(payload, dict):
                raise DecodeError(f"a result is a mapping, not {type(payload).__name__}")
            meta = ResultMeta.from_dict(payload)
        except Exception as exc:
            reason = f"the reply for task {task_id} on {self.queue} cannot be read: {exc}"
            logger.error("%s", reason)
            # The waiter gets the error as the task's outcome instead of waiting forever.
            return ResultMeta(
                task_id=task_id or "",
                status=states.FAILURE,
                result=exception_to_dict(DecodeError(reason)),
                date_done=datetime.now(UTC),
            )
        # Celery's client files a reply under its correlation id (the task id unless told otherwise).
        meta.task_id = task_id or meta.task_id
        return meta

    def put(self, meta: ResultMeta) -> None:
        """Keep ``meta`` as its task's latest state (a final state is never replaced by an earlier
        kind) and wake whoever waits for it."""
        if not meta.task_id:
            return
        with self._lock:
            old = self._states.pop(meta.task_id, None)
            if old is not None and old.ready and not meta.ready:
                meta = old  # a late STARTED of a duplicate run does not undo a result
            self._states[meta.task_id] = meta
            evicted = 0
            while len(self._states) > self.limit:
                self._states.popitem(last=False)
                evicted += 1
            waiters = list(self._waiters.get(meta.task_id, ()))
        if evicted and not self._warned:
            self._warned = True
            logger.warning(
                "rpc:// reply queue %s: more than %d unread results; the oldest are forgotten "
                "(read results with get(), or send with ignore_result=True)",
                self.queue,
                self.limit,
            )
        for waiter in waiters:
            waiter.wake(meta)


def _after_fork() -> None:
    # The parent's consumers and their loop did not come along; a child reads a queue of its own.
    global _registry_lock
    _registry_lock = threading.Lock()
    _inboxes.clear()


os.register_at_fork(after_in_child=_after_fork)
