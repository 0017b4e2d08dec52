"""A lean AMQP 0-9-1 connection that only publishes, with publisher confirms, on one channel.

A ``Publisher`` is a ``Connection`` (``_amqp_connection``: login, frames, heartbeats, ending). After
``confirm_select()``, ``publish`` writes Basic.Publish, the content header and the body frames in one
write, built with ``struct`` and our own property writer (``_amqp_codec``), and returns a future that
RabbitMQ's answer settles:

* Basic.Ack (one publish, or with ``multiple`` every earlier one): done.
* Basic.Nack: ``OperationalError`` (a queue refused it: full with ``x-overflow: reject-publish``, or
  RabbitMQ could not store it).
* Basic.Return before the ack (a mandatory message no queue took, e.g. 312 NO_ROUTE):
  ``MessageUnroutable``. A return carries no delivery tag, so it is matched by ``message_id``: a mandatory
  message without one is given a unique one on the wire (as aiormq does).
* The channel or the connection ending (a Channel.Close for a missing exchange, a lost socket, no
  heartbeat): ``OperationalError`` with the server's code and text, for every publish not yet settled.

Connection.Blocked (RabbitMQ short of memory or disk) is logged; publishes wait in the socket's buffer
until it unblocks. Like the consuming link it does not reconnect: its owner opens a new one.
"""

from __future__ import annotations

import asyncio
import logging
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from celeriac.amqp._codec import Properties, write_properties, write_short_string
from celeriac.amqp._connection import Connection, Content
from celeriac.exceptions import MessageUnroutable, OperationalError

if TYPE_CHECKING:
    from pamqp.base import Frame

__all__ = ["Publisher", "Returned"]

log = logging.getLogger(__name__)

_ACK = 0x003C0050  # Basic.Ack
_NACK = 0x003C0078  # Basic.Nack
_RETURN = 0x003C0032  # Basic.Return
_CONFIRM = struct.Struct(">QB").unpack_from  # delivery tag, bits (multiple first)
_REPLY_CODE = struct.Struct(">H").unpack_from
_FRAME_HEAD = struct.Struct(">BHI").pack  # frame type, channel, payload size
_PUBLISH_HEAD = struct.Struct(">BHIHHH").pack  # + class and method ids, the reserved short
_CONTENT_HEAD = struct.Struct(">BHIHHQH").pack  # + class id, weight, body size, property flags
_END = b"\xce"
_NACKED = "basic.nack: a queue refused it (full, with x-overflow reject-publish) or could not store it"
_SETTLED = (None, "")  # what an ack of a publish no longer pending settles


class Returned(Content):
    """A mandatory message RabbitMQ sent back: no queue took it."""

    __slots__ = ("exchange", "reply_code", "reply_text", "routing_key")

    def __init__(self, reply_code: int, reply_text: str, exchange: str, routing_key: str) -> None:
        super().__init__()
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.exchange = exchange
        self.routing_key = routing_key


class Publisher(Connection):
    """One AMQP connection with one channel (number 1) that publishes with confirms."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self._published = 0  # the delivery tag of the last publish (confirms number them from 1)
        self._confirming = False
        # Publishes not settled yet, oldest first: delivery tag -> (future, the caller's message id or "").
        self._pending: OrderedDict[int, tuple[asyncio.Future[None] | None, str]] = OrderedDict()
        # The message ids this publisher makes are this prefix and the delivery tag in hex; the ids
        # callers chose map to the tags of their mandatory publishes not settled yet, oldest first.
        self._ids = os.urandom(8).hex()
        self._chosen: dict[str, list[int]] = {}
        self._blocked = False

    @classmethod
    async def open(cls, url: str, options: Mapping[str, Any], *, what: str) -> Publisher:
        """Connect, log in, open channel 1 and put it in confirm mode (options and errors:
        ``Connection._connect``)."""
        publisher = cls(what)
        await publisher._connect(url, options)
        await publisher.confirm_select()
        return publisher

    async def confirm_select(self) -> None:
        """Put channel 1 in confirm mode: RabbitMQ acks (or nacks) every publish from now on."""
        from pamqp.commands import Confirm

        await self._call(1, Confirm.Select(), "Confirm.SelectOk")
        self._confirming = True

    def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
        *,
        mandatory: bool = True,
    ) -> asyncio.Future[None]:
        """Send a message; the future is done once RabbitMQ has it (module docstring for how it fails).

        Everything is checked and encoded before a byte is written: a bad header raises here and leaves
        the channel as it was.

        Raises:
            OperationalError: the publisher ended (why it did).
            TypeError, ValueError: a property or header AMQP cannot carry, an exchange or routing key past
                255 bytes, or properties larger than a frame.
        """
        if self._ended or self._transport is None:
            raise self._closed_error()
        if not self._confirming:
            raise RuntimeError(f"{self._what}: confirm_select() first")
        tag = self._published + 1
        chosen = (properties.message_id or "") if mandatory else ""
        if mandatory and not chosen:
            properties.message_id = f"{self._ids}{tag:016x}"
            try:
                flags, encoded = write_properties(properties)
            finally:
                properties.message_id = None  # the caller's object stays as it was
        else:
            flags, encoded = write_properties(properties)
        names = write_short_string(exchange, "exchange name") + write_short_string(routing_key, "routing key")
        header_size = 14 + len(encoded)
        if header_size + 8 > self._frame_max:
            raise ValueError(
                f"the message's properties and headers take {len(encoded)} bytes; a frame holds "
                f"{self._frame_max - 22} at most here"
            )
        size = len(body)
        frames: list[bytes | memoryview] = [
            _PUBLISH_HEAD(1, 1, len(names) + 7, 60, 40, 0),
            names,
            b"\x01\xce" if mandatory else b"\x00\xce",
            _CONTENT_HEAD(2, 1, header_size, 60, 0, size, flags),
            encoded,
            _END,
        ]
        step = self._frame_max - 8
        if size <= step:
            if size:
                frames += (_FRAME_HEAD(3, 1, size), body, _END)
        else:
            view = memoryview(body)
            for start in range(0, size, step):
                chunk = view[start : start + step]
                frames += (_FRAME_HEAD(3, 1, len(chunk)), chunk, _END)
        self._write(b"".join(frames))
        self._published = tag
        future: asyncio.Future[None] = self._loop.create_future()
        self._pending[tag] = (future, chosen)
        if chosen:
            self._chosen.setdefault(chosen, []).append(tag)
        return future

    # -- reading

    def _fast(self, method: int, data: bytes, offset: int) -> bool:
        if method == _ACK:
            tag, bits = _CONFIRM(data, offset)
            self._confirm(tag, bits & 1 == 1, None)
        elif method == _NACK:
            tag, bits = _CONFIRM(data, offset)
            self._confirm(tag, bits & 1 == 1, _NACKED)
        elif method == _RETURN:
            (code,) = _REPLY_CODE(data, offset)
            p = offset + 2
            texts = []
            for _ in range(3):  # reply text, exchange, routing key
                k = data[p]
                p += k + 1
                texts.append(data[p - k : p].decode("utf-8", "replace"))
            self._begin(Returned(code, *texts))
        else:
            return False
        return True

    def _confirm(self, tag: int, multiple: bool, refused: str | None) -> None:
        pending = self._pending
        if not multiple:
            self._settle(tag, pending.pop(tag, _SETTLED), refused)
            return
        while pending:
            oldest = next(iter(pending))
            if oldest > tag:
                break
            self._settle(oldest, pending.pop(oldest), refused)

    def _settle(self, tag: int, entry: tuple[asyncio.Future[None] | None, str], refused: str | None) -> None:
        future, chosen = entry
        if chosen:
            self._unchoose(chosen, tag)
        if future is None or future.done():
            return  # settled by its return, or its caller gave up
        if refused is None:
            future.set_result(None)
        else:
            future.set_exception(OperationalError(f"RabbitMQ refused the message ({refused})"))

    def _unchoose(self, message_id: str, tag: int) -> None:
        tags = self._chosen.get(message_id)
        if tags is not None and tag in tags:
            tags.remove(tag)
            if not tags:
                del self._chosen[message_id]

    def _complete(self, content: Content) -> None:
        # Returns come in the order of the publishes; a caller's message id shared by several publishes
        # in flight is taken for the oldest of them.
        assert isinstance(content, Returned)
        message_id = content.properties.message_id or ""
        tag: int | None = None
        if message_id.startswith(self._ids) and len(message_id) == 32:
            tag = int(message_id[16:], 16)
        elif message_id in self._chosen:
            tag = self._chosen[message_id][0]
        entry = self._pending.get(tag) if tag is not None else None
        if tag is None or entry is None:
            log.warning(
                "%s: RabbitMQ returned a message (id %r) that no publish waits for: %d %s",
                self._what,
                message_id,
                content.reply_code,
                content.reply_text,
            )
            return
        future, chosen = entry
        self._pending[tag] = (None, "")  # its ack follows, with nothing left to settle
        if chosen:
            self._unchoose(chosen, tag)
        if future is not None and not future.done():
            future.set_exception(
                MessageUnroutable(f"RabbitMQ returned the message: {content.reply_code} {content.reply_text}")
            )

    def _other(self, method: Frame) -> None:
        from pamqp.commands import Connection as Methods

        if isinstance(method, Methods.Blocked | Methods.Unblocked):
            blocked = isinstance(method, Methods.Blocked)
            if blocked != self._blocked:
                self._blocked = blocked
                if isinstance(method, Methods.Blocked):
                    log.warning(
                        "%s: RabbitMQ blocked publishing (%s); publishes wait until it unblocks",
                        self._what,
                        method.reason,
                    )
                else:
                    log.warning("%s: RabbitMQ unblocked publishing", self._what)
        else:
            super()._other(method)

    # -- ending

    def _end(self, reason: OperationalError | None) -> None:
        if self._ended:
            return
        super()._end(reason)
        pending, self._pending = self._pending, OrderedDict()
        self._chosen.clear()
        for future, _ in pending.values():
            if future is not None and not future.done():
                future.set_exception(self._closed_error())
