"""Broadcast subscriptions on RabbitMQ: an exclusive, auto-delete queue bound to the exchange.

The queue is named and declared as Celery names and declares its own (``<tag>.celery.pidbox`` with a
5-minute message TTL and a 10 s expiry; ``celeryev.<tag>`` with 5 s and 60 s), on a channel of its
own, consumed without acks: broadcasts are fire and forget, as on Celery's transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from celeriac.amqp import _wire as wire
from celeriac.amqp._topology import broadcast_queue, exchange_kind
from celeriac.brokers.fanout import Subscription
from celeriac.protocol.message import Message

if TYPE_CHECKING:
    from aiormq.abc import AbstractConnection, DeliveredMessage

__all__ = ["subscription"]


class _Broadcasts(Subscription):
    """A subscription fed decoded messages (AMQP needs no envelope) rather than envelopes."""

    def __init__(self, exchange: str) -> None:
        super().__init__(exchange)
        self._messages: asyncio.Queue[Message | BaseException] = asyncio.Queue()

    def feed_message(self, message: Message) -> None:
        self._messages.put_nowait(message)

    def fail(self, error: BaseException) -> None:
        self._messages.put_nowait(error)

    async def __anext__(self) -> Message:
        item = await self._messages.get()
        if isinstance(item, BaseException):
            self._messages.put_nowait(item)  # every later read ends the same way
            raise item
        return item


@contextlib.asynccontextmanager
async def subscription(
    connection: AbstractConnection,
    exchange: str,
    pattern: str,
    failing: Callable[[str], contextlib.AbstractAsyncContextManager[None]],
) -> AsyncIterator[Subscription]:
    """Listen to ``exchange`` with routing-key ``pattern`` until the ``async with`` body ends."""
    listening = _Broadcasts(exchange)
    name, arguments = broadcast_queue(exchange, uuid.uuid4().hex)
    kind, _ = exchange_kind(exchange)

    async def arrived(delivered: DeliveredMessage) -> None:
        listening.feed_message(wire.from_amqp(delivered, 1))

    def lost(closing: asyncio.Future[Any]) -> None:
        error = closing.exception() if not closing.cancelled() else None
        listening.fail(ConnectionError(f"the subscription to {exchange!r} ended: {error!r}"))

    async with failing(f"subscribe to {exchange!r}"):
        channel = await connection.channel()
        await channel.queue_declare(name, exclusive=True, auto_delete=True, arguments=arguments)
        # A fanout exchange ignores the routing key; a direct one takes the pattern as the key.
        await channel.queue_bind(name, exchange, routing_key="" if kind == "fanout" else pattern)
        await channel.basic_consume(name, arrived, no_ack=True)
    channel.closing.add_done_callback(lost)
    try:
        yield listening
    finally:
        channel.closing.remove_done_callback(lost)
        if not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()  # the queue goes with it (exclusive)
