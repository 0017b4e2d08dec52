"""Sending events: Celery's envelope, a Lamport clock, and batches sent from the loop, never inline.

Every event carries ``type``, ``hostname``, ``timestamp`` (epoch seconds), ``utcoffset`` (hours *west*
of UTC, as Celery counts them), ``pid`` and ``clock``. ``send`` queues one event as one message (worker
events); ``send_batched`` gathers events into a list sent as one message with routing key
``task.multi``, at most ``buffer_limit`` (24, Celery's) to a message, as Celery's workers send task
events. Neither waits: a sender task on the dispatcher's loop publishes what gathered since its last
round, so a busy worker sends one broadcast per 24 task events rather than one per event.

Events are fire and forget, as in Celery: a broker that cannot broadcast (SQL, for now) switches the
dispatcher off with one warning; one that is unreachable costs the events of that moment, logged once
per outage; what waits is bounded (``max_pending``), the oldest dropped first.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import os
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from celeriac.events import EXCHANGE, routing_key
from celeriac.protocol.message import Message

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker

__all__ = ["BUFFER_LIMIT", "EventDispatcher", "clock", "envelope", "event_message", "utcoffset"]

log = logging.getLogger("celeriac.events")

#: Task events in one ``task.multi`` message (Celery's ``buffer_limit``).
BUFFER_LIMIT = 24

#: This process's Lamport clock: every event sent moves it forward (Celery's ``app.clock``).
clock = itertools.count(1)


def utcoffset() -> int:
    """Hours west of UTC now (New York: 5, Berlin: -1), daylight saving time included, as Celery sends."""
    if time.daylight and time.localtime().tm_isdst > 0:
        return time.altzone // 3600
    return time.timezone // 3600


def envelope(
    event_type: str, hostname: str, fields: dict[str, Any], pid: int | None = None
) -> dict[str, Any]:
    """An event as Celery sends it: ``fields`` and the common ones, stamped now with the next clock."""
    return {
        "hostname": hostname,
        "utcoffset": utcoffset(),
        "pid": os.getpid() if pid is None else pid,
        "clock": next(clock),
        **fields,
        "timestamp": time.time(),
        "type": event_type,
    }


def event_message(body: dict[str, Any] | list[dict[str, Any]], hostname: str) -> Message:
    """The message that carries an event (or a batch of them): JSON, transient, header ``hostname``."""
    return Message(
        body=json.dumps(body, default=repr).encode(),
        headers={"hostname": hostname},
        properties={"delivery_mode": 1},
    )


class EventDispatcher:
    """Sends the events of one node (``hostname``) through ``broker``, from the loop that made it.

    ``send``/``send_batched`` may be called from that loop only; ``flush`` waits until what was queued
    is sent, and ``aclose`` flushes and stops the sender. ``dead`` turns true when the broker cannot
    broadcast at all: from then on events are dropped without a word.
    """

    def __init__(
        self,
        broker: Broker,
        hostname: str,
        *,
        pid: int | None = None,
        buffer_limit: int = BUFFER_LIMIT,
        max_pending: int = 10_000,
        publish_timeout: float = 10.0,
    ) -> None:
        self.broker = broker
        self.hostname = hostname
        self.pid = os.getpid() if pid is None else pid
        self.buffer_limit = buffer_limit
        self.publish_timeout = publish_timeout
        self.dead = False
        self.sent = 0  # messages broadcast, for tests and the curious
        self._utcoffset = utcoffset()
        self._batch: list[dict[str, Any]] = []
        self._pending: deque[tuple[str, dict[str, Any] | list[dict[str, Any]]]] = deque(maxlen=max_pending)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._failing = False

    def event(self, event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` as an event of this node, stamped now."""
        return {
            "hostname": self.hostname,
            "utcoffset": self._utcoffset,
            "pid": self.pid,
            "clock": next(clock),
            **fields,
            "timestamp": time.time(),
            "type": event_type,
        }

    def send(self, event_type: str, **fields: Any) -> None:
        """Queue one event to go alone, after the batched ones queued before it."""
        if self.dead:
            return
        self._utcoffset = utcoffset()  # worker events are rare: daylight saving time is followed here
        self._seal()
        self._pending.append((routing_key(event_type), self.event(event_type, fields)))
        self._kick()

    def send_batched(self, event_type: str, **fields: Any) -> None:
        """Queue one event to go in a ``task.multi`` batch (the sender's next round, or when full)."""
        if self.dead:
            return
        self._batch.append(self.event(event_type, fields))
        if len(self._batch) >= self.buffer_limit:
            self._seal()
        self._kick()

    async def flush(self) -> None:
        """Wait until every event queued so far has been sent (or given up on)."""
        if self._sender is None or self.dead:
            return
        self._wake.set()
        await self._idle.wait()

    async def aclose(self) -> None:
        """Flush, then stop the sender."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(), self.publish_timeout)
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.wait((sender,))

    def _seal(self) -> None:
        if self._batch:
            self._pending.append(("task.multi", self._batch))
            self._batch = []

    def _kick(self) -> None:
        self._idle.clear()
        self._wake.set()
        if self._sender is None:
            self._sender = asyncio.get_running_loop().create_task(self._run(), name="celeriac-events")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._seal()
            while self._pending:
                key, body = self._pending.popleft()
                await self._publish(key, body)
                self._seal()  # what gathered while that went out goes next
            if not self._batch:
                self._idle.set()

    async def _publish(self, key: str, body: dict[str, Any] | list[dict[str, Any]]) -> None:
        if self.dead:
            return
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self.broker.broadcast(EXCHANGE, event_message(body, self.hostname), routing_key=key)
        except NotImplementedError as exc:
            self.dead = True
            self._pending.clear()
            self._batch.clear()
            log.warning("%s sends no events: %s", self.hostname, exc)
            return
        except Exception as exc:
            if not self._failing:
                log.warning(
                    "%s could not send events (%r); dropping them until the broker answers",
                    self.hostname,
                    exc,
                )
            self._failing = True
            return
        if self._failing:
            log.info("%s sends events again", self.hostname)
            self._failing = False
        self.sent += 1
