"""The rpc:// result backend: each result is a message to the client that sent the task, as in Celery.

What Celery's rpc backend (``celery/backends/rpc.py``) does, as read in Celery 5.7, and so what this
one does on the same wire:

* A client's results travel over the broker's AMQP connection (``rpc://`` names no server of its own)
  to one queue per client, named by the client's id (``app.oid``), which is the ``reply_to`` property
  of every message the client sends. The queue is durable, auto-delete, with ``x-expires`` = the
  result expiry in ms; the client declares it before it sends a task (``expect_reply``), so a result
  that arrives before anyone waits is kept in it.
* A worker publishes each state of a task (STARTED, RETRY, then the final one) to the default exchange
  with routing key = the message's ``reply_to``, ``correlation_id`` = the task id, and the record in
  Celery's layout (``ResultMeta.to_dict``) as the body; delivery mode 1 (transient), or 2 with the
  ``persistent`` option (``result_persistent``). A message that named no ``reply_to`` gets no result.
* The client consumes its queue and keeps the latest state of each task (see ``_rpc_replies``).

So, unlike stored results: only the client that sent a task can read its result, in the process that
sent it; another client (or process) sees PENDING. Results are not kept anywhere but in that client's
memory; ``forget`` drops them there. Nothing can be saved for others to read: ``GroupResult.save``,
chords and ``revoke()`` (whose mark workers look up in the backend) need a backend that stores results
and say so. Waiting costs no polling: the client's one consumer wakes the waiter.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.amqp._codec import Properties
from celeriac.amqp._connection import role_options
from celeriac.amqp._publisher import Publisher
from celeriac.amqp._rpc_replies import Inbox, declare_reply_queue, inbox_for, is_consumed, is_read
from celeriac.amqp.client import SCHEMES, connect_plain
from celeriac.backends.base import Backend, ChordClaim, ChordPart, ResultMeta
from celeriac.exceptions import ConfigurationError, OperationalError
from celeriac.exceptions import TimeoutError as ResultTimeout

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

__all__ = ["RPCBackend"]

#: The results a client remembers at most (read or not) before it forgets the oldest.
DEFAULT_BUFFER = 10_000

_WHAT = "the rpc:// result backend"
_STORED_ONLY = "a result backend that stores results (redis://, db+postgresql://, db+sqlite://...)"

#: Reply queues this process declared, and when (monotonic seconds): declared again after half the
#: queue's ``x-expires``, since only reading, not publishing, keeps an unread queue alive.
_declared: dict[tuple[str, str], float] = {}


class RPCBackend(Backend):
    """Results as messages to the sending client's reply queue, on the AMQP broker (Celery's rpc://).

    Options (set by the app from its settings): ``broker_url`` (the AMQP server), ``reply_to`` (this
    client's queue, the app's ``oid``), ``persistent`` (delivery mode 2), ``ssl``, ``heartbeat``,
    ``connect_timeout`` (as for the broker), and ``buffer_size`` (results remembered, default 10,000).
    """

    schemes = ("rpc",)
    answers_caller = True

    def setup(self) -> None:
        broker = self.options.get("broker_url")
        if not broker:
            raise ConfigurationError(
                "the rpc:// result backend sends results over the broker's AMQP connection, but no "
                "broker_url was given; set broker_url to amqp://... (as Celery, rpc:// names no server)"
            )
        if str(broker).partition("://")[0].lower() not in SCHEMES:
            scheme = str(broker).partition("://")[0]
            raise ConfigurationError(
                f"the rpc:// result backend needs an AMQP broker (amqp://, amqps://), but broker_url is "
                f"{scheme}://...; use an AMQP broker, or {_STORED_ONLY}"
            )
        self.amqp_url = str(broker)
        self.reply_to: str | None = self.options.get("reply_to")
        self.persistent = bool(self.options.get("persistent", False))
        self.buffer_size = int(self.options.get("buffer_size", DEFAULT_BUFFER))
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._publisher: Publisher | None = None
        self._connecting = asyncio.Lock()
        self._inbox: Inbox | None = None

    # -- the worker's side: publishing results -------------------------------------------------------
    async def store(self, metas: Sequence[ResultMeta]) -> None:
        """Publish each record to its task's reply queue; returns once RabbitMQ took them all.

        A record whose message named no reply queue is not sent (nobody could read it). A record
        written for no message at all (``revoke()``) is refused: there is nowhere to keep it.

        Raises:
            OperationalError: the connection was lost (the next call reconnects; the worker stores
                again), or RabbitMQ refused a record.
        """
        for meta in metas:
            if meta.reply_to is None:
                raise ConfigurationError(
                    f"the rpc:// result backend cannot keep the {meta.status} state of task "
                    f"{meta.task_id}: it sends results to the client that sent a task and stores "
                    f"nothing, so workers cannot look up revocations there; use {_STORED_ONLY}"
                )
        targets = [meta for meta in metas if meta.reply_to]
        if not targets:
            return
        mode = 2 if self.persistent else 1
        publisher = await self._publishing()
        sent = []
        for meta in targets:
            content_type, body = self.encode(meta.to_dict())
            properties = Properties(
                content_type=content_type,
                content_encoding="utf-8" if content_type == "application/json" else "binary",
                correlation_id=meta.task_id,
                delivery_mode=mode,
            )
            assert meta.reply_to is not None
            # Not mandatory: a client that is gone (its queue deleted) loses its results, as in Celery.
            # Confirms are pipelined: every reply is on the wire before the first confirm is awaited.
            sent.append(publisher.publish("", meta.reply_to, body, properties, mandatory=False))
        outcomes = await asyncio.gather(*sent, return_exceptions=True)
        failed = [
            (m.task_id, o) for m, o in zip(targets, outcomes, strict=True) if isinstance(o, BaseException)
        ]
        if not failed:
            return
        ids = ", ".join(task_id for task_id, _ in failed)
        if publisher.is_closed:  # the connection died under them: the next call opens a new one
            raise OperationalError(f"{_WHAT} could not publish the results of tasks {ids}: {failed[0][1]}")
        raise OperationalError(f"RabbitMQ refused the results of tasks {ids} ({failed[0][1]})")

    async def _publishing(self) -> Publisher:
        """The worker's publishing link (publisher confirms on); a new one when the last ended."""
        publisher = self._publisher
        if publisher is not None and not publisher.is_closed:
            return publisher
        async with self._connecting:
            if self._publisher is None or self._publisher.is_closed:
                options = role_options(self.options, "publisher", _WHAT)
                self._publisher = await Publisher.open(self.amqp_url, options, what=_WHAT)
            return self._publisher

    async def _ensure_channel(self) -> AbstractChannel:
        """The channel that declares reply queues, on a new connection when the last one died."""
        channel = self._channel
        if channel is not None and not channel.is_closed:
            return channel
        async with self._connecting:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            connection = self._connection
            if connection is None or connection.is_closed:
                connection = await connect_plain(self.amqp_url, self.options, what=_WHAT)
                self._connection = connection
            self._channel = await connection.channel(publisher_confirms=False)
            return self._channel

    @contextlib.asynccontextmanager
    async def _failing(self, what: str) -> AsyncIterator[None]:
        """Turn a lost connection or channel into ``OperationalError``; the next call opens new ones."""
        import aiormq

        try:
            yield
        except (aiormq.exceptions.AMQPError, RuntimeError, ConnectionError, OSError) as exc:
            # Whatever failed, start afresh: a channel closed by an error is useless, and so is the
            # connection under a channel that could not be opened.
            connection, self._connection, self._channel = self._connection, None, None
            if connection is not None and not connection.is_closed:
                with contextlib.suppress(Exception):
                    await connection.close()
            raise OperationalError(f"the rpc:// result backend could not {what}: {exc!r}") from exc

    # -- the client's side: the reply queue ----------------------------------------------------------
    async def expect_reply(self, reply_to: str | None) -> None:
        """Make sure this client's reply queue exists before a task naming it is sent.

        Called by the app for every task sent; costs one declare the first time (and again after half
        the queue's expiry), nothing after. A ``reply_to`` other than this client's is left alone.
        """
        if not reply_to or reply_to != self.reply_to:
            return
        key = (self.amqp_url, reply_to)
        if is_consumed(*key):
            _declared[key] = time.monotonic()  # consumed: the queue exists and stays
            return
        declared = _declared.get(key)
        refresh = self.expires / 2 if self.expires else float("inf")
        # A queue this process reads but does not consume now went with its lost consumer (auto-delete):
        # declared again at once, so that results sent before the consumer is back are kept.
        if declared is not None and time.monotonic() - declared < refresh and not is_read(*key):
            return
        async with self._failing(f"declare the reply queue {reply_to}"):
            await declare_reply_queue(await self._ensure_channel(), reply_to, self.expires)
        _declared[key] = time.monotonic()

    async def _reader(self, *, start: bool) -> Inbox | None:
        """This client's inbox, consuming; with ``start`` False, only if this process sent tasks or
        reads already (a worker looking up revocations opens no consumer)."""
        if self._inbox is None:
            if not self.reply_to:
                raise ConfigurationError(
                    "the rpc:// result backend reads results from the sending client's reply queue, "
                    "but no reply_to was given (the app passes its oid)"
                )
            key = (self.amqp_url, self.reply_to)
            if not (start or key in _declared or is_read(*key)):
                return None
            self._inbox = inbox_for(
                self.amqp_url,
                self.options,
                self.reply_to,
                expires=self.expires,
                limit=self.buffer_size,
                decode=self.decode,
            )
        await self._inbox.start()
        return self._inbox

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        """The latest states this client received for ``task_ids``; others' tasks are never here."""
        inbox = await self._reader(start=False)
        return inbox.lookup(task_ids) if inbox is not None else {}

    async def wait(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> ResultMeta:
        """Wait until the task's final state arrives on this client's queue (no polling: ``interval``
        is not used)."""
        inbox = await self._reader(start=True)
        assert inbox is not None
        waiter = inbox.watch(task_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                waiter.event.clear()
                meta = waiter.meta
                if meta is not None and meta.ready:
                    return meta
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    state = meta.status if meta is not None else "PENDING"
                    raise ResultTimeout(f"task {task_id} not ready after {timeout}s (state {state})")
                try:
                    async with asyncio.timeout(left):
                        await waiter.event.wait()
                except TimeoutError:
                    continue
        finally:
            inbox.unwatch(task_id, waiter)

    async def forget(self, task_id: str) -> None:
        """Drop the result this client holds; there is no record elsewhere to delete."""
        if self._inbox is not None:
            self._inbox.forget(task_id)

    # -- what needs stored results -------------------------------------------------------------------
    async def save_group(self, group_id: str, result: Any) -> None:
        raise ConfigurationError(f"rpc:// stores nothing, so GroupResult.save() needs {_STORED_ONLY}")

    async def restore_group(self, group_id: str) -> Any | None:
        raise ConfigurationError(f"rpc:// stores nothing, so GroupResult.restore() needs {_STORED_ONLY}")

    async def forget_group(self, group_id: str) -> None:
        return None  # nothing was saved

    async def chord_begin(self, group_id: str, size: int) -> None:
        raise _no_chords()

    async def chord_part(
        self, group_id: str, part: ChordPart, size: int, *, lease: float = 60.0
    ) -> ChordClaim | None:
        raise _no_chords()

    async def chord_grow(self, group_id: str, by: int = 1) -> None:
        raise _no_chords()

    async def chord_done(self, claim: ChordClaim) -> None:
        raise _no_chords()

    async def close(self) -> None:
        inbox, self._inbox = self._inbox, None
        if inbox is not None and self.reply_to:
            _declared.pop((self.amqp_url, self.reply_to), None)  # the queue may go with the consumer
            closing = inbox.release()
            if closing is not None:
                await closing
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):  # closing: a connection that died already is fine
                await connection.close()


def _no_chords() -> ConfigurationError:
    # As Celery: a chord's header results must be counted somewhere every worker sees.
    return ConfigurationError(
        "the rpc:// result backend does not support chords (nor a group chained to a task, which "
        f"becomes one): the header's results must be counted where every worker sees them; use {_STORED_ONLY}"
    )
