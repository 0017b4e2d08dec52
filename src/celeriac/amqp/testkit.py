"""The RabbitMQ broker's kit for the contract suites (``celeriac.testing.contract``).

RabbitMQ pushes messages to consumers, and a consumer's connection is its lease: freezing a broker drops
its sockets without an AMQP goodbye, as a killed process does, and RabbitMQ gives its deliveries back.
``clean`` deletes the test's queues and the broadcast exchanges its brokers declared.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from celeriac.amqp._codec import Properties
from celeriac.amqp.broker import AMQPBroker
from celeriac.amqp.client import connect_plain
from celeriac.brokers import Broker
from celeriac.testing.contract.kit import BrokerKit

__all__ = ["AMQPBrokerKit", "delete_amqp"]

#: Exchanges every test shares (Celery's remote control and events); a test's own are deleted after it.
SHARED_EXCHANGES = frozenset({"celery.pidbox", "reply.celery.pidbox", "celeryev"})


class AMQPBrokerKit(BrokerKit):
    """RabbitMQ brokers; ``clean`` deletes the test's queues, its dead-letter queue (option
    ``dead_letter_queue`` of ``defaults``) and the broadcast exchanges its brokers declared."""

    broadcasts = True
    pushes = True
    enveloped = False

    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Publish ``payload`` as a bare body, no headers or properties: what a foreign producer may send."""
        assert isinstance(broker, AMQPBroker)
        await broker.declare(queue)
        publisher = await broker._publishing()
        await publisher.publish("", queue, payload, Properties(), mandatory=False)

    def freeze(self, broker: Broker) -> None:
        """Drop the broker's consuming, publishing and declaring connections at once (a reset, no goodbye)."""
        assert isinstance(broker, AMQPBroker)
        for link in (broker._consuming.link, broker._publisher):
            if link is not None and link._transport is not None:
                link._transport.abort()
        if broker._connection is not None:
            _abort(broker._connection)

    def clean(self) -> None:
        """Delete the test's queues, its dead-letter queue and its brokers' own broadcast exchanges."""
        exchanges = {name for broker in self.brokers for name in _exchanges(broker)} - SHARED_EXCHANGES
        queues = [*self.queues]
        if self.defaults.get("dead_letter_queue"):
            queues.append(self.defaults["dead_letter_queue"])
        asyncio.run(delete_amqp(self.url, queues, exchanges))


def _exchanges(broker: Broker) -> set[str]:
    assert isinstance(broker, AMQPBroker)
    return broker.exchanges


def _abort(connection: Any) -> None:
    # aiormq keeps its socket's writer only in the frame of its writer task.
    frame = connection._writer_task.get_coro().cr_frame
    frame.f_locals["writer"].transport.abort()


async def delete_amqp(url: str, queues: Iterable[str], exchanges: Iterable[str]) -> None:
    """Delete these queues and exchanges on the RabbitMQ server at ``url``; missing ones are skipped.

    A missing queue or exchange closes the channel that named it, so each gets a fresh channel.
    """
    connection = await connect_plain(url, {}, what="the test")
    try:
        names = [*((q, True) for q in queues), *((x, False) for x in sorted(exchanges))]
        for name, is_queue in names:
            channel = await connection.channel()
            try:
                if is_queue:
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            except Exception:  # already gone
                continue
            await channel.close()
    finally:
        await connection.close()
