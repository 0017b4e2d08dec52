"""Revocations pushed to workers over Redis, so a worker looks nothing up per fetched batch.

Keys (ours; Celery revokes over its remote-control broadcast instead, which celeriac does not serve yet):

* ``celeriac-revoked``: a sorted set of revoked task ids scored by the unix time of their revocation,
  trimmed to ``result_expires`` (the life of the REVOKED record it shadows);
* the channel ``celeriac-revoked``: each revocation's ids, a JSON list.

Both take the backend's ``global_keyprefix``. A worker subscribes first and reads the set second, so a
revocation in between reaches it at least once. A feed that hears nothing for ``_QUIET`` seconds pings its
connection and is declared broken when the pong does not come back as quickly; one whose connection
dropped (redis-py then subscribes again by itself) ends too, since announcements in the gap are lost.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from celeriac.exceptions import OperationalError

if TYPE_CHECKING:
    from celeriac.backends.base import ResultMeta
    from celeriac.redis.backend import RedisBackend

NAME = "celeriac-revoked"
_QUIET = 15.0


async def revoke(backend: RedisBackend, metas: Sequence[ResultMeta]) -> None:
    """Store the REVOKED records, index their ids and announce them, in one round trip."""
    if not metas:
        return
    name, now = backend.prefix + NAME, time.time()
    seconds = backend.expires_seconds
    async with backend.client.pipeline(transaction=False) as pipe:
        backend.queue_records(pipe, metas, seconds)
        pipe.zadd(name, {meta.task_id: now for meta in metas})
        if seconds:
            pipe.zremrangebyscore(name, "-inf", now - seconds)
        pipe.publish(name, json.dumps([meta.task_id for meta in metas]))
        await pipe.execute()


async def follow(backend: RedisBackend) -> AsyncIterator[list[str]]:
    """``Backend.revocations`` on Redis: subscribe, read the index, then yield each announcement."""
    name = backend.prefix + NAME
    pubsub = backend.client.pubsub()
    try:
        await pubsub.subscribe(name)
        while True:  # the index is read once Redis confirmed the subscription
            message = await pubsub.get_message(timeout=_QUIET)
            if message is None:
                raise OperationalError("Redis did not confirm the revocations subscription")
            if message.get("type") == "subscribe":
                break
        floor: float | str = time.time() - backend.expires_seconds if backend.expires_seconds else "-inf"
        known = await backend.client.zrangebyscore(name, floor, "+inf")
        yield [_text(task_id) for task_id in known]
        pinged = False
        while True:
            message = await pubsub.get_message(timeout=_QUIET)
            if message is None:
                if pinged:
                    raise OperationalError(f"no answer from Redis on the revocations feed in {_QUIET:g}s")
                await pubsub.ping()
                pinged = True
                continue
            pinged = False
            if message.get("type") == "subscribe":
                # redis-py reconnected and subscribed again by itself: what was announced meanwhile
                # is lost, so this feed ends (the caller looks ids up until it has a new one).
                raise OperationalError("the revocations feed's connection dropped and came back")
            if message.get("type") == "message":
                yield _ids(message.get("data"))
    finally:
        await pubsub.aclose()  # type: ignore[no-untyped-call]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _ids(data: Any) -> list[str]:
    try:
        ids = json.loads(data)
    except (TypeError, ValueError):
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
