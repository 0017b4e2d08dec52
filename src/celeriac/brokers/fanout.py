"""Broadcast subscriptions: what a broker's ``subscribe`` hands out, and routing-key patterns.

A subscription is fed raw envelopes by its broker (from a pub/sub connection, or in-process) and
yields decoded messages. An envelope that cannot be read is logged with the reason and skipped: a
broadcast has no queue to dead-letter it to, and one bad sender must not silence the others.
"""

from __future__ import annotations

import asyncio
import fnmatch
import logging

from celeriac.exceptions import DecodeError
from celeriac.protocol.envelope import from_envelope
from celeriac.protocol.message import Message

__all__ = ["Subscription", "glob_of", "matches"]

log = logging.getLogger("celeriac.brokers")


def glob_of(pattern: str) -> str:
    """A routing-key pattern as a glob: ``#`` and ``*`` both match any run of characters (as kombu's
    Redis transport subscribes with ``#`` turned into ``*``)."""
    return pattern.replace("#", "*")


def matches(pattern: str, routing_key: str) -> bool:
    """Whether a message sent with ``routing_key`` reaches a subscriber of ``pattern`` ("#": all)."""
    return pattern == "#" or fnmatch.fnmatchcase(routing_key, glob_of(pattern))


class Subscription:
    """Messages broadcast to one exchange since the subscription began: ``async for m in sub``.

    Iteration ends with the error that broke the subscription (e.g. a lost connection), so a listener
    knows to subscribe again rather than wait forever.
    """

    def __init__(self, exchange: str) -> None:
        self.exchange = exchange
        self._inbox: asyncio.Queue[bytes | BaseException] = asyncio.Queue()

    def feed(self, payload: bytes) -> None:
        """Deliver an envelope (call on the subscription's loop)."""
        self._inbox.put_nowait(payload)

    def fail(self, error: BaseException) -> None:
        """End the iteration with ``error`` once what arrived before it has been read."""
        self._inbox.put_nowait(error)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        while True:
            item = await self._inbox.get()
            if isinstance(item, BaseException):
                self._inbox.put_nowait(item)  # every later read ends the same way
                raise item
            try:
                return from_envelope(item)
            except DecodeError as exc:
                log.warning(
                    "skipped an unreadable broadcast on %r (%s): %r", self.exchange, exc.reason, item[:200]
                )
