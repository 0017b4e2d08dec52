"""Declaring, counting and reading on RabbitMQ: the broker's less frequent operations.

A declaration RabbitMQ refuses (PRECONDITION_FAILED: the queue exists with other arguments) closes the
channel it was sent on; these functions then log what differs and what to configure, reopen the
channel (``reopen``) and use the entity as it exists, so a mismatch never stops a worker.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from celeriac.amqp import _wire as wire
from celeriac.amqp._topology import DELAY_LEVELS, delay_levels, delivery_exchange, level_name
from celeriac.brokers.base import DeadLetter

if TYPE_CHECKING:
    from aiormq.abc import AbstractChannel, AbstractConnection

__all__ = ["declare_delays", "declare_queue", "read_dead_letters", "scan_delayed", "settle_dead_letters"]

log = logging.getLogger("celeriac.amqp.broker")

Reopen = Callable[[], Awaitable["AbstractChannel"]]

#: Most messages one read of a dead-letter or delay queue looks at.
SCAN_MAX = 100_000


async def declare_queue(
    channel: AbstractChannel, reopen: Reopen, queue: str, arguments: dict[str, Any]
) -> None:
    """Declare a durable queue with ``arguments``, or use it as it exists when RabbitMQ refuses them."""
    import aiormq

    try:
        await channel.queue_declare(queue, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        log.error(
            "RabbitMQ refused to declare queue %r with arguments %r: %s. The queue exists with other "
            "settings: configure the same (task_default_queue_type, task_queue_max_priority, "
            "queue_arguments in task_queues) or delete the queue. Using it as it is.",
            queue,
            arguments,
            exc.args[0] if exc.args else exc,
        )
        channel = await reopen()
        await channel.queue_declare(queue, passive=True)


async def declare_delays(reopen: Reopen, queue_type: str, prefix: str) -> None:
    """The delay scheme's exchanges, queues and bindings, as kombu declares them.

    A level queue declared by Celery with the other queue type works the same: it is used as it is.
    """
    import aiormq

    levels = delay_levels(queue_type, prefix)
    channel = await reopen()
    for level in levels:
        await channel.exchange_declare(level.name, exchange_type="topic", durable=True)
        try:
            await channel.queue_declare(level.name, durable=True, arguments=level.arguments)
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            log.info("using delay queue %r as it exists (%s)", level.name, exc)
            channel = await reopen()
            await channel.queue_declare(level.name, passive=True)
        await channel.queue_bind(level.name, level.name, routing_key=level.queue_pattern)
    await channel.exchange_declare(delivery_exchange(prefix), exchange_type="topic", durable=True)
    for level in levels:
        await channel.exchange_bind(level.next_exchange, level.name, routing_key=level.next_pattern)


async def ready(channel: AbstractChannel, queue: str) -> int | None:
    """Messages ready on ``queue``; None when it does not exist (the channel is closed then)."""
    import aiormq

    try:
        ok = await channel.queue_declare(queue, passive=True)
    except aiormq.exceptions.ChannelNotFoundEntity:
        return None
    return int(ok.message_count or 0)


async def scan_delayed(connection: AbstractConnection, queue: str, prefix: str, *, purge: bool) -> int:
    """Count (and with ``purge``, delete) the delayed messages bound for ``queue``.

    The delay queues are shared by every destination, so this reads them: each message is taken unacked
    and given back when the channel closes (keeping its place and its expiry), or acked when purged.
    It costs a round trip per delayed message of any queue: for operators, not for hot paths.
    """
    found = 0
    for level in range(DELAY_LEVELS - 1, -1, -1):
        name = level_name(level, prefix)
        channel = await connection.channel()
        try:
            waiting = await ready(channel, name)
            for _ in range(min(waiting or 0, SCAN_MAX)):
                got = await channel.basic_get(name, no_ack=False)
                if got.delivery_tag is None:
                    break
                if wire.strip_delay_prefix(got.routing_key or "") == queue:
                    found += 1
                    if purge:
                        await channel.basic_ack(got.delivery_tag)
        finally:
            if not channel.is_closed:
                await channel.close()
    return found


async def read_dead_letters(
    connection: AbstractConnection, dead_letter_queue: str, queue: str | None, limit: int
) -> list[DeadLetter]:
    """The dead letters (of ``queue``, or all), newest first: read unacked, all given back in place."""
    found: list[DeadLetter] = []
    channel = await connection.channel()
    try:
        for _ in range(SCAN_MAX):
            got = await channel.basic_get(dead_letter_queue, no_ack=False)
            if got.delivery_tag is None:
                break
            origin, reason, when = wire.dead_letter_info(got)
            if queue is None or origin == queue:
                message = wire.from_amqp(got, 1)
                message.properties.pop("delivery_info", None)
                found.append(DeadLetter(origin, reason, got.body, message, when))
    finally:
        if not channel.is_closed:
            await channel.close()
    # Newest first by the time each was set aside: on a quorum queue, letters given back after a read
    # (a requeue or purge that kept them) are behind newer ones.
    found.reverse()
    found.sort(key=lambda letter: letter.time, reverse=True)
    return found[:limit]


#: Told a dead letter (read oldest first) and its place among the letters read, says whether to take it
#: (True: ``take`` it, then ack it), leave it (False) or stop reading (None).
Choose = Callable[[DeadLetter], bool | None]


async def settle_dead_letters(
    connection: AbstractConnection,
    dead_letter_queue: str,
    choose: Choose,
    take: Callable[[DeadLetter], Awaitable[None]] | None = None,
    more: Callable[[], bool] = lambda: True,
) -> int:
    """Read the dead letters oldest first, unacked, and remove those ``choose`` picks, after ``take``
    (a republish, for a requeue) returned; the rest are given back when the channel closes. Reading
    stops before the next letter once ``more`` says False.

    A classic queue puts what is given back in its place; a quorum queue puts it at the back, so
    letters read and kept there move behind newer ones: ``more`` spares those that need no look.

    Returns:
        How many were taken.
    """
    taken = 0
    channel = await connection.channel()
    try:
        async for tag, letter in _letters(channel, dead_letter_queue, more):
            verdict = choose(letter)
            if verdict is None:
                break
            if verdict:
                if take is not None:
                    await take(letter)
                await channel.basic_ack(tag)
                taken += 1
    finally:
        if not channel.is_closed:
            await channel.close()
    return taken


async def _letters(
    channel: AbstractChannel, dead_letter_queue: str, more: Callable[[], bool]
) -> AsyncIterator[tuple[int, DeadLetter]]:
    for _ in range(SCAN_MAX):
        if not more():
            return
        got = await channel.basic_get(dead_letter_queue, no_ack=False)
        if got.delivery_tag is None:
            return
        origin, reason, when = wire.dead_letter_info(got)
        message = wire.from_amqp(got, 1)
        message.properties.pop("delivery_info", None)
        yield got.delivery_tag, DeadLetter(origin, reason, got.body, message, when)
