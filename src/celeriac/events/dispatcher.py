"""Sending events: Celery's envelope, a Lamport clock, and batches sent from the loop, never inline.

Every event carries ``type``, ``hostname``, ``timestamp`` (epoch seconds), ``utcoffset`` (hours *west*
of UTC, as Celery counts them), ``pid`` and ``clock``. ``send`` queues one event as one message (worker
events); ``send_batched`` gathers events into a list sent as one message with routing key
``task.multi``, as Celery's workers send task events. Neither waits: a sender task on the dispatcher's
loop publishes what gathered since its last round. Batched events wait up to ``linger`` seconds (0.05)
for company before they go, so a busy worker sends a few broadcasts a second, each of many task events
(up to ``max_batch``, 250), rather than one per turn of its loop: a broadcast costs the worker far more
than the events in it. A full batch, a worker event or ``flush`` sends at once. (Past a few hundred
events, a message costs more per event again: its copies outgrow what the allocator keeps at hand.)

Events are fire and forget, as in Celery: a broker that cannot broadcast (a plug-in without it) switches the
dispatcher off with one warning; one that is unreachable costs the events of that moment, logged once
per outage; what waits is bounded (``max_pending`` events), the oldest dropped first.
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
from json.encoder import encode_basestring_ascii
from typing import TYPE_CHECKING, Any

from celeriac.events import EXCHANGE, routing_key
from celeriac.protocol.message import Message

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker

__all__ = ["EventDispatcher", "clock", "envelope", "event_message", "quote", "utcoffset"]

log = logging.getLogger("celeriac.events")

#: This process's Lamport clock: every event sent moves it forward (Celery's ``app.clock``).
clock = itertools.count(1)


def quote(value: str | None) -> str:
    """``value`` as JSON text: a quoted, escaped string, or ``null`` for None."""
    return "null" if value is None else encode_basestring_ascii(value)


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


def event_message(body: dict[str, Any] | list[str], hostname: str) -> Message:
    """The message that carries an event, or a batch of events already written as JSON text: JSON,
    transient, header ``hostname``."""
    text = "[" + ",".join(body) + "]" if isinstance(body, list) else json.dumps(body, default=repr)
    return Message(
        body=text.encode(),
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
        max_batch: int = 250,
        max_pending: int = 100_000,
        publish_timeout: float = 10.0,
        linger: float = 0.05,
    ) -> None:
        self.broker = broker
        self.linger = linger
        self.hostname = hostname
        self.pid = os.getpid() if pid is None else pid
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.publish_timeout = publish_timeout
        self.dead = False
        self.sent = 0  # messages broadcast, for tests and the curious
        self.dropped = 0  # events given up on (broker unreachable, or not keeping up)
        self._utcoffset = utcoffset()
        self._head = self._head_of(self._utcoffset)
        self._tails: dict[str, str] = {}  # event type -> its field "type", as JSON text
        #: What waits to go, in order: (routing key, one event or a batch of them); ``_queued`` events.
        self._pending: deque[tuple[str, Any]] = deque()
        self._open: list[str] | None = None  # the last batch of ``_pending``, while it takes more
        self._queued = 0
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # send without lingering
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._failing = False

    def event(self, event_type: str, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` as an event of this node, stamped now."""
        fields["hostname"] = self.hostname
        fields["utcoffset"] = self._utcoffset
        fields["pid"] = self.pid
        fields["clock"] = next(clock)
        fields["timestamp"] = time.time()
        fields["type"] = event_type
        return fields

    def head(self, event_type: str) -> str:
        """The JSON text of an event of this node stamped now, up to its own fields: ``{"hostname": ...,
        "type": "<event_type>"``, no closing brace. With ``send_json``, for events sent so often that
        writing them by hand is worth it (a dict and ``json.dumps`` cost three times as much)."""
        tail = self._tails.get(event_type)
        if tail is None:
            tail = self._tails[event_type] = f',"type":{quote(event_type)}'
        # repr(time.time()) costs twice this: the digits of the nanoseconds, cut to microseconds.
        now = str(time.time_ns())
        return f'{self._head}{next(clock)},"timestamp":{now[:-9]}.{now[-9:-3]}{tail}'

    def _head_of(self, offset: int) -> str:
        return f'{{"hostname":{quote(self.hostname)},"utcoffset":{offset},"pid":{self.pid},"clock":'

    def send(self, event_type: str, **fields: Any) -> None:
        """Queue one event to go alone, after the batched ones queued before it."""
        if self.dead:
            return
        offset = utcoffset()  # worker events are rare: daylight saving time is followed here
        if offset != self._utcoffset:
            self._utcoffset, self._head = offset, self._head_of(offset)
        self._pending.append((routing_key(event_type), self.event(event_type, fields)))
        self._open = None  # task events after this one go after it
        self._hurry.set()
        self._added(1)

    def send_batched(self, event_type: str, **fields: Any) -> None:
        """Queue one event to go in a ``task.multi`` batch with the others gathered meanwhile."""
        if not self.dead:
            self.send_json(json.dumps(self.event(event_type, fields), default=repr))

    def send_json(self, text: str) -> None:
        """Queue one event, written as JSON text (see ``head``), to go in a ``task.multi`` batch."""
        batch = self._open
        if batch is not None and len(batch) < self.max_batch:
            # The batch still waits to go, so the sender knows there is work: only count it.
            batch.append(text)
            self._queued += 1
            if self._queued > self.max_pending:
                self._added(0)
            return
        if self.dead:
            return
        if self._pending:  # what waits fills a batch already
            self._hurry.set()
        batch = self._open = [text]
        self._pending.append(("task.multi", batch))
        self._added(1)

    async def flush(self) -> None:
        """Wait until every event queued so far has been sent (or given up on)."""
        if self._sender is None or self.dead:
            return
        self._hurry.set()
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

    def _added(self, count: int) -> None:
        self._queued += count
        while self._queued > self.max_pending:  # the broker does not keep up: the oldest go
            _, body = self._pending.popleft()
            if body is self._open:
                self._open = None
            lost = len(body) if isinstance(body, list) else 1
            self._queued -= lost
            self._dropped(lost, "the broker does not keep up")
        if self._idle.is_set():
            self._idle.clear()
            self._wake.set()
            if self._sender is None:
                self._sender = asyncio.get_running_loop().create_task(self._run(), name="celeriac-events")

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                if self.linger > 0 and not self._hurry.is_set():
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(self.linger):
                            await self._hurry.wait()
                self._hurry.clear()
                # What gathered by now goes (fewer, if the oldest were dropped meanwhile); later ones linger.
                count = len(self._pending)
                while count and self._pending:
                    count -= 1
                    key, body = self._pending.popleft()
                    if body is self._open:
                        self._open = None  # on its way: later events start another
                    self._queued -= len(body) if isinstance(body, list) else 1
                    await self._publish(key, body)
            self._idle.set()

    def _dropped(self, count: int, why: str) -> None:
        if not self._failing:
            log.warning("%s drops events until the broker answers again: %s", self.hostname, why)
        self._failing = True
        self.dropped += count

    async def _publish(self, key: str, body: Any) -> None:
        if self.dead:
            return
        try:
            async with asyncio.timeout(self.publish_timeout):
                await self.broker.broadcast(EXCHANGE, event_message(body, self.hostname), routing_key=key)
        except NotImplementedError as exc:
            self.dead = True
            self._pending.clear()
            self._open = None
            self._queued = 0
            log.warning("%s sends no events: %s", self.hostname, exc)
            return
        except Exception as exc:
            self._dropped(len(body) if isinstance(body, list) else 1, f"could not send events ({exc!r})")
            return
        if self._failing:
            log.info("%s sends events again", self.hostname)
            self._failing = False
        self.sent += 1
