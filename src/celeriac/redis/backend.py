"""A result backend on Redis, in Celery's key layout, so Celery's Redis backend and celeriac read each other.

What Celery's Redis backend (``celery/backends/redis.py``) keeps, as read in Celery 5.7:

* One string key per task, ``celery-task-meta-<task id>``, holding the whole record encoded with the
  result serializer: with JSON, ``{"status", "result", "traceback", "children", "date_done",
  "task_id"}`` plus ``parent_id`` and ``group_id`` when set and the ``result_extended`` fields
  (:meth:`ResultMeta.to_dict`). The key is written with ``SET ... EX <expires>`` (a plain ``SET`` when
  ``expires`` is None or 0), and the same bytes are then published on a channel of the same name, in
  one pipeline per ``store`` call.
* A saved group is the string key ``celery-taskset-meta-<group id>`` holding ``{"result": <the group's
  result tuple>}`` (``GroupResult.as_tuple()``), encoded and expired like a task's record.
* A chord's header is counted in keys beside its group key, as Celery 5.7 does: ``.j`` (a sorted set of
  encoded ``[1, task id, state, result]`` scored by header index, or a list when the transport option
  ``result_chord_ordered`` is false), ``.t`` (Celery's size adjustment), ``.s`` (the header's size),
  ``.d`` (the parts counted, ``<task id>:<index>``) and ``.c`` (the claim token of whoever sends the
  body, then ``"done"``). One Lua script (``chord.lua``) counts a part and claims the chord; a
  second (``chord_done.lua``) ends it. So Celery workers and ours may share one chord's header.
* The option ``global_keyprefix`` (kombu's and Celery's name) is put in front of every key and channel,
  with ``_`` after it unless it ends in one of ``:_-.`` (as Celery's backend does).

Guarantees: ``store`` returns once Redis has the records; ``get_many`` is one ``MGET``; Redis expires
old records itself, so ``cleanup`` deletes nothing. ``wait`` reads a finished result once; otherwise
it subscribes to the task's channel *before* reading the key again, so a result stored in between is
not missed, takes the record from the published message, and re-reads the key at least every
``interval`` in case a message is lost (a reconnect). The waits of one backend share one pub/sub
connection, subscribed to a channel only while someone waits on it, and closed once nobody has waited
for ``pubsub_linger`` seconds (option, default 10): Celery's subscription leaks (celery#4012 and
friends) cannot happen here. A server that refuses pub/sub (ACLs, proxies) makes ``wait`` poll.

Revocations are also indexed and announced (``_revocations``), so workers keep the revoked ids
in memory instead of looking up each fetched batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.backends.base import Backend, ChordClaim, ChordPart, ResultMeta
from celeriac.exceptions import ConfigurationError, DecodeError
from celeriac.exceptions import TimeoutError as ResultTimeout
from celeriac.redis import _revocations
from celeriac.redis.client import is_cluster, lua_script, redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.client import PubSub
    from redis.commands.core import AsyncScript

__all__ = ["GROUP_PREFIX", "KEY_PREFIX", "RedisBackend"]

#: Celery's prefix of a task's result key (and of the channel its updates are published on).
KEY_PREFIX = "celery-task-meta-"
#: Celery's prefix of a saved group's key; a chord's keys are this key with ``.j``, ``.t``, ... after it.
GROUP_PREFIX = "celery-taskset-meta-"
#: How long a finished chord's "done" mark stays at least (as Celery); longer when results live longer.
DONE_SECONDS = 300


class RedisBackend(Backend):
    """Results in Redis keys ``celery-task-meta-<id>``; ``wait`` is woken by pub/sub."""

    schemes = ("redis", "rediss", "redis+socket", "sentinel")
    reads_chord_size = True
    pushes_revocations = True

    def setup(self) -> None:
        prefix = str(self.options.get("global_keyprefix") or "")
        self.prefix = prefix if not prefix or prefix[-1] in ":_-." else prefix + "_"
        self.chord_ordered = bool(self.options.get("result_chord_ordered", True))
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._listener: _Listener | None = None
        #: Seconds the pub/sub connection stays open after the last wait ended, for the next one.
        self.pubsub_linger = float(self.options.get("pubsub_linger", 10.0))
        self._pubsub_refused = False

    def key(self, task_id: str) -> str:
        """The key of ``task_id``'s record, also the channel its updates are published on."""
        return f"{self.prefix}{KEY_PREFIX}{task_id}"

    def group_key(self, group_id: str, suffix: str = "") -> str:
        """The key of a saved group; with ``suffix`` (``.j``, ``.s``, ...) one of its chord's keys."""
        return f"{self.prefix}{GROUP_PREFIX}{group_id}{suffix}"

    @property
    def client(self) -> Redis:
        """The Redis client, connected on first use."""
        if self._client is None:
            if is_cluster(self.url):
                raise ConfigurationError(
                    "the Redis result backend cannot use a Redis Cluster yet (its keys are Celery's, "
                    "without hash tags); use a plain, TLS or Sentinel URL for results"
                )
            self._client = redis_client(self.url, self.options, what="the Redis result backend")
        return self._client

    def _lua(self, name: str) -> AsyncScript:
        """The script ``<name>.lua`` of this package (called with ``client=``, always)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.client.register_script(lua_script(name))
        return script

    @property
    def expires_seconds(self) -> int | None:
        """Whole seconds a record lives; None keeps it (Celery uses SETEX only when result_expires is
        truthy: 0 keeps results forever there too)."""
        return math.ceil(self.expires) if self.expires else None

    def queue_records(self, pipe: Any, metas: Sequence[ResultMeta], seconds: int | None) -> None:
        """Queue on ``pipe`` each record's ``SET`` and its ``PUBLISH`` on the key's channel."""
        for meta in metas:
            key, value = self.key(meta.task_id), self.encode(meta.to_dict())[1]
            pipe.set(key, value, ex=seconds)
            pipe.publish(key, value)

    async def store(self, metas: Sequence[ResultMeta]) -> None:
        if not metas:
            return
        # One connection runs a pipeline's commands in order, so a waiter woken by the PUBLISH finds the
        # SET done; MULTI/EXEC would add nothing but a round of queued replies.
        async with self.client.pipeline(transaction=False) as pipe:
            self.queue_records(pipe, metas, self.expires_seconds)
            await pipe.execute()

    async def revoke(self, metas: Sequence[ResultMeta]) -> None:
        await _revocations.revoke(self, metas)

    def revocations(self) -> AsyncIterator[list[str]]:
        return _revocations.follow(self)

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        ids = list(dict.fromkeys(task_ids))
        if not ids:
            return {}
        values = await self.client.mget([self.key(t) for t in ids])
        return {
            t: self._read(v if isinstance(v, bytes) else v.encode())
            for t, v in zip(ids, values, strict=True)
            if v is not None
        }

    async def forget(self, task_id: str) -> None:
        await self.client.delete(self.key(task_id))

    async def save_group(self, group_id: str, result: Any) -> None:
        seconds = math.ceil(self.expires) if self.expires else None
        await self.client.set(self.group_key(group_id), self.encode({"result": result})[1], ex=seconds)

    async def restore_group(self, group_id: str) -> Any | None:
        value = await self.client.get(self.group_key(group_id))
        if value is None:
            return None
        saved = self.decode(value if isinstance(value, bytes) else value.encode())
        if not isinstance(saved, dict) or "result" not in saved:
            raise DecodeError(f"the saved group {group_id} is not a {{'result': ...}} record")
        return saved["result"]

    async def forget_group(self, group_id: str) -> None:
        await self.client.delete(self.group_key(group_id))

    async def chord_begin(self, group_id: str, size: int) -> None:
        """Celery's ``set_chord_size``: forget a previous run's "done" mark and set ``.s``."""
        seconds = math.ceil(self.expires) if self.expires else None
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self.group_key(group_id, ".c"))
            pipe.set(self.group_key(group_id, ".s"), size, ex=seconds)
            await pipe.execute()

    async def chord_part(
        self, group_id: str, part: ChordPart, size: int, *, lease: float = 60.0
    ) -> ChordClaim | None:
        [claim] = await self.chord_parts([(group_id, part, size)], lease=lease)
        return claim

    async def chord_parts(
        self, reports: Sequence[tuple[str, ChordPart, int]], *, lease: float = 60.0
    ) -> list[ChordClaim | None]:
        """Every report's script call in one pipeline: header tasks ending together cost one round trip."""
        if any(size < 0 for _, _, size in reports):
            raise ValueError(f"a chord's size cannot be negative: {[size for _, _, size in reports]}")
        seconds = math.ceil(self.expires) if self.expires else 0
        script, tokens = self._lua("chord"), [uuid.uuid4().hex for _ in reports]
        async with self.client.pipeline(transaction=False) as pipe:
            for (group_id, part, size), token in zip(reports, tokens, strict=True):
                score = "+inf" if part.index is None else str(part.index)
                await script(
                    keys=[self.group_key(group_id, s) for s in (".j", ".t", ".s", ".d", "", ".c")],
                    args=[
                        part.task_id,
                        self.encode([1, part.task_id, part.status, part.result])[1],
                        "1" if self.chord_ordered else "0",
                        score,
                        seconds,
                        seconds,
                        max(1, math.ceil(lease * 1000)),
                        token,
                        size,
                    ],
                    client=pipe,
                )
            replies = await pipe.execute()
        return [
            self._claim(group_id, token, reply)
            for (group_id, _, _), token, reply in zip(reports, tokens, replies, strict=True)
        ]

    def _claim(self, group_id: str, token: str, reply: list[Any]) -> ChordClaim | None:
        if reply[0] == -1 or not reply[1]:
            return None
        items = reply[2:]
        if not self.chord_ordered:
            return ChordClaim(group_id, token, tuple(self._part(member, None) for member in items))
        pairs = zip(items[::2], items[1::2], strict=True)
        return ChordClaim(group_id, token, tuple(self._part(member, score) for member, score in pairs))

    def _part(self, member: bytes, score: bytes | None) -> ChordPart:
        _, task_id, status, result = self.decode(member)
        index = None if score is None or score in (b"inf", b"+inf") else int(float(score))
        return ChordPart(str(task_id), index, str(status), result)

    async def chord_grow(self, group_id: str, by: int = 1) -> None:
        # Celery's size adjustment key, which its add_to_chord INCRs and the counting script adds.
        key = self.group_key(group_id, ".t")
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.incrby(key, by)
            if self.expires:
                pipe.expire(key, math.ceil(self.expires))
            await pipe.execute()

    async def chord_done(self, claim: ChordClaim) -> None:
        await self._lua("chord_done")(
            keys=[self.group_key(claim.group_id, s) for s in (".c", ".j", ".t", ".s", ".d")],
            args=[claim.token, max(DONE_SECONDS, math.ceil(self.expires or 0))],
            client=self.client,
        )

    async def wait(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> ResultMeta:
        """Wait until ``task_id`` is ready, woken by the message its ``store`` publishes.

        A result already there costs one read. Otherwise the wait subscribes, reads the key once more
        (a result stored in between is not missed), and then takes the record from the published
        message itself; the key is read again at least every ``interval``, in case a message is lost
        (a reconnect). Without pub/sub this polls like the base class.
        """
        deadline = None if timeout is None else time.monotonic() + timeout

        def left() -> float | None:
            return None if deadline is None else deadline - time.monotonic()

        meta = await self.get(task_id)
        if meta.ready:
            return meta
        if self._pubsub_refused:
            return await super().wait(task_id, left(), interval)
        if self._listener is None or self._listener.broken:
            self._listener = _Listener(self.client, self.pubsub_linger)
        listener, channel = self._listener, self.key(task_id).encode()
        try:
            waiter = await listener.subscribe(channel, left())
        except Exception as exc:
            if not _pubsub_unusable(exc):
                raise
            # A refusal (ACLs, a proxy) will not change; a lost connection may come back next time.
            self._pubsub_refused = _is_refusal(exc)
            return await self._poll(task_id, left(), interval, exc)
        try:
            published: bytes | None = None
            while not listener.broken:
                waiter.clear()
                meta = await self.get(task_id) if published is None else self._read(published)
                if meta.ready:
                    return meta
                remaining = left()
                if remaining is not None and remaining <= 0:
                    raise ResultTimeout(f"task {task_id} not ready after {timeout}s (state {meta.status})")
                pause = interval if remaining is None else min(interval, remaining)
                published = None
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(pause):
                        await waiter.wait()
                        published = waiter.data
        finally:
            listener.unsubscribe(channel, waiter)
        # The pub/sub connection broke while we waited: finish by polling.
        return await super().wait(task_id, left(), interval)

    def _read(self, record: bytes) -> ResultMeta:
        """A stored (or published: the same bytes) record."""
        return ResultMeta.from_dict(self.decode(record))

    async def _poll(
        self, task_id: str, timeout: float | None, interval: float, cause: Exception
    ) -> ResultMeta:
        try:
            return await super().wait(task_id, timeout, interval)
        except ResultTimeout as exc:
            raise exc from cause

    async def cleanup(self) -> int:
        """Nothing to do: Redis deletes records ``expires`` seconds after they were stored."""
        return 0

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            await listener.close()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def _is_refusal(exc: Exception) -> bool:
    from redis.exceptions import ResponseError  # NoPermissionError is one

    return isinstance(exc, ResponseError)


def _pubsub_unusable(exc: Exception) -> bool:
    """True for the errors after which ``wait`` polls instead: refusals, lost connections, timeouts."""
    from redis.exceptions import ConnectionError, TimeoutError

    # OSError covers the builtin TimeoutError (asyncio's timeouts) and a lost pub/sub reader.
    return _is_refusal(exc) or isinstance(exc, OSError | ConnectionError | TimeoutError)


class _Waiter(asyncio.Event):
    """Set when a message arrives on the waited channel; ``data`` is the message (the record)."""

    data: bytes | None = None


class _Listener:
    """One pub/sub connection shared by the waits of one backend.

    Each wait holds a ``_Waiter`` per channel, set (with the message) when a message arrives on it. A
    channel is subscribed while it has waiters and unsubscribed when its last one leaves. The connection
    stays open ``linger`` seconds after the last wait ended, so a caller waiting on one result after
    another does not reconnect each time, and is closed after that. ``subscribe`` returns only after
    Redis confirmed the subscription, so a caller that then reads the key misses nothing.
    """

    def __init__(self, client: Redis, linger: float) -> None:
        self._client = client
        self._linger = linger
        self._lock = asyncio.Lock()
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._closer: asyncio.TimerHandle | None = None
        self._chores: set[asyncio.Task[None]] = set()
        self._waiters: dict[bytes, set[_Waiter]] = {}
        # Redis confirms the SUBSCRIBEs of one channel in order: one future per command sent.
        self._confirmations: dict[bytes, deque[asyncio.Future[None]]] = {}
        self.broken = False
        self._closed = False

    async def subscribe(self, channel: bytes, timeout: float | None) -> _Waiter:
        waiter = _Waiter()
        async with self._lock:
            if self._closer is not None:
                self._closer.cancel()
                self._closer = None
            waiters = self._waiters.get(channel)
            if waiters:  # subscribed and confirmed while its first waiter held the lock
                waiters.add(waiter)
                return waiter
            self._waiters[channel] = {waiter}
            try:
                if self._pubsub is None:
                    self._pubsub = self._client.pubsub()
                confirmed = asyncio.get_running_loop().create_future()
                self._confirmations.setdefault(channel, deque()).append(confirmed)
                await self._pubsub.subscribe(channel)
                if self._reader is None:
                    self._reader = asyncio.create_task(self._read(self._pubsub))
                async with asyncio.timeout(timeout):
                    await confirmed
            except BaseException:
                await self._leave(channel, waiter)
                raise
        return waiter

    def unsubscribe(self, channel: bytes, waiter: _Waiter) -> None:
        """Leave the channel; the UNSUBSCRIBE goes out after the caller has its answer."""
        self._chore(self._leaving(channel, waiter))

    async def _leaving(self, channel: bytes, waiter: _Waiter) -> None:
        async with self._lock:
            await self._leave(channel, waiter)

    async def close(self) -> None:
        async with self._lock:
            self._closed = True
            self._waiters.clear()
            await self._shutdown()
        for chore in list(self._chores):
            chore.cancel()
        await asyncio.gather(*self._chores, return_exceptions=True)

    def _chore(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._chores.add(task)
        task.add_done_callback(self._chores.discard)

    async def _leave(self, channel: bytes, waiter: _Waiter) -> None:
        waiters = self._waiters.get(channel)
        if waiters is not None:
            waiters.discard(waiter)
            if waiters:
                return
            del self._waiters[channel]
            if self._pubsub is not None and not self.broken:
                try:
                    await self._pubsub.unsubscribe(channel)
                except Exception:
                    self._fail()
        if not self._waiters and self._closer is None and not self._closed:
            loop = asyncio.get_running_loop()
            self._closer = loop.call_later(self._linger, lambda: self._chore(self._close_if_idle()))

    async def _close_if_idle(self) -> None:
        async with self._lock:
            self._closer = None
            if not self._waiters:
                await self._shutdown()

    async def _shutdown(self) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        reader, self._reader = self._reader, None
        pubsub, self._pubsub = self._pubsub, None
        self._confirmations.clear()
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(BaseException):
                await reader
        if pubsub is not None:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self, pubsub: PubSub) -> None:
        try:
            while True:
                message = await pubsub.get_message(timeout=None)
                if message is None:
                    continue
                kind, channel = message["type"], message["channel"]
                if kind == "message":
                    for waiter in self._waiters.get(channel, ()):
                        waiter.data = message["data"]
                        waiter.set()
                elif kind == "subscribe":
                    pending = self._confirmations.get(channel)
                    if pending:
                        confirmed = pending.popleft()
                        if not confirmed.done():
                            confirmed.set_result(None)
        except Exception:
            self._fail()

    def _fail(self) -> None:
        """Mark the connection broken and wake everyone: waits go on by polling."""
        self.broken = True
        for pending in self._confirmations.values():
            for confirmed in pending:
                if not confirmed.done():
                    confirmed.set_exception(ConnectionError("the pub/sub connection was lost"))
        for waiters in self._waiters.values():
            for waiter in waiters:
                waiter.set()
