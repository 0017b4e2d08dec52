"""The RabbitMQ broker's consuming side: consumers pushing into a buffer that ``fetch`` hands out from.

Consuming runs on a connection of its own, our ``Link`` (``_amqp_link``): it reads deliveries straight from
the socket, a whole read at a time, at a fraction of what a general client costs per message; publishing
has a connection of its own too (``_amqp_publisher``), and declaring stays on the broker's aiormq one.

One channel holds a consumer per queue. Its prefetch is per consumer (quorum queues refuse a global
one) and is the broker's ``capacity`` (the worker sets it to its pool slots times prefetch multiplier), so
RabbitMQ never pushes a worker more than it could start; without one, the most the caller ever asked
to hold at once (deliveries held plus the fetch's limit). Consuming several queues, each consumer gets
an even share of ``capacity``, but never fewer than the pool's slots, so one busy queue still fills the
pool: the worker holds at most the larger of ``capacity`` and queues times slots. A prefetch applies to
consumers started after it, so raising it restarts them.

Delivery tags are only valid on the link that delivered them: a delivery whose link is not the current
one, or has ended, is never settled (RabbitMQ requeued it when that connection died).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING

from celeriac.amqp import _wire as wire
from celeriac.amqp._link import Delivered, Link
from celeriac.brokers.base import Delivery
from celeriac.exceptions import OperationalError

if TYPE_CHECKING:
    from celeriac.amqp.broker import AMQPBroker

__all__ = ["Consumer"]

log = logging.getLogger("celeriac.amqp.broker")

#: Idle loop turns after which a fetch that found deliveries stops collecting more.
_SPINS = 2
#: After starting consumers, how long a quiet spell ends the first burst (seconds).
_BURST = 0.01


class Consumer:
    """The consuming link, its consumers, their buffer, and which deliveries are handed out."""

    def __init__(self, broker: AMQPBroker) -> None:
        self.broker = broker
        self.link: Link | None = None
        self._opening = asyncio.Lock()
        self.tags: dict[str, str] = {}  # queue -> consumer tag
        self.queues: dict[str, str] = {}  # consumer tag -> queue
        self.buffers: dict[str, deque[Delivered]] = {}
        self.arrived = asyncio.Event()
        self.held: set[int] = set()  # delivery tags handed out and not settled
        self.pending: set[int] = set()  # every unsettled delivery tag (buffered, held, being recounted)
        self.prefetch = 0
        self._starting: str | None = None  # the queue whose consumer is being started

    def reset(self) -> None:
        """Forget everything of the link: it ended, and RabbitMQ requeued its deliveries."""
        self.link = None
        self.tags.clear()
        self.queues.clear()
        self.buffers.clear()
        self.held.clear()
        self.pending.clear()
        self.prefetch = 0
        self.arrived.set()

    def alive(self, delivered: Delivered) -> bool:
        """Whether a delivery's link is the current one and open (so it can be settled)."""
        return delivered.link is self.link and not delivered.link.is_closed

    def settled(self, tags: Sequence[int]) -> None:
        self.held.difference_update(tags)
        self.pending.difference_update(tags)

    def all_up_to(self, tags: list[int]) -> bool:
        """Whether sorted ``tags`` are every unsettled delivery up to the last (one ``multiple`` ack)."""
        return sum(1 for t in self.pending if t <= tags[-1]) == len(tags)

    # -- the link

    async def _link(self) -> Link:
        link = self.link
        if link is not None and not link.is_closed:
            return link
        async with self._opening:
            if self.link is not None and not self.link.is_closed:
                return self.link
            self.reset()
            link = await Link.open(
                self.broker.url,
                self.broker._link_options("consumer"),
                what="the RabbitMQ broker",
                on_delivery=self._arrive,
                on_batch=self.arrived.set,
                on_cancel=self._cancelled,
            )
            link.closing.add_done_callback(functools.partial(self._ended, link))
            self.link = link
            return link

    def _ended(self, link: Link, _: object) -> None:
        if link is self.link:
            self.reset()  # wakes a fetch waiting for deliveries, to report it

    def _arrive(self, delivered: Delivered) -> None:
        if delivered.link is not self.link:
            return
        queue = self.queues.get(delivered.consumer_tag)
        if queue is None and self._starting is not None:
            # Pushed in the same read as its consumer's ConsumeOk, before ``consume`` saw the tag.
            queue = self.queues[delivered.consumer_tag] = self._starting
        buffer = self.buffers.get(queue) if queue is not None else None
        if buffer is None:  # not expected: a cancelled consumer's deliveries come before its CancelOk
            delivered.link.nack(delivered.delivery_tag, requeue=True)
            return
        self.pending.add(delivered.delivery_tag)
        buffer.append(delivered)

    def _cancelled(self, tag: str) -> None:
        # RabbitMQ cancelled the consumer (its queue was deleted): the next fetch starts a new one.
        queue = self.queues.pop(tag, None)
        if queue is not None and self.tags.get(queue) == tag:
            del self.tags[queue]
        self.arrived.set()

    def _check(self) -> Link:
        link = self.link
        if link is None or link.is_closed:
            reason = link.closing.result() if link is not None and link.closing.done() else None
            self.reset()
            raise OperationalError(f"the RabbitMQ broker lost its consuming connection ({reason})")
        return link

    # -- fetching

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        started = await self.consume(queues, self._prefetch(queues) or len(self.held) + limit)
        deadline = time.monotonic() + max(timeout, 0.0)
        settled_wait = False
        while True:
            self.arrived.clear()  # before taking: an arrival during the take must wake the wait
            found = await self.take(queues, limit)
            if found:
                # A consumer just started gets the queue's first burst in several segments, spaced by
                # RabbitMQ's own pace: collect it (so the first batch is the highest priorities).
                linger = _BURST if started else 0.0
                return found + await self._more(queues, limit - len(found), linger)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                # A consumer just started may not have had its first messages pushed yet: when the
                # queue has some ready, wait for them a little (once) rather than report it empty.
                if settled_wait or not await self._any_ready(queues):
                    return []
                settled_wait, remaining = True, 0.5
            await self._wait(remaining)

    def _prefetch(self, queues: Sequence[str]) -> int | None:
        """Each consumer's prefetch: its share of the broker's capacity, at least the pool's slots."""
        capacity, count = self.broker.capacity, len(dict.fromkeys(queues))
        if not capacity or count <= 1:
            return capacity
        return max(self.broker.slots or 1, -(-capacity // count))

    async def _more(self, queues: Sequence[str], limit: int, linger: float = 0.0) -> list[Delivery]:
        """What arrives while the loop turns a few times (the rest of a read RabbitMQ wrote in several
        segments), or, with ``linger``, until nothing arrived for that long: a fetch does not otherwise
        hold back what it has for what may come."""
        found: list[Delivery] = []
        idle = 0
        while len(found) < limit and idle < _SPINS:
            self.arrived.clear()
            if linger:
                arrived = await self._wait(linger)
            else:
                await asyncio.sleep(0)
                arrived = self.arrived.is_set()
            if arrived:
                idle = 0
                found += await self.take(queues, limit - len(found))
            else:
                idle = _SPINS if linger else idle + 1
        return found

    async def _wait(self, timeout: float) -> bool:
        """Wait for a delivery; the link's end is raised as ``OperationalError``."""
        self._check()
        try:
            # Not wait_for: that runs the wait in a task of its own, a loop turn more per wake-up.
            async with asyncio.timeout(timeout):
                await self.arrived.wait()
        except TimeoutError:
            return False
        self._check()
        return True

    async def consume(self, queues: Sequence[str], prefetch: int) -> bool:
        """Make sure every queue has a consumer, with a prefetch of at least ``prefetch``; whether any
        consumer was started."""
        link = self.link
        current = link is not None and not link.is_closed
        if current and prefetch <= self.prefetch and all(q in self.tags for q in queues):
            return False
        broker = self.broker
        async with broker._failing("consume"):
            link = await self._link()
            missing = [q for q in dict.fromkeys(queues) if q not in self.tags]
            if prefetch > self.prefetch:
                for tag in list(self.tags.values()):
                    await link.cancel(tag)
                missing = list(dict.fromkeys([*self.tags, *missing]))
                self.tags.clear()
                self.queues.clear()
                self.prefetch = max(prefetch, 1)
                await link.qos(min(self.prefetch, 65535))
            for queue in missing:
                await broker._declare(queue)
                self.buffers.setdefault(queue, deque())
                self._starting = queue
                try:
                    tag = await link.consume(queue)
                finally:
                    self._starting = None
                self.tags[queue] = tag
                self.queues[tag] = queue
        return True

    async def stop(self) -> None:
        """Cancel the consumers; what they pushed stays in the buffer, still this consumer's."""
        link = self.link
        tags, self.tags = list(self.tags.values()), {}
        if link is None or link.is_closed:
            return
        async with self.broker._failing("stop consuming"):
            for tag in tags:
                await link.cancel(tag)  # returns once every delivery pushed before it arrived

    async def take(self, queues: Sequence[str], limit: int) -> list[Delivery]:
        """Up to ``limit`` buffered deliveries, round-robin over ``queues``; redeliveries from classic
        queues are replaced by counted copies first (which arrive later)."""
        found: list[Delivery] = []
        recount: list[tuple[str, Delivered]] = []
        buffers = [(q, self.buffers[q]) for q in dict.fromkeys(queues) if self.buffers.get(q)]
        while buffers and len(found) < limit:
            for queue, buffer in list(buffers):
                if not buffer:
                    buffers.remove((queue, buffer))
                    continue
                delivered = buffer.popleft()
                if not self.alive(delivered):
                    continue  # RabbitMQ gave it back when its link died
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

    def _delivery(self, queue: str, delivered: Delivered) -> Delivery:
        tag = delivered.delivery_tag
        self.held.add(tag)
        deliveries = wire.deliveries_of(delivered)
        return Delivery(
            tag=tag,
            queue=queue,
            message=None if delivered.error else wire.from_amqp(delivered, deliveries),
            deliveries=deliveries,
            error=delivered.error,
            raw=delivered.body,
            extra={"amqp": delivered},
        )

    # -- settling

    def ack(self, tags: list[int]) -> None:
        """Ack sorted ``tags`` of the current link: one ``multiple`` ack when they are every unsettled
        delivery up to the last, else one frame each (written together; acks need no reply)."""
        link = self.link
        if link is None or link.is_closed or not tags:
            return
        contiguous = self.all_up_to(tags)
        self.settled(tags)
        if contiguous:
            link.ack(tags[-1], multiple=True)
            return
        for tag in tags:
            link.ack(tag)

    def settle(self, delivered: Delivered, *, ack: bool, requeue: bool = False) -> None:
        """Ack or nack one delivery, unless its link ended (RabbitMQ requeued it then)."""
        if not self.alive(delivered):
            log.debug(
                "not settling delivery %d of a link that ended; RabbitMQ requeued it", delivered.delivery_tag
            )
            return
        self.settled([delivered.delivery_tag])
        if ack:
            delivered.link.ack(delivered.delivery_tag)
        else:
            delivered.link.nack(delivered.delivery_tag, requeue=requeue)

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

    async def close(self) -> None:
        """Give back what was never handed out, then end the link (RabbitMQ requeues the rest)."""
        link = self.link
        if link is None:
            return
        try:
            if not link.is_closed:
                await self.give_back()
                await link.flush()  # the acks of the copies before the goodbye
        finally:
            self.reset()
            await link.close()

    async def _any_ready(self, queues: Sequence[str]) -> bool:
        if self.prefetch - len(self.held) <= 0:
            return False
        for queue in dict.fromkeys(queues):
            if await self.broker._ready(queue) > 0:
                return True
        return False
