"""A lean AMQP 0-9-1 connection that only consumes: one channel, deliveries parsed straight off the socket.

A ``Link`` is a ``Connection`` (``_amqp_connection``: login, frames, heartbeats, ending) that turns each
Basic.Deliver, content header and body frames into a ``Delivered`` with its own decoder
(``_amqp_codec``), and hands it to ``on_delivery`` at once, in the same call as the socket's read. Acks
are 21 bytes built with ``struct`` and written straight to the transport. Qos, consume and cancel are
built and read with pamqp.

It publishes nothing (that is the ``Publisher``'s job, on a connection of its own) and declares nothing.
It does not reconnect: its ``closing`` future says when and why it ended, and its owner opens a new one
(RabbitMQ has requeued whatever the old one held unacked).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from celeriac.amqp._codec import Properties
from celeriac.amqp._connection import Connection, Content
from celeriac.exceptions import OperationalError

if TYPE_CHECKING:
    from pamqp.base import Frame

__all__ = ["Delivered", "Link", "Properties"]

log = logging.getLogger(__name__)

_DELIVER = 0x003C003C  # Basic.Deliver
_DELIVER_REST = struct.Struct(">QB").unpack_from  # delivery tag, redelivered bit
_SETTLE = struct.Struct(">BHIHHQBB").pack  # a whole Basic.Ack/Nack frame on channel 1


class Delivered(Content):
    """One message pushed by RabbitMQ. Settle it on ``link`` only while that link is open: a delivery
    tag means nothing on another connection, and RabbitMQ requeued it when its own one ended."""

    __slots__ = ("consumer_tag", "delivery_tag", "exchange", "link", "redelivered", "routing_key")

    def __init__(
        self,
        link: Link,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
    ) -> None:
        super().__init__()  # body and properties are filled in as their frames arrive
        self.link = link
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key

    def __repr__(self) -> str:
        return (
            f"<Delivered {self.delivery_tag} of {self.consumer_tag!r} from {self.exchange!r}/"
            f"{self.routing_key!r}, {len(self.body)} bytes>"
        )


class Link(Connection):
    """One AMQP connection with one channel (number 1) that only consumes.

    ``on_delivery`` is called for each complete delivery, synchronously, from the event loop's read of
    the socket; ``on_batch`` after a read that completed at least one (the place to wake a waiting
    consumer once rather than per message); ``on_cancel`` with the consumer tag RabbitMQ cancelled (its
    queue was deleted). An exception from ``on_delivery`` ends the link.

    ``closing`` is done once the link ended: with the reason (an ``OperationalError``), or None when
    ``close()`` ended it. After that, nothing is delivered and settling raises.
    """

    def __init__(
        self,
        what: str,
        on_delivery: Callable[[Delivered], None],
        on_batch: Callable[[], None] | None,
        on_cancel: Callable[[str], None] | None,
    ) -> None:
        super().__init__(what)
        self._on_delivery = on_delivery
        self._on_batch = on_batch
        self._on_cancel = on_cancel

    @classmethod
    async def open(
        cls,
        url: str,
        options: Mapping[str, Any],
        *,
        what: str,
        on_delivery: Callable[[Delivered], None],
        on_batch: Callable[[], None] | None = None,
        on_cancel: Callable[[str], None] | None = None,
    ) -> Link:
        """Connect, log in and open channel 1 (options and errors: ``Connection._connect``)."""
        link = cls(what, on_delivery, on_batch, on_cancel)
        await link._connect(url, options)
        return link

    # -- what the consumer calls

    async def qos(self, prefetch: int) -> None:
        """Let RabbitMQ push at most ``prefetch`` unacked messages to each consumer started after this."""
        from pamqp.commands import Basic

        await self._call(1, Basic.Qos(prefetch_count=prefetch, global_=False), "Basic.QosOk")

    async def consume(self, queue: str, arguments: Mapping[str, Any] | None = None) -> str:
        """Start a consumer (acks required) on ``queue``; return its consumer tag."""
        from pamqp.commands import Basic

        method = Basic.Consume(queue=queue, arguments=dict(arguments or {}))
        ok = await self._call(1, method, "Basic.ConsumeOk")
        assert isinstance(ok, Basic.ConsumeOk)
        return str(ok.consumer_tag)

    async def cancel(self, consumer_tag: str) -> None:
        """Stop a consumer; what RabbitMQ pushed before it confirmed still arrives (before this returns)."""
        from pamqp.commands import Basic

        await self._call(1, Basic.Cancel(consumer_tag=consumer_tag), "Basic.CancelOk")

    def ack(self, delivery_tag: int, *, multiple: bool = False) -> None:
        """Acknowledge a delivery (and, with ``multiple``, every earlier one); written at once."""
        self._write(_SETTLE(1, 1, 13, 60, 80, delivery_tag, multiple, 0xCE))

    def nack(self, delivery_tag: int, *, requeue: bool, multiple: bool = False) -> None:
        """Reject a delivery (and, with ``multiple``, every earlier one): requeued, or dropped (or
        dead-lettered by the queue's policy)."""
        self._write(_SETTLE(1, 1, 13, 60, 120, delivery_tag, multiple | requeue << 1, 0xCE))

    # -- reading

    def _fast(self, method: int, data: bytes, offset: int) -> bool:
        if method != _DELIVER:
            return False
        p = offset
        k = data[p]
        p += k + 1
        consumer_tag = data[p - k : p].decode("utf-8", "replace")
        delivery_tag, bits = _DELIVER_REST(data, p)
        k = data[p + 9]
        p += k + 10
        exchange = data[p - k : p].decode("utf-8", "replace")
        k = data[p]
        p += k + 1
        routing_key = data[p - k : p].decode("utf-8", "replace")
        self._begin(Delivered(self, consumer_tag, delivery_tag, (bits & 1) == 1, exchange, routing_key))
        return True

    def _complete(self, content: Content) -> None:
        if self._ended:
            return  # RabbitMQ requeues it: nobody could ack it now
        assert isinstance(content, Delivered)
        try:
            self._on_delivery(content)
        except Exception as exc:  # a bug of the consumer, not of the connection; RabbitMQ requeues
            log.error("%s: on_delivery failed; closing the link", self._what, exc_info=True)
            error = OperationalError(f"{self._what}: handling a delivery failed: {exc!r}")
            error.__cause__ = exc
            self._end(error)
            self._goodbye()

    def _after_read(self) -> None:
        if self._on_batch is not None:
            self._on_batch()

    def _other(self, method: Frame) -> None:
        from pamqp.commands import Basic

        if isinstance(method, Basic.Cancel):  # the queue went away
            if not method.nowait:
                self._send(1, Basic.CancelOk(consumer_tag=method.consumer_tag))
            if self._on_cancel is not None:
                self._on_cancel(str(method.consumer_tag))
        else:  # Connection.Blocked/Unblocked (we only ack), or a reply nobody waits for any more
            super()._other(method)
