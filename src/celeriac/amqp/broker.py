"""A broker on RabbitMQ (AMQP 0-9-1), declaring and sending exactly as Celery 5.7 does.

URLs: ``amqp://user:password@host:5672/vhost`` (``pyamqp://`` is the same), ``amqps://`` with the TLS
options of ``broker_use_ssl``. Declaring, counting and broadcast subscriptions use aiormq (aio-pika's
core); publishing and consuming use connections of our own (``_amqp_publisher``, ``_amqp_link``) that
write and read frames straight on the socket, several times cheaper per message. RabbitMQ shows them as
``<connection name> (publisher)`` and ``(consumer)``. Reconnecting ourselves tells us exactly which
deliveries died.

* Publishing: a plain queue gets its message through the default exchange with the queue's name as
  routing key (Celery's "anon exchange"); a ``task_queues`` entry with a topic or fanout exchange goes
  through that exchange. Every publish is persistent, ``mandatory`` and confirmed: it returns once
  RabbitMQ has the message, and a message no queue takes raises ``MessageUnroutable``. Confirms are
  pipelined: concurrent publishes share the round trips (RabbitMQ acks them ``multiple``).
* Consuming: ``basic.consume`` per queue on the consuming link, into a local buffer that ``fetch`` hands
  out from. The prefetch is per consumer and is the broker's ``capacity`` (the worker's slots times its
  prefetch multiplier), so a worker never holds more than it can start. Acks are written at once, one
  ``multiple`` ack per contiguous batch.
* Counting deliveries: quorum queues count returns in ``x-delivery-count``. Classic queues only say
  ``redelivered``; such a delivery is republished with our count header raised and the original acked
  (after the confirm) before anything is handed out. ``release`` republishes with the count unchanged.
* Delays: kombu's native delayed delivery (see ``_amqp_topology``): the message waits in RabbitMQ, in
  TTL queues, never unacked in a worker.
* Dead letters: the queue ``celeriac.dead_letters`` (option ``dead_letter_queue``), with the origin
  queue, the reason and the time in headers; reading them takes them unacked and gives them back.
  Requeuing republishes a letter to its queue (confirmed) before acking it; purging acks it.
* Failures: a lost connection raises ``OperationalError`` from the operation it cut; the next call
  reconnects. Deliveries of a dead channel are never acked on a new one (the broker requeued them).
  A declaration RabbitMQ refuses (PRECONDITION_FAILED) is logged with what to configure, and the
  existing queue is used as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Collection, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac.amqp import _admin as admin
from celeriac.amqp import _wire as wire
from celeriac.amqp._connection import role_options
from celeriac.amqp._consumer import Consumer
from celeriac.amqp._publisher import Publisher
from celeriac.amqp._subscribe import subscription
from celeriac.amqp._topology import (
    DELAY_LEVELS,
    delay_pattern,
    delivery_exchange,
    exchange_kind,
    level_name,
    queue_arguments,
)
from celeriac.amqp.client import connect_plain
from celeriac.brokers.base import Broker, DeadLetter, Delivery, check_dead_letter_arguments
from celeriac.exceptions import MessageUnroutable, OperationalError
from celeriac.protocol.message import Message
from celeriac.routing import QueueSpec, queue_specs

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

    from celeriac.amqp._codec import Properties
    from celeriac.amqp._link import Delivered
    from celeriac.brokers.fanout import Subscription

__all__ = ["AMQPBroker"]

log = logging.getLogger(__name__)


def _not_reported_twice(record: logging.LogRecord) -> bool:
    # aiormq logs a failed connect at ERROR and then raises it; the broker raises it on as an
    # OperationalError naming the broker, and the worker logs that with what it does next.
    return record.msg != "error when creating transport: %r"


logging.getLogger("aiormq.connection").addFilter(_not_reported_twice)


class AMQPBroker(Broker):
    """A broker whose queues are RabbitMQ queues, shared with Celery clients, workers and Flower.

    Options:
        queue_type: ``"classic"`` (default) or ``"quorum"`` (``task_default_queue_type``).
        max_priority: ``x-max-priority`` of classic queues (``task_queue_max_priority``); priorities
            then order messages, higher first.
        queues: ``task_queues`` (kombu ``Queue`` objects or dicts): exchanges, routing keys, arguments.
        dead_letter_queue: where dead letters go (default ``celeriac.dead_letters``).
        delayed_prefix: kombu's prefix of the delay scheme's names (default none).
        heartbeat, connect_timeout, ssl, connection_name: connection options (``celeriac.amqp.client``).
    """

    schemes: ClassVar[tuple[str, ...]] = ("amqp", "amqps", "pyamqp", "pyamqps")

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.queue_type = str(self.options.get("queue_type") or "classic")
        if self.queue_type not in ("classic", "quorum"):
            raise ValueError(f"queue_type must be 'classic' or 'quorum', not {self.queue_type!r}")
        priority = self.options.get("max_priority")
        self.max_priority = int(priority) if priority and self.queue_type == "classic" else None
        #: AMQP takes a higher priority first; queues without x-max-priority (and quorum queues on
        #: RabbitMQ 3.x) ignore priorities.
        self.priority_order = "higher-first" if self.max_priority else "none"
        self.specs: dict[str, QueueSpec] = queue_specs(self.options.get("queues"))
        self.dead_letter_queue = str(self.options.get("dead_letter_queue") or "celeriac.dead_letters")
        self.delayed_prefix = str(self.options.get("delayed_prefix") or "")
        #: For a broker-wide purge by age: ``older_than`` -> the unix time before which no dead letter
        #: can be that old (the oldest seen was younger), so the purge need not look before then.
        self._no_expiry_before: dict[float, float] = {}
        self._connection: AbstractConnection | None = None
        self._connecting = asyncio.Lock()
        self._opening = asyncio.Lock()
        self._declaring = asyncio.Lock()
        self._publisher: Publisher | None = None
        self._opening_publisher = asyncio.Lock()
        self._admin: AbstractChannel | None = None
        self._consuming = Consumer(self)
        self._declared: set[str] = set()
        #: exchanges this broker declared for broadcasts (tests delete theirs).
        self.exchanges: set[str] = set()

    # -- connection and channels

    async def connect(self) -> None:
        await self._open()

    async def _open(self) -> AbstractConnection:
        connection = self._connection
        if connection is not None and not connection.is_closed:
            return connection
        async with self._connecting:
            if self._connection is not None and not self._connection.is_closed:
                return self._connection
            self._forget_connection()
            connection = await connect_plain(self.url, self.options, what="the RabbitMQ broker")
            self._connection = connection
            return connection

    def _forget_connection(self) -> None:
        # Everything of the old connection is gone with it (publishing and consuming have their own).
        self._connection = self._admin = None
        self._declared.clear()

    def _link_options(self, role: str) -> dict[str, Any]:
        """Connection options for one of the broker's own links: RabbitMQ shows it as
        ``<connection name> (role)``."""
        return role_options(self.options, role, "the RabbitMQ broker")

    async def _fresh_admin(self) -> AbstractChannel:
        """The open channel of the aiormq connection that declares, counts and purges."""
        import aiormq

        channel = self._admin
        if channel is not None and not channel.is_closed:
            return channel
        async with self._opening:  # concurrent callers share the one channel opened
            channel = self._admin
            if channel is not None and not channel.is_closed:
                return channel
            connection = await self._open()
            try:
                channel = await connection.channel(publisher_confirms=False)
            except (aiormq.exceptions.AMQPConnectionError, ConnectionError, OSError) as exc:
                self._forget_connection()
                raise OperationalError(f"the RabbitMQ broker lost its connection: {exc!r}") from exc
            self._admin = channel
            return channel

    async def _publishing(self) -> Publisher:
        """The open publishing link (with confirms); a new one when the last ended."""
        if self._publisher is None or self._publisher.is_closed:
            async with self._opening_publisher:  # concurrent callers share the one link opened
                if self._publisher is None or self._publisher.is_closed:
                    options = self._link_options("publisher")
                    publisher = await Publisher.open(self.url, options, what="the RabbitMQ broker")
                    publisher.closing.add_done_callback(functools.partial(self._publisher_ended, publisher))
                    self._publisher = publisher
        return self._publisher

    def _publisher_ended(self, publisher: Publisher, ended: asyncio.Future[BaseException | None]) -> None:
        # A connection lost (not a publish refused on a live server) may be a restarted RabbitMQ that
        # forgot non-durable declarations: declare again before the next publish.
        if ended.result() is not None and publisher.channel_error is None:
            self._declared.clear()

    @contextlib.asynccontextmanager
    async def _failing(self, what: str) -> AsyncIterator[None]:
        """Turn a lost connection into ``OperationalError`` (and forget the connection)."""
        import aiormq

        try:
            yield
        except (aiormq.exceptions.ChannelClosed, aiormq.exceptions.ChannelInvalidStateError) as exc:
            connection = self._connection
            if connection is None or connection.is_closed:
                self._forget_connection()
                raise OperationalError(f"the RabbitMQ broker could not {what}: {exc!r}") from exc
            raise
        except (TimeoutError, aiormq.exceptions.AMQPConnectionError, ConnectionError, OSError) as exc:
            self._forget_connection()
            raise OperationalError(f"the RabbitMQ broker could not {what}: {exc!r}") from exc

    # -- declarations

    async def declare(self, queue: str) -> None:
        await self._declare(queue)

    async def _declare(self, queue: str) -> None:
        """Declare ``queue`` as Celery does, its binding, and its binding to the delay scheme (once per
        connection)."""
        if queue in self._declared:
            return
        async with self._declaring:  # concurrent first publishes declare once
            if queue not in self._declared:
                await self._declare_now(queue)

    async def _declare_now(self, queue: str) -> None:
        spec = self.specs.get(queue)
        arguments = queue_arguments(spec, queue_type=self.queue_type, max_priority=self.max_priority)
        async with self._failing(f"declare queue {queue!r}"):
            if "" not in self._declared:  # the delay scheme, first on each connection
                await admin.declare_delays(self._fresh_admin, self.queue_type, self.delayed_prefix)
                self._declared.add("")
            await admin.declare_queue(await self._fresh_admin(), self._fresh_admin, queue, arguments)
            channel = await self._fresh_admin()
            if spec is not None and spec.exchange:
                await channel.exchange_declare(spec.exchange, exchange_type=spec.exchange_type, durable=True)
                await channel.queue_bind(queue, spec.exchange, routing_key=spec.key)
            await channel.queue_bind(queue, delivery_exchange(self.delayed_prefix), delay_pattern(queue))
        self._declared.add(queue)

    async def _declare_dead_letters(self) -> None:
        if self.dead_letter_queue in self._declared:
            return
        arguments: dict[str, Any] = {"x-queue-type": "quorum"} if self.queue_type == "quorum" else {}
        async with self._failing("declare the dead-letter queue"):
            channel = await self._fresh_admin()
            await admin.declare_queue(channel, self._fresh_admin, self.dead_letter_queue, arguments)
        self._declared.add(self.dead_letter_queue)

    # -- publishing

    def _route(self, queue: str, message: Message) -> tuple[str, str]:
        """The exchange and routing key for ``queue``, as Celery's ``send_task_message`` picks them: an
        explicit exchange, else the queue's topic or fanout exchange (with an explicit routing key, or
        the queue's), else the default exchange.

        Explicit means a ``delivery_info`` without ``redelivered``: set by the sender (``apply_async``
        options or a ``task_routes`` entry), never by a delivery, so a message a worker sends on again
        (a retry) goes to its queue, not to every queue its exchange reaches.
        """
        info = message.properties.get("delivery_info")
        explicit = info if isinstance(info, dict) and "redelivered" not in info else {}
        key = explicit.get("routing_key")
        key = key if isinstance(key, str) and key else None
        if explicit.get("exchange"):
            return str(explicit["exchange"]), key or queue
        spec = self.specs.get(queue)
        if spec is not None and spec.exchange and spec.exchange_type != "direct":
            return spec.exchange, key or spec.key
        return "", queue

    async def publish(self, queue: str, message: Message, *, not_before: float | None = None) -> None:
        await self._declare(queue)
        if not_before is not None and not_before > time.time():
            exchange = level_name(DELAY_LEVELS - 1, self.delayed_prefix)
            routing_key = wire.delay_routing_key(not_before, queue)
        else:
            exchange, routing_key = self._route(queue, message)
        await self._send(exchange, routing_key, message)

    async def publish_many(self, items: Sequence[tuple[str, Message, float | None]]) -> None:
        # Confirms are pipelined: every publish is on the wire before the first confirm is awaited.
        # Each ends before this returns; the first failure is raised (the others may be stored).
        outcomes = await asyncio.gather(
            *(self.publish(q, m, not_before=t) for q, m, t in items), return_exceptions=True
        )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome

    async def _send(self, exchange: str, routing_key: str, message: Message, **headers: Any) -> None:
        body, properties = wire.to_amqp(message, **headers)
        await self._put(exchange, routing_key, body, properties, mandatory=True)

    async def _put(
        self, exchange: str, routing_key: str, body: bytes, properties: Properties, *, mandatory: bool
    ) -> None:
        """Publish on the publishing link and wait for the confirm; errors as ``publish`` documents."""
        publisher: Publisher | None = None
        try:
            publisher = await self._publishing()
            await publisher.publish(exchange, routing_key, body, properties, mandatory=mandatory)
        except MessageUnroutable as exc:
            # An unroutable mandatory message comes back (basic.return) before its confirm.
            raise MessageUnroutable(
                f"RabbitMQ had no queue for a message to exchange {exchange!r} with routing key "
                f"{routing_key!r} ({exc}); declare the queue, or bind it to the exchange"
            ) from None
        except OperationalError as exc:
            refused = publisher.channel_error if publisher is not None else None
            if refused is not None and f"no exchange '{exchange}'" in refused[1]:
                raise MessageUnroutable(
                    f"RabbitMQ has no exchange {exchange!r} for a message with routing key "
                    f"{routing_key!r}; declare it (task_queues) or send to a queue ({refused[1]})"
                ) from None
            # A lost connection, or another publish's error closed the shared channel: sending again
            # (on a new link) works.
            raise OperationalError(
                f"the RabbitMQ broker could not publish to {routing_key!r}: {exc}"
            ) from exc
        except (TypeError, ValueError) as exc:
            # A header or property AMQP cannot carry: nothing was written, the link is unharmed.
            error = TypeError if isinstance(exc, TypeError) else ValueError
            raise error(f"the RabbitMQ broker cannot send a message to {routing_key!r}: {exc}") from None

    async def _replace(self, queue: str, delivered: Delivered, count: int) -> None:
        """Put a copy of a delivery on ``queue`` with ``count`` earlier deliveries, then ack it."""
        if not self._consuming.alive(delivered):
            return  # RabbitMQ gave it back already
        await self._send("", queue, wire.from_amqp(delivered, count), **{wire.COUNT: count})
        self._consuming.settle(delivered, ack=True)

    # -- consuming and settling

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if limit < 1:
            return []
        return await self._consuming.fetch(queues, limit, timeout)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        # Acks need no reply: written at once, one ``multiple`` ack when the batch is every unsettled
        # delivery up to its last tag. Closing flushes them before it says goodbye.
        self._consuming.ack(sorted(d.tag for d in deliveries if self._consuming.alive(d.extra["amqp"])))

    async def holds(self, deliveries: Sequence[Delivery]) -> list[bool]:
        # RabbitMQ gives a channel's unacked deliveries to other consumers only once the channel is gone
        # (missed heartbeats, consumer_timeout): a delivery is held while its link is the open one.
        return [self._consuming.alive(d.extra["amqp"]) for d in deliveries]

    async def reject(self, delivery: Delivery, *, requeue: bool, reason: str = "") -> None:
        delivered: Delivered = delivery.extra["amqp"]
        if not self._consuming.alive(delivered):
            return  # RabbitMQ requeued it when its channel died
        if not requeue:
            headers = {
                wire.DEAD_QUEUE: delivery.queue,
                wire.DEAD_REASON: reason,
                wire.DEAD_TIME: time.time(),
                wire.COUNT: delivery.deliveries,
            }
            await self._declare_dead_letters()
            message = wire.from_amqp(delivered, delivery.deliveries)
            await self._send("", self.dead_letter_queue, message, **headers)
            self._consuming.settle(delivered, ack=True)
            return
        if wire.counted_by_broker(delivered):
            self._consuming.settle(delivered, ack=False, requeue=True)  # the queue counts it
            return
        await self._replace(delivery.queue, delivered, delivery.deliveries)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        # A nack would mark the message redelivered (and count it); a copy with the count unchanged
        # does not. It goes to the back of its queue, and this consumer stops (until its next fetch)
        # so that the copy goes to another one: a worker releases what it will not start.
        if not deliveries:
            return
        await self._consuming.stop()
        await asyncio.gather(*(self._replace(d.queue, d.extra["amqp"], d.deliveries - 1) for d in deliveries))

    # -- queues

    async def _ready(self, queue: str) -> int:
        """Messages ready on ``queue`` (0 when it does not exist)."""
        async with self._failing(f"inspect queue {queue!r}"):
            return await admin.ready(await self._fresh_admin(), queue) or 0

    async def size(self, queue: str) -> int:
        async with self._failing(f"count the delayed messages of {queue!r}"):
            connection = await self._open()
            delayed = await admin.scan_delayed(connection, queue, self.delayed_prefix, purge=False)
        return await self._ready(queue) + delayed

    async def purge(self, queue: str) -> int:
        import aiormq

        async with self._failing(f"purge queue {queue!r}"):
            connection = await self._open()
            delayed = await admin.scan_delayed(connection, queue, self.delayed_prefix, purge=True)
            channel = await self._fresh_admin()
            try:
                ok = await channel.queue_purge(queue)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return delayed
        return int(ok.message_count or 0) + delayed

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        await self._declare_dead_letters()
        async with self._failing("read the dead letters"):
            connection = await self._open()
            return await admin.read_dead_letters(connection, self.dead_letter_queue, queue, limit)

    async def requeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        check_dead_letter_arguments(limit=limit)
        moved = 0

        def choose(letter: DeadLetter) -> bool:
            return bool(letter.queue) and letter.selected(queue, ids)

        def more() -> bool:
            return limit is None or moved < limit

        async def take(letter: DeadLetter) -> None:
            nonlocal moved
            assert letter.message is not None  # every AMQP message has one
            await self._declare(letter.queue)
            await self._send("", letter.queue, letter.message)
            moved += 1

        await self._declare_dead_letters()
        async with self._failing("requeue the dead letters"):
            connection = await self._open()
            return await admin.settle_dead_letters(connection, self.dead_letter_queue, choose, take, more)

    async def purge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        check_dead_letter_arguments(older_than=older_than, keep=keep)
        now = time.time()
        ages = older_than
        if queue is None and older_than is not None and now < self._no_expiry_before.get(older_than, 0.0):
            # Each look at the oldest letter takes it and gives it back, which a quorum queue does at
            # its back: look no more often than a letter can expire.
            if keep is None:
                return 0
            ages = None
        await self._declare_dead_letters()
        async with self._failing("purge the dead letters"):
            connection = await self._open()
            if keep is None:
                total = 0
            elif queue is None:
                total = await self._ready(self.dead_letter_queue)
            else:
                letters = await admin.read_dead_letters(
                    connection, self.dead_letter_queue, queue, admin.SCAN_MAX
                )
                total = len(letters)
            seen, kept = 0, now

            def choose(letter: DeadLetter) -> bool | None:
                nonlocal seen, kept
                if not letter.selected(queue):
                    return False
                seen += 1  # read oldest first: this letter has ``total - seen`` newer ones
                too_old = ages is not None and letter.time < now - ages
                too_many = keep is not None and total - seen >= keep
                drop = too_old or too_many or (ages is None and keep is None)
                if not drop and queue is None:
                    kept = letter.time
                    return None  # every later letter is newer still
                return drop

            def more() -> bool:
                # Past the letters too many, one kept only for its age need not be looked at.
                return not (queue is None and ages is None and keep is not None and seen >= total - keep)

            removed = await admin.settle_dead_letters(connection, self.dead_letter_queue, choose, more=more)
        if queue is None and ages is not None:
            self._no_expiry_before[ages] = kept + ages
        return removed

    # -- broadcast

    async def _broadcast_exchange(self, exchange: str) -> None:
        if "x:" + exchange in self._declared:
            return
        kind, durable = exchange_kind(exchange)
        async with self._failing(f"declare exchange {exchange!r}"):
            channel = await self._fresh_admin()
            await channel.exchange_declare(exchange, exchange_type=kind, durable=durable)
        self._declared.add("x:" + exchange)
        self.exchanges.add(exchange)

    async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
        await self._broadcast_exchange(exchange)
        body, properties = wire.to_amqp(message)
        properties.delivery_mode = message.properties.get("delivery_mode") or 1  # transient, as Celery's
        await self._put(exchange, routing_key, body, properties, mandatory=False)

    @contextlib.asynccontextmanager
    async def subscribe(self, exchange: str, pattern: str = "#") -> AsyncIterator[Subscription]:
        await self._broadcast_exchange(exchange)
        connection = await self._open()
        async with subscription(connection, exchange, pattern, self._failing) as listening:
            yield listening

    # -- closing

    async def close(self) -> None:
        connection = self._connection
        try:
            await self._consuming.close()  # gives back what it held through the publisher: first
        except Exception as exc:  # the link closes anyway, and RabbitMQ requeues what it held
            log.warning("could not give back unstarted messages uncounted on closing: %r", exc)
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            await publisher.close()
        self._forget_connection()
        if connection is not None and not connection.is_closed:
            with contextlib.suppress(Exception):
                await connection.close()
