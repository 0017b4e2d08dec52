"""A broker on Redis, laid out as kombu lays it out, with a reliable fetch.

Key layout (every key starts with the ``global_keyprefix`` option, kombu's, default ""):

* ``<queue>``: a list of kombu JSON envelopes, published with LPUSH and taken from the right (FIFO),
  exactly as Celery does. Priorities go to ``<queue>\\x06\\x16<step>`` for a step above 0 (kombu's
  ``priority_steps``, default 0, 3, 6, 9; 0 is the plain list and is taken first). Fetch reads the
  lists of every step from 0 to 9, so messages from producers with any kombu step setting are seen.
* ``celeriac.processing.<consumer id>``: a hash of what one consumer holds, field = delivery tag,
  value = ``["<list>", deliveries]\\n<envelope>``.
* ``celeriac.heartbeat.<consumer id>``: set with an expiry of ``lease_seconds`` while the consumer
  lives; ``celeriac.consumers``: the set of consumer ids that may hold messages.
* ``celeriac.deliveries``: how often each message (by SHA-1 of its envelope) was handed out; only
  messages handed out and not yet acked, dead-lettered or purged have an entry.
* ``celeriac.delayed``: a sorted set of messages published with ``not_before``, score = due unix
  time, member = ``["<list>", "<unique id>"]\\n<envelope>``.
* ``celeriac.dead_letters``: a list, newest first, of ``{"queue", "reason", "time"}\\n<envelope>``;
  requeuing moves a record back to its queue's list in one script step (``dead.lua``).

Headers are JSON and envelopes are kept byte for byte after a newline, so even a message that is not
valid UTF-8 is stored, delivered and dead-lettered unchanged.

* ``<prefix>/<db>.<exchange>[/<routing key>]``: the pub/sub channels of broadcasts (remote control on
  ``celery.pidbox``, events on ``celeryev``), kombu's names; the payload is the same envelope. The
  remote-control reply exchange ``reply.celery.pidbox`` is kombu's direct exchange instead: bound lists
  (``_replies``).

Guarantees: a Lua script takes messages and writes them to the consumer's processing hash in one
step, so a message is always in a list, in a processing hash, in the delayed set, in the dead letters,
or acked: never only in a client's memory. A consumer whose heartbeat key expired is dead; the next
consumer to poll (at most every ``lease_seconds / 2``, and at least every second) moves its messages
back to the taking end of their lists, atomically and only if the heartbeat is still missing.
Delayed messages are promoted to their lists by every fetch poll. Times are the clients' clocks.
An idle consumer blocks in ``BLMOVE`` on its first queue's plain list (moving nothing), so a push
wakes it at once; its other lists are polled from every 10 ms, backing off to 50 ms, and a queue
the last fetch emptied is watched, not polled.

On a Cluster (``redis+cluster://``) every key carries one hash tag, that of ``global_keyprefix``
(``{celeriac}`` is put first when the prefix has none), so every script runs in one slot; the cost is
that one app's queues live on one shard: give apps that must spread out different tagged prefixes.

Messages a Celery worker took and never acked (kombu's ``unacked`` hash and ``unacked_index``) are
given back once older than ``visibility_timeout`` (kombu's option, default 3600 s), under kombu's
``unacked_mutex``, as a live Celery worker would: so nothing a crashed Celery worker held is lost
after a fleet moved to celeriac.

Left for later: the ``redelivered`` marks inside an envelope recovered from a dead celeriac consumer
(the delivery count already says it).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, cast

from celeriac import signals
from celeriac._wakeup import wakeup_for
from celeriac.brokers.base import (
    Broker,
    DeadLetter,
    Delivery,
    check_dead_letter_arguments,
    doomed,
    surely_held,
)
from celeriac.brokers.delivery import clamped_priority, priority_of, read_dead_letter, read_delivery
from celeriac.brokers.fanout import Subscription, glob_of
from celeriac.exceptions import OperationalError
from celeriac.protocol.envelope import to_envelope
from celeriac.protocol.message import Message
from celeriac.redis._replies import is_direct, push_reply, reply_list
from celeriac.redis.client import is_cluster, lua_script, redis_client

try:
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
except ImportError:  # the error is raised on connecting, naming the extra to install
    RedisConnectionError = RedisTimeoutError = OSError  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)

SEP = "\x06\x16"
_ALL_STEPS = tuple(range(10))
_PROMOTE_MAX = 100
_PAUSE_MIN, _PAUSE_WATCHED, _PAUSE_MAX = 0.001, 0.01, 0.05
_WATCH_SECONDS = 1.0
_KOMBU_SWEEP_SECONDS = 30.0


async def _forward(pubsub: PubSub, subscription: Subscription) -> None:
    try:
        while True:
            reply = await pubsub.get_message(timeout=None)
            if reply is not None and reply["type"] == "pmessage":
                subscription.feed(reply["data"])
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        subscription.fail(exc)


def _has_hash_tag(prefix: str) -> bool:
    start = prefix.find("{")
    return start >= 0 and prefix.find("}", start + 2) > start


def _consume_error(task: asyncio.Task[Any]) -> None:
    # A failed wait only ends the wait early; the next poll meets the error itself and reports it.
    if not task.cancelled():
        task.exception()


#: Dead letters requeued or deleted per script call; dead letters popped for their age per call.
_DEAD_BATCH, _DEAD_POP = 100, 10_000

#: Messages per pipeline when a batch is published (a group of 10,000 tasks goes in 10 round trips).
_PUBLISH_BATCH = 1000


class RedisBroker(Broker):
    """A broker whose queues are Redis lists, readable and writable by Celery's Redis transport.

    Options:
        global_keyprefix: put before every key (kombu's option; default "").
        priority_steps: kombu's priority buckets used when publishing (default ``[0, 3, 6, 9]``, as
            Celery's); ``range(10)`` keeps every priority 0-9 apart.
        lease_seconds: how long a consumer's heartbeat lasts (default 30); it is renewed every fifth
            of that, and a consumer silent for longer has its messages given back.
        visibility_timeout: kombu's: how old a message a Celery worker took and never acked must be
            before it is given back (default 3600).
        master_name, sentinel_kwargs, ssl, socket_timeout, ...: connection options (celeriac.redis.client).
    """

    schemes: ClassVar[tuple[str, ...]] = (
        "redis",
        "rediss",
        "redis+socket",
        "redis+cluster",
        "rediss+cluster",
        "sentinel",
    )

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.prefix = str(self.options.get("global_keyprefix", ""))
        if is_cluster(url) and not _has_hash_tag(self.prefix):
            # Scripts touch several keys, and on a cluster they must share one slot: the tag does it.
            self.prefix = "{celeriac}" + self.prefix
        self.priority_steps = sorted(int(s) for s in self.options.get("priority_steps", (0, 3, 6, 9)))
        if not self.priority_steps or self.priority_steps[0] != 0:
            self.priority_steps.insert(0, 0)
        self.lease_seconds = float(self.options.get("lease_seconds", 30.0))
        self.consumer_id = uuid.uuid4().hex
        self._consumers = self.prefix + "celeriac.consumers"
        self._processing = self._processing_of(self.consumer_id)
        self._heartbeat_key = self._heartbeat_of(self.consumer_id)
        self._counts = self.prefix + "celeriac.deliveries"
        self._delayed = self.prefix + "celeriac.delayed"
        self._dead = self.prefix + "celeriac.dead_letters"
        self._wakeup = wakeup_for(f"redis broker {url} {self.prefix}")
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._heartbeat: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[Any] | None = None
        self._watching = ""
        self._next_recovery = 0.0
        self._unanswered: str | None = None
        self._drained = False
        self.visibility_timeout = float(self.options.get("visibility_timeout", 3600.0))
        self._next_kombu_sweep = 0.0

    async def connect(self) -> None:
        if self._client is not None:
            return
        client = redis_client(self.url, self.options, what="the Redis broker")
        if is_cluster(self.url):
            await cast(Any, client).initialize()  # learn the slots now: pub/sub needs them first
        for name in ("fetch", "settle", "recover", "queue", "restore", "dead", "hold"):
            self._scripts[name] = client.register_script(lua_script(name))
        self._client = client

    async def publish(self, queue: str, message: Message, *, not_before: float | None = None) -> None:
        await self.publish_many([(queue, message, not_before)])

    async def publish_many(self, items: Sequence[tuple[str, Message, float | None]]) -> None:
        client = await self._connected()
        now = time.time()
        try:
            for start in range(0, len(items), _PUBLISH_BATCH):
                async with client.pipeline(transaction=False) as pipe:
                    for queue, message, not_before in items[start : start + _PUBLISH_BATCH]:
                        payload = to_envelope(message, routing_key=queue)
                        key = self._list(queue, self._step(priority_of(message)))
                        if not_before is not None and not_before > now:
                            header = json.dumps([key, uuid.uuid4().hex]).encode()
                            pipe.zadd(self._delayed, {header + b"\n" + payload: not_before})
                        else:
                            pipe.lpush(key, payload)
                    await pipe.execute()
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # One error type for callers, whichever broker runs (kombu's name, a ConnectionError).
            queues = ", ".join(sorted({repr(queue) for queue, _, _ in items}))
            raise OperationalError(f"the Redis broker could not publish to {queues}: {exc}") from exc
        self._wakeup.notify()

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        await self._connected()
        if limit < 1:
            return []
        owners: dict[bytes, str] = {}
        for queue in dict.fromkeys(queues):
            for step in _ALL_STEPS:
                owners[self._list(queue, step).encode()] = queue
        main = self._list(queues[0], 0) if queues else None
        deadline = time.monotonic() + max(timeout, 0.0)
        # With the main list watched, a push there wakes us at once: the other lists (priority steps,
        # further queues) can be polled less eagerly, which saves the loop a script call per message.
        floor = _PAUSE_WATCHED if main is not None else _PAUSE_MIN
        pause = floor
        # The last take emptied the lists: wait first (a watch returns at once if a message came since).
        take_now = not (self._drained and main is not None)
        while True:
            with self._wakeup.armed() as woken:
                next_due = None
                if take_now:
                    await self._recover_dead()
                    leased = time.monotonic()
                    found, next_due = await self._take(list(owners), limit)
                    if found:
                        if self._heartbeat is None or self._heartbeat.done():
                            self._heartbeat = asyncio.create_task(
                                self._beat(), name="celeriac-redis-heartbeat"
                            )
                        taken = [read_delivery(t, owners[key], body, n) for t, key, n, body in found]
                        for delivery in taken:
                            delivery.leased = leased
                        return taken
                take_now = True
                now = time.monotonic()
                if now >= deadline:
                    return []
                wait = min(pause, deadline - now)
                if next_due is not None:
                    wait = min(wait, max(next_due - time.time(), 0.0))
                waiters: set[asyncio.Future[Any]] = {woken}
                if main is not None:
                    waiters.add(self._watch(main))
                done, _ = await asyncio.wait(waiters, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            pause = floor if done else min(pause * 2, _PAUSE_MAX)

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle("ack", deliveries)

    async def holds(self, deliveries: Sequence[Delivery]) -> list[bool]:
        if all(surely_held(d, self.lease_seconds) for d in deliveries):
            return [True] * len(deliveries)
        client = await self._connected()
        asked = time.monotonic()
        keys = [self._processing, self._heartbeat_key, self._consumers]
        args = [max(int(self.lease_seconds * 1000), 1), self.consumer_id, *(d.tag for d in deliveries)]
        found = await self._scripts["hold"](keys=keys, args=args, client=client)
        for delivery, held in zip(deliveries, found, strict=True):
            if held:
                delivery.leased = asked
        return [bool(held) for held in found]

    async def reject(self, delivery: Delivery, *, requeue: bool, reason: str = "") -> None:
        await self._settle("requeue" if requeue else "bury", [delivery], reason)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self._settle("release", deliveries)

    async def purge(self, queue: str) -> int:
        return await self._queue("purge", queue)

    async def size(self, queue: str) -> int:
        return await self._queue("size", queue)

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        async with contextlib.aclosing(
            self._dead_records(newest_first=True, page=max(limit, 100))
        ) as records:
            async for _, letter in records:
                if len(found) >= limit:
                    break
                if letter.selected(queue):
                    found.append(letter)
        return found

    async def requeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        check_dead_letter_arguments(limit=limit)
        chosen: list[tuple[bytes, DeadLetter]] = []
        async with contextlib.aclosing(self._dead_records(newest_first=False)) as records:
            async for record, letter in records:
                if limit is not None and len(chosen) >= limit:
                    break
                if letter.selected(queue, ids):
                    chosen.append((record, letter))
        moved = 0
        for start in range(0, len(chosen), _DEAD_BATCH):
            keys: list[str] = [self._dead, self._counts]
            args: list[bytes | str | int] = ["requeue"]
            for record, letter in chosen[start : start + _DEAD_BATCH]:
                priority = priority_of(letter.message) if letter.message is not None else 0
                key = self._list(letter.queue, self._step(priority))
                if key not in keys:
                    keys.append(key)
                args += [record, keys.index(key) + 1]  # Lua counts from 1
            moved += int(await self._scripts["dead"](keys=keys, args=args))
        if moved:
            self._wakeup.notify()
        return moved

    async def purge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        check_dead_letter_arguments(older_than=older_than, keep=keep)
        await self._connected()
        now = time.time()
        if queue is None and (older_than is not None or keep is not None):
            # The list is in time order: trimming its ends needs no scan (the worker's retention).
            keys = [self._dead, self._counts]
            limit = -1 if keep is None else keep
            cutoff = "" if older_than is None else repr(now - older_than)
            removed, popped = await self._scripts["dead"](keys=keys, args=["trim", limit, cutoff, _DEAD_POP])
            total = int(removed) + int(popped)
            while int(popped) == _DEAD_POP:
                _, popped = await self._scripts["dead"](keys=keys, args=["trim", -1, cutoff, _DEAD_POP])
                total += int(popped)
            return total
        letters = [(r, d) async for r, d in self._dead_records(newest_first=True) if d.selected(queue)]
        drop = doomed([d.time for _, d in letters], older_than=older_than, keep=keep, now=now)
        records = [record for (record, _), dropped in zip(letters, drop, strict=True) if dropped]
        removed = 0
        for start in range(0, len(records), _DEAD_BATCH):
            args: list[bytes | str] = ["drop", *records[start : start + _DEAD_BATCH]]
            removed += int(await self._scripts["dead"](keys=[self._dead, self._counts], args=args))
        return removed

    async def _dead_records(
        self, *, newest_first: bool, page: int = 1000
    ) -> AsyncGenerator[tuple[bytes, DeadLetter]]:
        """Every dead-letter record with what it holds, page by page from either end of the list.

        Read from the oldest end, pages are counted from the right, so letters added meanwhile (at the
        left) shift nothing.
        """
        client = await self._connected()
        start = 0
        while True:
            if newest_first:
                records = cast(list[bytes], await client.lrange(self._dead, start, start + page - 1))
            else:
                records = cast(list[bytes], await client.lrange(self._dead, -start - page, -start - 1))
                records.reverse()
            for record in records:
                header, _, payload = record.partition(b"\n")
                info = json.loads(header)
                yield record, read_dead_letter(info["queue"], info["reason"], payload, float(info["time"]))
            if len(records) < page:
                return
            start += page

    async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
        client = await self._connected()
        if is_direct(exchange):
            envelope = to_envelope(message, routing_key=routing_key, exchange=exchange)
            await push_reply(client, self.prefix, exchange, routing_key, envelope)
            return
        channel = self._fanout(client, exchange) + (f"/{routing_key}" if routing_key else "")
        await client.publish(channel, to_envelope(message, routing_key=routing_key, exchange=exchange))

    @contextlib.asynccontextmanager
    async def subscribe(self, exchange: str, pattern: str = "#") -> AsyncIterator[Subscription]:
        client = await self._connected()
        if is_direct(exchange):
            async with reply_list(client, self.prefix, exchange, pattern) as replies:
                yield replies
            return
        base = self._fanout(client, exchange)
        # kombu publishes "<base>/<routing key>", or "<base>" for none; "#" listens to both.
        channels = [base, base + "/*"] if pattern == "#" else [f"{base}/{glob_of(pattern)}"]
        pubsub = client.pubsub()
        subscription = Subscription(exchange)
        try:
            await pubsub.psubscribe(*channels)
            confirmed = 0
            while confirmed < len(channels):  # live once Redis confirmed every pattern
                reply = await pubsub.get_message(timeout=5.0)
                if reply is None:
                    raise TimeoutError(f"Redis did not confirm the subscription to {exchange!r}")
                confirmed += reply["type"] == "psubscribe"
            reader = asyncio.create_task(_forward(pubsub, subscription), name="celeriac-redis-fanout")
            try:
                yield subscription
            finally:
                reader.cancel()
                await asyncio.wait((reader,))
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    def _fanout(self, client: Redis, exchange: str) -> str:
        # kombu's fanout prefix "/<db>." (global_keyprefix first, as kombu prefixes PUBLISH).
        pool = getattr(client, "connection_pool", None)
        db = pool.connection_kwargs.get("db", 0) if pool is not None else 0
        return f"{self.prefix}/{db}.{exchange}"

    async def close(self) -> None:
        for task in (self._heartbeat, self._watcher):
            if task is not None:
                task.cancel()
                await asyncio.wait((task,))
        self._heartbeat = self._watcher = None
        client, self._client = self._client, None
        if client is None:
            return
        try:
            keys = [self._consumers, self._heartbeat_key, self._processing]
            if await self._scripts["recover"](keys=keys, args=[self.consumer_id, "1"], client=client):
                self._wakeup.notify()
        except Exception as exc:
            log.warning(
                "could not give back this consumer's messages on closing (%s); another consumer will "
                "once its heartbeat expires",
                exc,
            )
        finally:
            await client.aclose()

    # -- helpers

    async def _connected(self) -> Redis:
        await self.connect()
        assert self._client is not None
        return self._client

    def _watch(self, key: str) -> asyncio.Task[Any]:
        """A blocking wait, on a connection of its own, until the list ``key`` holds a message.

        BLMOVE from the list's right end to the same end moves nothing: it only returns once the list is
        not empty, so an idle consumer wakes within a round trip of a push by any producer, Celery's too,
        without polling. Other lists (priorities, further queues) are still polled, with backoff. One
        wait at a time is kept and reused across polls.
        """
        if self._watcher is None or self._watcher.done() or self._watching != key:
            client = self._client
            assert client is not None
            # redis-py types the timeout as int; Redis takes fractions of a second.
            wait = cast(Coroutine[Any, Any, Any], client.blmove(key, key, _WATCH_SECONDS, "RIGHT", "RIGHT"))  # type: ignore[arg-type]
            self._watcher = asyncio.create_task(wait, name="celeriac-redis-watch")
            self._watching = key
            self._watcher.add_done_callback(_consume_error)
        return self._watcher

    def _step(self, priority: int) -> int:
        """kombu's bucket for a priority: the highest step not above it."""
        return self.priority_steps[bisect.bisect(self.priority_steps, priority) - 1]

    def _list(self, queue: str, step: int) -> str:
        return self.prefix + queue + (SEP + str(step) if step else "")

    def _processing_of(self, consumer: str) -> str:
        return f"{self.prefix}celeriac.processing.{consumer}"

    def _heartbeat_of(self, consumer: str) -> str:
        return f"{self.prefix}celeriac.heartbeat.{consumer}"

    async def _take(
        self, lists: list[bytes], limit: int
    ) -> tuple[list[tuple[str, bytes, int, bytes]], float | None]:
        keys: list[str | bytes] = [
            self._processing,
            self._counts,
            self._delayed,
            self._heartbeat_key,
            self._consumers,
            *lists,
        ]
        # A fetch whose reply never came may still have run: asking again with its tag prefix hands
        # out what it took, instead of leaving it held by this live consumer, unseen, until it stops.
        tag_prefix = self._unanswered = self._unanswered or uuid.uuid4().hex + "."
        lease_ms = max(int(self.lease_seconds * 1000), 1)
        args: list[str | int] = [
            limit,
            repr(time.time()),
            tag_prefix,
            lease_ms,
            self.consumer_id,
            _PROMOTE_MAX,
        ]
        next_due, flat, *more = await self._scripts["fetch"](keys=keys, args=args)
        self._unanswered = None
        self._drained = not (more and more[0])
        found = [
            (flat[i].decode(), flat[i + 1], int(flat[i + 2]), flat[i + 3]) for i in range(0, len(flat), 4)
        ]
        return found, float(next_due) if next_due else None

    async def _settle(self, mode: str, deliveries: Sequence[Delivery], reason: str = "") -> None:
        if not deliveries:
            return
        client = await self._connected()
        keys = [self._processing, self._counts, self._dead]
        args = [mode, deliveries[0].queue, reason, repr(time.time()), *(d.tag for d in deliveries)]
        await self._scripts["settle"](keys=keys, args=args, client=client)
        if mode in ("requeue", "release"):
            self._wakeup.notify()

    async def _queue(self, mode: str, queue: str) -> int:
        await self._connected()
        keys = [self._counts, self._delayed, *(self._list(queue, step) for step in _ALL_STEPS)]
        return int(await self._scripts["queue"](keys=keys, args=[mode]))

    async def _recover_dead(self) -> None:
        """Give back the messages of consumers whose heartbeat ran out; throttled, as it scans them all."""
        now = time.monotonic()
        if now < self._next_recovery:
            return
        self._next_recovery = now + min(self.lease_seconds / 2, 1.0)
        client = await self._connected()
        if now >= self._next_kombu_sweep and not is_cluster(self.url):
            self._next_kombu_sweep = now + min(self.visibility_timeout / 2, _KOMBU_SWEEP_SECONDS)
            await self._restore_celerys_unacked(client)
        members = cast(set[bytes], await client.smembers(self._consumers))
        others = [m.decode() for m in members if m.decode() != self.consumer_id]
        if not others:
            return
        async with client.pipeline(transaction=False) as pipe:
            for consumer in others:
                pipe.exists(self._heartbeat_of(consumer))
            alive = await pipe.execute()
        for consumer, beating in zip(others, alive, strict=True):
            if beating:
                continue
            keys = [self._consumers, self._heartbeat_of(consumer), self._processing_of(consumer)]
            moved = await self._scripts["recover"](keys=keys, args=[consumer, "0"])
            if moved and moved > 0:
                log.warning("gave back %d message(s) of dead consumer %s", moved, consumer)
                self._wakeup.notify()

    async def _restore_celerys_unacked(self, client: Redis) -> None:
        """Give back what Celery workers took and never acked, once older than ``visibility_timeout``.

        Celery's Redis transport keeps a taken message in the hash ``unacked`` (and its time in
        ``unacked_index``) until the ack, and a live Celery worker gives back stale ones. Doing the same
        sweep, under kombu's own ``unacked_mutex``, means that a fleet which has moved from Celery to
        celeriac still gets back the messages of a Celery worker that crashed.
        """
        unacked, index = self.prefix + "unacked", self.prefix + "unacked_index"
        cutoff = time.time() - self.visibility_timeout
        stale = cast(list[bytes], await client.zrangebyscore(index, "-inf", cutoff, start=0, num=100))
        if not stale:
            return
        lock = client.lock(self.prefix + "unacked_mutex", timeout=300)
        if not await lock.acquire(blocking=False):
            return  # a Celery worker (or another of ours) is sweeping now
        restored = 0
        try:
            for tag in stale:
                value = cast(bytes | None, await client.hget(unacked, tag))
                if value is None:
                    await client.zrem(index, tag)
                    continue
                envelope, exchange, routing_key = json.loads(value)
                lists = await self._kombu_route(client, envelope, exchange, routing_key)
                if not lists:
                    log.warning(
                        "cannot give back Celery's unacked message %s: nothing is bound to "
                        "exchange %r with routing key %r",
                        tag.decode(),
                        exchange,
                        routing_key,
                    )
                    continue
                with contextlib.suppress(KeyError, TypeError):
                    envelope["headers"]["redelivered"] = True
                    envelope["properties"]["delivery_info"]["redelivered"] = True
                args = [tag, value, json.dumps(envelope).encode()]
                restored += await self._scripts["restore"](keys=[unacked, index, *lists], args=args)
        finally:
            with contextlib.suppress(Exception):
                await lock.release()
        if restored:
            log.warning("gave back %d message(s) a Celery worker took and never acked", restored)
            self._wakeup.notify()

    async def _kombu_route(
        self, client: Redis, envelope: dict[str, Any], exchange: str, routing_key: str
    ) -> list[str]:
        """The lists kombu would restore a message to: by routing key, or through the exchange's bindings."""
        queues = [routing_key]
        if exchange:
            members = cast(set[bytes], await client.smembers(f"{self.prefix}_kombu.binding.{exchange}"))
            bound = [m.decode().split(SEP) for m in members]
            queues = [queue for key, _, queue in bound if key == routing_key]
        properties = envelope.get("properties") if isinstance(envelope, dict) else None
        priority = properties.get("priority") if isinstance(properties, dict) else None
        step = self._step(clamped_priority(priority))
        return [self._list(queue, step) for queue in queues]

    async def _beat(self) -> None:
        # While this consumer lives its messages stay its own, however long a task runs; once it dies
        # the key expires and the next consumer to poll gives them back.
        while True:
            try:
                client = await self._connected()
                lease = max(int(self.lease_seconds * 1000), 1)
                # PEXPIRE first: it is taken at maxmemory (SET is refused there), so a worker draining a
                # full broker keeps its lease; the key is set again only when it was gone.
                async with client.pipeline(transaction=False) as pipe:
                    pipe.pexpire(self._heartbeat_key, lease)
                    pipe.sismember(self._consumers, self.consumer_id)
                    renewed, listed = await pipe.execute()
                if not renewed or not listed:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.set(self._heartbeat_key, b"1", px=lease)
                        pipe.sadd(self._consumers, self.consumer_id)
                        await pipe.execute()
                signals.heartbeat_sent.send(sender=self)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("could not renew the Redis heartbeat; will retry", exc_info=True)
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                # redis-py may swallow a cancel that lands inside a command; honour it here.
                raise asyncio.CancelledError
            await asyncio.sleep(self.lease_seconds / 5)
