"""The RabbitMQ broker's consuming side: consumers pushing into a buffer that ``fetch`` hands out from.

One channel holds a consumer per queue. Its prefetch is per consumer (quorum queues refuse a global
one) and is the broker's ``capacity`` (the worker sets it to its pool slots times prefetch multiplier), so
RabbitMQ never pushes a worker more than it could start; without one, the most the caller ever asked
to hold at once (deliveries held plus the fetch's limit). A prefetch applies to consumers started after
it, so raising it restarts them.

Delivery tags are only valid on the channel that delivered them: every delivery keeps its channel, and
a delivery whose channel is not the current consumer channel is never acked (RabbitMQ requeued it
when the channel died, and acking an unknown tag would close the new channel).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.brokers import _amqp_wire as wire
from celeriac.brokers.base import Delivery
from celeriac.exceptions import OperationalError

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage

    from celeriac.brokers.amqp import AMQPBroker

__all__ = ["Consumer"]

#: Idle loop turns after which a fetch that found messages stops collecting frames aiormq has already
#: read (pushes arrive one after another, each through a few loop steps); it never waits on the network.
_SPINS = 4


class Consumer:
    """Consumers, their buffer, and which deliveries are handed out (for one broker connection)."""

    def __init__(self, broker: AMQPBroker) -> None:
        self.broker = broker
        self.tags: dict[str, str] = {}  # queue -> consumer tag
        self.buffers: dict[str, deque[DeliveredMessage]] = {}
        self.arrived = asyncio.Event()
        self.held: set[int] = set()  # delivery tags handed out and not settled
        self.pending: set[int] = set()  # every unsettled delivery tag (buffered, held, being recounted)
        self.prefetch = 0

    def reset(self) -> None:
        """Forget everything: the channel died, and RabbitMQ requeued its deliveries."""
        self.tags.clear()
        self.buffers.clear()
        self.held.clear()
        self.pending.clear()
        self.prefetch = 0
        self.arrived.set()

    def alive(self, delivered: DeliveredMessage) -> bool:
        """Whether a delivery's channel is the current consumer channel (so it can be settled)."""
        return delivered.channel is self.broker._consumer and not delivered.channel.is_closed

    def settled(self, tags: Sequence[int]) -> None:
        self.held.difference_update(tags)
        self.pending.difference_update(tags)

    def all_up_to(self, tags: list[int]) -> bool:
        """Whether sorted ``tags`` are every unsettled delivery up to the last (one ``multiple`` ack)."""
        return sum(1 for t in self.pending if t <= tags[-1]) == len(tags)

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        await self.consume(queues, self.broker.capacity or len(self.held) + limit)
        deadline = time.monotonic() + max(timeout, 0.0)
        settled_wait = False
        while True:
            self.arrived.clear()  # before taking: an arrival during the take must wake the wait
            found = await self.take(queues, limit)
            if found:
                return found + await self._more(queues, limit - len(found))
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # A consumer just started may not have had its first messages pushed yet: when the
                # queue has some ready, wait for them a little (once) rather than report it empty.
                if settled_wait or not await self._any_ready(queues):
                    return []
                settled_wait, remaining = True, 0.5
            await self._wait(remaining)

    async def _wait(self, timeout: float) -> bool:
        """Wait for a delivery; the connection's end is raised as ``OperationalError``."""
        self._check()
        try:
            await asyncio.wait_for(self.arrived.wait(), timeout)
        except TimeoutError:
            return False
        self._check()
        return True

    def _check(self) -> None:
        connection = self.broker._connection
        if connection is None or connection.is_closed:
            self.broker._forget_connection()
            raise OperationalError("the RabbitMQ broker lost its connection while fetching")

    async def _more(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        """Deliveries already read from the socket but not yet turned into deliveries: a few loop turns,
        no waiting on the network (a fetch never holds back what it has for what may come)."""
        found: list[Delivery] = []
        idle = 0
        while len(found) < limit and idle < _SPINS:
            await asyncio.sleep(0)
            if self.arrived.is_set():
                idle = 0
                self.arrived.clear()
                found += await self.take(queues, limit - len(found))
            else:
                idle += 1
        return found

    async def consume(self, queues: Sequence[str], prefetch: int) -> None:
        """Make sure every queue has a consumer, with a prefetch of at least ``prefetch``."""
        channel = self.broker._consumer
        current = channel is not None and not channel.is_closed
        if current and prefetch <= self.prefetch and all(q in self.tags for q in queues):
            return
        broker = self.broker
        async with broker._failing("consume"):
            channel = await broker._channel("_consumer")  # a new one forgets the old consumers
            missing = [q for q in dict.fromkeys(queues) if q not in self.tags]
            if prefetch > self.prefetch:
                for tag in self.tags.values():
                    await channel.basic_cancel(tag)
                missing = list(dict.fromkeys([*self.tags, *missing]))
                self.tags.clear()
                self.prefetch = max(prefetch, 1)
                await channel.basic_qos(prefetch_count=min(self.prefetch, 65535), global_=False)
            for queue in missing:
                await broker._declare(queue)
                buffer = self.buffers.setdefault(queue, deque())

                async def arrived(delivered: DeliveredMessage, buffer: deque[Any] = buffer) -> None:
                    if delivered.channel is self.broker._consumer:
                        self.pending.add(delivered.delivery_tag or 0)
                        buffer.append(delivered)
                        self.arrived.set()

                ok = await channel.basic_consume(queue, arrived)
                assert ok.consumer_tag is not None
                self.tags[queue] = ok.consumer_tag

    async def stop(self) -> None:
        """Cancel the consumers; what they pushed stays in the buffer, still this consumer's."""
        channel = self.broker._consumer
        tags, self.tags = list(self.tags.values()), {}
        if channel is None or channel.is_closed:
            return
        async with self.broker._failing("stop consuming"):
            for tag in tags:
                await channel.basic_cancel(tag)
        for _ in range(4):  # deliveries pushed before the cancel still pass through aiormq's tasks
            await asyncio.sleep(0)

    async def take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        """Up to ``limit`` buffered deliveries, round-robin over ``queues``; redeliveries from classic
        queues are replaced by counted copies first (which arrive later)."""
        found: list[Delivery] = []
        recount: list[tuple[str, DeliveredMessage]] = []
        buffers = [(q, self.buffers[q]) for q in dict.fromkeys(queues) if self.buffers.get(q)]
        while buffers and len(found) < limit:
            for queue, buffer in list(buffers):
                if not buffer:
                    buffers.remove((queue, buffer))
                    continue
                delivered = buffer.popleft()
                if not self.alive(delivered):
                    continue  # RabbitMQ gave it back when its channel died
                if delivered.redelivered and not wire.counted_by_broker(delivered):
                    recount.append((queue, delivered))
                    continue
                found.append(self._delivery(queue, delivered))
                if len(found) >= limit:
                    break
        if recount:
            # A classic queue only flags a redelivery: the copy carries the count (the earlier
            # deliveries and the one that died) and replaces the original once RabbitMQ has it.
            await asyncio.gather(*(self.broker._replace(q, d, wire.deliveries_of(d)) for q, d in recount))
        return found

    def _delivery(self, queue: str, delivered: DeliveredMessage) -> Delivery:
        tag = delivered.delivery_tag or 0
        self.held.add(tag)
        deliveries = wire.deliveries_of(delivered)
        return Delivery(
            tag=tag,
            queue=queue,
            message=wire.from_amqp(delivered, deliveries),
            deliveries=deliveries,
            raw=delivered.body,
            extra={"amqp": delivered},
        )

    async def give_back(self) -> None:
        """Return what was pushed but never handed out, uncounted: a copy with the count it had (a
        redelivery not yet counted is counted, as ``take`` would)."""
        await self.stop()
        for queue, buffer in list(self.buffers.items()):
            while buffer:
                delivered = buffer.popleft()
                if not self.alive(delivered):
                    continue
                count = wire.deliveries_of(delivered)
                if not delivered.redelivered or wire.counted_by_broker(delivered):
                    count -= 1
                await self.broker._replace(queue, delivered, count)

    async def _any_ready(self, queues: Sequence[str]) -> bool:
        if self.prefetch - len(self.held) <= 0:
            return False
        for queue in dict.fromkeys(queues):
            if await self.broker._ready(queue) > 0:
                return True
        return False
