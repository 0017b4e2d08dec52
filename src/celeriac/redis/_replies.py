"""Replies to remote-control calls on Redis, laid out as kombu lays out a direct exchange.

Celery's ``reply.celery.pidbox`` is a direct exchange, which kombu's Redis transport keeps as lists:
the caller binds its reply list ``<key>.reply.celery.pidbox`` to routing key ``<key>`` (a member
``<key>\\x06\\x16\\x06\\x16<list>`` of the set ``_kombu.binding.reply.celery.pidbox``) and pops it;
a node that answers LPUSHes the kombu envelope to every list bound with that key. So a Celery client
reads our workers' replies and our clients read Celery workers' replies.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, cast

from celeriac.brokers.fanout import Subscription

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["is_direct", "push_reply", "reply_list"]

SEP = "\x06\x16"
#: How long one BRPOP waits before the reader looks again (it is cancelled when the caller is done).
_POP_SECONDS = 1
#: Readers cancelled but still in their last pop (asyncio keeps only weak references to tasks).
_lingering: set[asyncio.Task[None]] = set()


def is_direct(exchange: str) -> bool:
    """Whether kombu keeps ``exchange`` as bound lists (the pidbox reply exchange), not pub/sub."""
    return exchange.startswith("reply.") and exchange.endswith("pidbox")


def _binding(prefix: str, exchange: str) -> str:
    return f"{prefix}_kombu.binding.{exchange}"


async def push_reply(client: Redis, prefix: str, exchange: str, routing_key: str, envelope: bytes) -> int:
    """LPUSH ``envelope`` to every list bound to ``exchange`` with ``routing_key``; return how many."""
    members = cast(set[bytes], await client.smembers(_binding(prefix, exchange)))
    lists = {queue for key, _, queue in (m.decode().split(SEP) for m in members) if key == routing_key}
    if lists:
        async with client.pipeline(transaction=False) as pipe:
            for queue in sorted(lists):
                pipe.lpush(prefix + queue, envelope)
            await pipe.execute()
    return len(lists)


@contextlib.asynccontextmanager
async def reply_list(
    client: Redis, prefix: str, exchange: str, routing_key: str
) -> AsyncIterator[Subscription]:
    """Bind a reply list for ``routing_key`` and yield what arrives on it; unbound and deleted after."""
    queue = f"{routing_key}.{exchange}"
    member = SEP.join((routing_key, "", queue))
    subscription = Subscription(exchange)
    await client.sadd(_binding(prefix, exchange), member)

    async def read() -> None:
        try:
            while True:
                popped = await client.brpop([prefix + queue], timeout=_POP_SECONDS)
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError  # redis-py may swallow a cancel inside a command
                if popped is not None and popped[1]:  # b"" is the wake-up sent when the caller is done
                    data = popped[1]
                    subscription.feed(data if isinstance(data, bytes) else data.encode())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            subscription.fail(exc)

    reader = asyncio.create_task(read(), name="celeriac-redis-replies")
    try:
        yield subscription
    finally:
        reader.cancel()
        await asyncio.sleep(0)
        with contextlib.suppress(Exception):
            if not reader.done():
                # redis-py can swallow a cancel inside BRPOP, and the reader would hold its connection
                # until the pop times out: a caller pinging in a loop ran the pool out of connections.
                # An empty element wakes the pop at once; the reader then sees it was cancelled.
                await client.lpush(prefix + queue, b"")
                await asyncio.wait((reader,), timeout=_POP_SECONDS + 1)
            if not reader.done():
                _lingering.add(reader)
                reader.add_done_callback(_lingering.discard)
            async with client.pipeline(transaction=False) as pipe:
                pipe.srem(_binding(prefix, exchange), member)
                pipe.delete(prefix + queue)
                await pipe.execute()
