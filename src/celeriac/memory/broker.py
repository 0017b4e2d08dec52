"""An in-process broker for tests and eager use.

Every ``MemoryBroker`` with the same URL in one process shares one store (``memory://`` and
``memory://name`` are different stores), so a client on one thread or event loop and an in-process
worker on another see the same queues. Messages are kept in kombu's JSON envelope, as the SQL and
Redis brokers keep them, so a message that could not travel on a real broker fails here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import threading
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac._wakeup import Wakeup
from celeriac.brokers.base import Broker, DeadLetter, Delivery, check_dead_letter_arguments, doomed
from celeriac.brokers.delivery import priority_of, read_dead_letter, read_delivery
from celeriac.brokers.fanout import Subscription, matches
from celeriac.memory._stores import Stores
from celeriac.protocol.envelope import to_envelope
from celeriac.protocol.message import Message

__all__ = ["MemoryBroker", "reset"]


_READY, _DELAYED, _LEASED = range(3)
_Heap = list[tuple[int, float, int]]


@dataclass(slots=True, eq=False)
class _Listener:
    loop: asyncio.AbstractEventLoop
    subscription: Subscription
    pattern: str


@dataclass(slots=True, eq=False)
class _Entry:
    id: int
    queue: str
    payload: bytes
    priority: int
    not_before: float  # unix seconds; publish time unless delayed, so a queue is FIFO by due time
    state: int
    deliveries: int = 0
    owner: str | None = None
    lease_until: float = 0.0  # time.monotonic()


class _Store:
    """The queues behind one memory URL. Every method must be called with ``lock`` held."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wakeup = Wakeup()
        self.entries: dict[int, _Entry] = {}
        self.ready: dict[str, _Heap] = {}  # queue -> heap of (priority, not_before, id)
        self.delayed: list[tuple[float, int]] = []  # heap of (not_before, id)
        self.leased: dict[int, _Entry] = {}
        self.dead: list[DeadLetter] = []
        self.listeners: set[_Listener] = set()
        self.next_reclaim = math.inf  # no lease can run out before this monotonic time
        self._ids = itertools.count(1)

    def add(self, queue: str, payload: bytes, priority: int, not_before: float | None) -> None:
        now = time.time()
        due = now if not_before is None else not_before
        entry = _Entry(next(self._ids), queue, payload, priority, due, _DELAYED)
        self.entries[entry.id] = entry
        if entry.not_before > now:
            heapq.heappush(self.delayed, (entry.not_before, entry.id))
        else:
            self.make_ready(entry)

    def make_ready(self, entry: _Entry) -> None:
        self.leased.pop(entry.id, None)
        entry.state, entry.owner = _READY, None
        heapq.heappush(self.ready.setdefault(entry.queue, []), (entry.priority, entry.not_before, entry.id))

    def remove(self, entry: _Entry) -> None:
        self.leased.pop(entry.id, None)
        del self.entries[entry.id]

    def take(self, queues: Sequence[str], limit: int, owner: str, lease: float) -> tuple[list[_Entry], float]:
        """Lease up to ``limit`` due entries; also returns when (monotonic) something may next be due."""
        self._promote()
        self._reclaim()
        heaps = [self.ready[q] for q in dict.fromkeys(queues) if q in self.ready]
        taken: list[_Entry] = []
        until = time.monotonic() + lease
        while len(taken) < limit:
            best: _Heap | None = None
            for heap in heaps:
                while heap and self._stale(heap[0][2]):
                    heapq.heappop(heap)
                if heap and (best is None or heap[0] < best[0]):
                    best = heap
            if best is None:
                break
            entry = self.entries[heapq.heappop(best)[2]]
            entry.state, entry.owner, entry.lease_until = _LEASED, owner, until
            entry.deliveries += 1
            self.leased[entry.id] = entry
            taken.append(entry)
        if taken:
            self.next_reclaim = min(self.next_reclaim, until)
        wake = self.next_reclaim
        if self.delayed:
            wake = min(wake, time.monotonic() + self.delayed[0][0] - time.time())
        return taken, wake

    def owned(self, tags: Sequence[Any], owner: str) -> Iterator[_Entry]:
        for tag in tags:
            entry = self.leased.get(tag)
            if entry is not None and entry.owner == owner:
                yield entry

    def waiting(self, queue: str) -> list[_Entry]:
        self._promote()
        self._reclaim()
        return [e for e in self.entries.values() if e.queue == queue and e.state != _LEASED]

    def _stale(self, entry_id: int) -> bool:
        entry = self.entries.get(entry_id)
        return entry is None or entry.state != _READY

    def _promote(self) -> None:
        now = time.time()
        while self.delayed and self.delayed[0][0] <= now:
            entry = self.entries.get(heapq.heappop(self.delayed)[1])
            if entry is not None and entry.state == _DELAYED:
                self.make_ready(entry)

    def _reclaim(self) -> None:
        now = time.monotonic()
        if now < self.next_reclaim:
            return
        self.next_reclaim = math.inf
        for entry in list(self.leased.values()):
            if entry.lease_until < now:
                self.make_ready(entry)  # its consumer stopped renewing: it died or froze
            else:
                self.next_reclaim = min(self.next_reclaim, entry.lease_until)


_stores: Stores[_Store] = Stores(_Store)


def reset(url: str | None = None) -> None:
    """Forget every message of the memory store at ``url`` (of every store when None).

    Brokers still open on a forgotten store keep using it; new ones get a fresh store.
    """
    _stores.reset(url)


class MemoryBroker(Broker):
    """A broker whose queues live in this process's memory.

    Options:
        lease_seconds: how long a fetched message stays this broker's without a heartbeat (default 30);
            the heartbeat renews it every fifth of that while the broker is alive.
    """

    schemes = ("memory",)

    def __init__(self, url: str = "memory://", *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.lease_seconds = float(self.options.get("lease_seconds", 30.0))
        self._store = _stores.get(url)
        self._owner = uuid.uuid4().hex
        self._held: set[int] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def publish(self, queue: str, message: Message, *, not_before: float | None = None) -> None:
        payload = to_envelope(message, routing_key=queue)
        store = self._store
        with store.lock:
            store.add(queue, payload, priority_of(message), not_before)
        store.wakeup.notify()

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if limit < 1:
            return []
        store = self._store
        deadline = time.monotonic() + max(timeout, 0.0)
        # Every other broker yields to the loop on its way to the data; without this a consumer
        # looping over a full queue would starve every other task of its loop.
        await asyncio.sleep(0)
        while True:
            with store.wakeup.armed() as woken:
                with store.lock:
                    taken, wake = store.take(queues, limit, self._owner, self.lease_seconds)
                    found = [(e.id, e.queue, e.payload, e.deliveries) for e in taken]
                if found:
                    self._hold(e[0] for e in found)
                    return [read_delivery(*e) for e in found]
                now = time.monotonic()
                if now >= deadline:
                    return []
                await asyncio.wait((woken,), timeout=max(min(deadline, wake) - now, 0.0))

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        store = self._store
        with store.lock:
            for entry in list(store.owned([d.tag for d in deliveries], self._owner)):
                store.remove(entry)
        self._held.difference_update(d.tag for d in deliveries)

    async def holds(self, deliveries: Sequence[Delivery]) -> list[bool]:
        store = self._store
        until = time.monotonic() + self.lease_seconds
        with store.lock:
            mine = list(store.owned([d.tag for d in deliveries], self._owner))
            for entry in mine:
                entry.lease_until = until
        kept = {entry.id for entry in mine}
        self._held.difference_update(d.tag for d in deliveries if d.tag not in kept)
        return [d.tag in kept for d in deliveries]

    async def reject(self, delivery: Delivery, *, requeue: bool, reason: str = "") -> None:
        store = self._store
        with store.lock:
            for entry in list(store.owned([delivery.tag], self._owner)):
                if requeue:
                    store.make_ready(entry)
                else:
                    store.remove(entry)
                    store.dead.append(read_dead_letter(entry.queue, reason, entry.payload, time.time()))
        self._held.discard(delivery.tag)
        if requeue:
            store.wakeup.notify()

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        store = self._store
        with store.lock:
            for entry in list(store.owned([d.tag for d in deliveries], self._owner)):
                entry.deliveries -= 1
                store.make_ready(entry)
        self._held.difference_update(d.tag for d in deliveries)
        store.wakeup.notify()

    async def purge(self, queue: str) -> int:
        store = self._store
        with store.lock:
            gone = store.waiting(queue)
            for entry in gone:
                store.remove(entry)
        return len(gone)

    async def size(self, queue: str) -> int:
        with self._store.lock:
            return len(self._store.waiting(queue))

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        with self._store.lock:
            found = [d for d in reversed(self._store.dead) if queue is None or d.queue == queue]
        return found[:limit]

    async def requeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        check_dead_letter_arguments(limit=limit)
        store = self._store
        with store.lock:  # the move is one step under the lock: never in both places, never in neither
            chosen = [d for d in store.dead if d.selected(queue, ids)][:limit]
            for letter in chosen:
                priority = priority_of(letter.message) if letter.message is not None else 0
                store.add(letter.queue, letter.raw, priority, None)
            gone = {id(d) for d in chosen}
            store.dead = [d for d in store.dead if id(d) not in gone]
        if chosen:
            store.wakeup.notify()
        return len(chosen)

    async def purge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        check_dead_letter_arguments(older_than=older_than, keep=keep)
        store = self._store
        with store.lock:
            chosen = [d for d in reversed(store.dead) if d.selected(queue)]
            drop = doomed([d.time for d in chosen], older_than=older_than, keep=keep, now=time.time())
            gone = {id(d) for d, dropped in zip(chosen, drop, strict=True) if dropped}
            store.dead = [d for d in store.dead if id(d) not in gone]
        return len(gone)

    async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
        payload = to_envelope(message, routing_key=routing_key, exchange=exchange)
        with self._store.lock:
            listeners = [
                listener
                for listener in self._store.listeners
                if listener.subscription.exchange == exchange and matches(listener.pattern, routing_key)
            ]
        for listener in listeners:
            with contextlib.suppress(RuntimeError):  # its loop has closed
                listener.loop.call_soon_threadsafe(listener.subscription.feed, payload)

    @contextlib.asynccontextmanager
    async def subscribe(self, exchange: str, pattern: str = "#") -> AsyncIterator[Subscription]:
        listener = _Listener(asyncio.get_running_loop(), Subscription(exchange), pattern)
        with self._store.lock:
            self._store.listeners.add(listener)
        try:
            yield listener.subscription
        finally:
            with self._store.lock:
                self._store.listeners.discard(listener)

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait((self._heartbeat,))
            self._heartbeat = None
        store = self._store
        with store.lock:
            for entry in list(store.owned(list(self._held), self._owner)):
                store.make_ready(entry)
        self._held.clear()
        store.wakeup.notify()

    def _hold(self, tags: Iterator[int]) -> None:
        self._held.update(tags)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="celeriac-memory-lease-heartbeat")

    async def _beat(self) -> None:
        # Renewing keeps a long task's message ours; if this loop dies the leases run out and another
        # consumer takes the messages, just as when a worker process dies on a real broker.
        while True:
            await asyncio.sleep(self.lease_seconds / 5)
            if not self._held:
                return
            store = self._store
            with store.lock:
                until = time.monotonic() + self.lease_seconds
                for entry in store.owned(list(self._held), self._owner):
                    entry.lease_until = until
