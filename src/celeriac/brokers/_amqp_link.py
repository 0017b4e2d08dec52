"""A lean AMQP 0-9-1 connection that only consumes: one channel, deliveries parsed straight off the socket.

aiormq reads every frame through a stream reader, a lock, pamqp's generic unmarshalling, a queue per
channel and a task per delivery; for a worker draining small messages that is most of its CPU. A
``Link`` is an ``asyncio.Protocol``: ``data_received`` cuts the bytes it got into frames, turns each
Basic.Deliver, content header and body frames into a ``Delivered`` with its own decoder
(``_amqp_codec``), and hands it to ``on_delivery`` at once, in the same call. Acks are 21 bytes built
with ``struct`` and written straight to the transport. The rare frames (handshake, qos, consume,
cancel, close) are built and read with pamqp.

It publishes nothing and declares nothing: the broker keeps aiormq for that. It does not reconnect: its
``closing`` future says when and why it ended, and its owner opens a new one (RabbitMQ has requeued
whatever the old one held unacked).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celeriac._amqp import amqp_url, tls_context
from celeriac.brokers._amqp_codec import Properties, read_properties
from celeriac.exceptions import MissingDependency, OperationalError

if TYPE_CHECKING:
    from pamqp.base import Frame

__all__ = ["Delivered", "Link", "Properties"]

log = logging.getLogger(__name__)

_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_HEAD = struct.Struct(">BHI").unpack_from  # frame type, channel, payload size
_METHOD = struct.Struct(">I").unpack_from  # class id and method id as one number
_DELIVER = 0x003C003C  # Basic.Deliver
_DELIVER_REST = struct.Struct(">QB").unpack_from  # delivery tag, redelivered bit
_CONTENT = struct.Struct(">HHQH").unpack_from  # class, weight, body size, first property flags
_FLAGS = struct.Struct(">H").unpack_from
_SETTLE = struct.Struct(">BHIHHQBB").pack  # a whole Basic.Ack/Nack frame on channel 1
_MIN_FRAME_MAX = 131072  # what we ask for when the server sets no limit
_CLOSE_WAIT = 2.0


class Delivered:
    """One message pushed by RabbitMQ. Settle it on ``link`` only while that link is open: a delivery
    tag means nothing on another connection, and RabbitMQ requeued it when its own one ended."""

    __slots__ = (
        "body",
        "consumer_tag",
        "delivery_tag",
        "error",
        "exchange",
        "link",
        "properties",
        "redelivered",
        "routing_key",
    )

    def __init__(
        self,
        link: Link,
        consumer_tag: str,
        delivery_tag: int,
        redelivered: bool,
        exchange: str,
        routing_key: str,
        body: bytes,
        properties: Properties,
    ) -> None:
        self.link = link
        self.consumer_tag = consumer_tag
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.exchange = exchange
        self.routing_key = routing_key
        self.body = body
        self.properties = properties
        #: Why the properties could not be read (they are then empty); None for a sound message.
        self.error: str | None = None

    def __repr__(self) -> str:
        return (
            f"<Delivered {self.delivery_tag} of {self.consumer_tag!r} from {self.exchange!r}/"
            f"{self.routing_key!r}, {len(self.body)} bytes>"
        )


_NO_PROPERTIES = Properties()


class Link(asyncio.Protocol):
    """One AMQP connection with one channel (number 1) that only consumes.

    ``on_delivery`` is called for each complete delivery, synchronously, from the event loop's read of
    the socket; ``on_batch`` after a read that completed at least one (the place to wake a waiting
    consumer once rather than per message); ``on_cancel`` with the consumer tag RabbitMQ cancelled (its
    queue was deleted). An exception from ``on_delivery`` ends the link.

    ``closing`` is done once the link ended: with the reason (an ``OperationalError``), or None when
    ``close()`` ended it. After that, nothing is delivered and settling raises.
    """

    closing: asyncio.Future[BaseException | None]

    def __init__(
        self,
        what: str,
        on_delivery: Callable[[Delivered], None],
        on_batch: Callable[[], None] | None,
        on_cancel: Callable[[str], None] | None,
    ) -> None:
        self._what = what
        self._on_delivery = on_delivery
        self._on_batch = on_batch
        self._on_cancel = on_cancel
        self._loop = asyncio.get_running_loop()
        self.closing = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._ended = False
        # Reading: a partial frame kept for the next read, and how many bytes it needs to be whole.
        self._rest = bytearray()
        self._need = 0
        self._frame_max = _MIN_FRAME_MAX
        self._delivering: Delivered | None = None  # a Basic.Deliver whose content is still coming
        self._remaining = 0  # body bytes still to come for it (-1: its content header has not come)
        self._chunks: list[bytes] = []
        # Synchronous methods: one at a time, each waiting for the reply of the name it expects.
        self._lock = asyncio.Lock()
        self._waiter: asyncio.Future[Frame] | None = None
        self._expected = ""
        self._drained: asyncio.Future[None] | None = None
        # Heartbeats: whether anything was read or written since the last beat.
        self._heartbeat = 0
        self._heard = self._wrote = False
        self._last_heard = self._loop.time()
        self._timer: asyncio.TimerHandle | None = None
        self._close_timer: asyncio.TimerHandle | None = None  # aborts a goodbye RabbitMQ never answers

    # -- opening

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
        """Connect, log in and open channel 1.

        Options (``celeriac._amqp``'s): ``heartbeat`` in seconds (None: the server's proposal, at most
        60; 0: none), ``connect_timeout`` (default 4 s, for all of it), ``ssl`` (TLS settings for
        ``amqps://``), ``connection_name`` (what RabbitMQ shows; default ``what``).

        Raises:
            OperationalError: the server did not answer in time, refused the login (naming the user and
                virtual host) or closed the connection.
        """
        try:
            import pamqp.frame  # noqa: F401  (the rare frames are pamqp's)
        except ImportError as exc:
            raise MissingDependency(what, "amqp") from exc
        target, tls = amqp_url(url, options)
        parts = urlsplit(target)
        host, port = parts.hostname or "localhost", parts.port or (5671 if tls else 5672)
        user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
        vhost = "/" if parts.path in ("", "/", "//") else unquote(parts.path[1:])
        query = dict(parse_qsl(parts.query))
        heartbeat = int(query["heartbeat"]) if "heartbeat" in query else None
        context = tls_context(dict(options.get("ssl") or {}), what=what) if tls else None
        name = str(options.get("connection_name") or what)
        timeout = float(options.get("connect_timeout", 4.0))
        where = f"{host}:{port} (vhost {vhost!r})"  # never the password

        link = cls(what, on_delivery, on_batch, on_cancel)
        step = "connect to"
        try:
            async with asyncio.timeout(timeout):
                started = link._expect("Connection.Start")  # the server speaks first
                await link._loop.create_connection(
                    lambda: link, host, port, ssl=context, server_hostname=host if context else None
                )
                start = await started
                step = f"log in as {user!r} to"
                tune = await link._login(start, user, password, name)
                step = f"open the vhost as {user!r} on"
                await link._tune(tune, heartbeat, vhost)
        except BaseException as exc:
            link._abort()
            if isinstance(exc, TimeoutError):
                raise OperationalError(f"{what} cannot {step} {where}: no answer in {timeout:g} s") from exc
            if isinstance(exc, (OSError, OperationalError, ValueError)):
                raise OperationalError(f"{what} cannot {step} {where}: {exc}") from exc
            raise
        return link

    async def _login(self, start: Frame, user: str, password: str, name: str) -> Frame:
        from pamqp.commands import Connection

        assert isinstance(start, Connection.Start)
        if "PLAIN" not in str(start.mechanisms).split():
            raise OperationalError(f"the server offers no PLAIN login (only {start.mechanisms})")
        capabilities = dict.fromkeys(
            (
                "consumer_cancel_notify",
                "connection.blocked",
                "basic.nack",
                "publisher_confirms",
                "authentication_failure_close",
                "per_consumer_qos",
            ),
            True,
        )
        properties: dict[str, Any] = {
            "product": "celeriac",
            "connection_name": name,
            "capabilities": capabilities,
        }
        login = Connection.StartOk(
            client_properties=properties,
            mechanism="PLAIN",
            response=f"\0{user}\0{password}",
            locale="en_US",
        )
        return await self._call(0, login, "Connection.Tune")

    async def _tune(self, tune: Frame, heartbeat: int | None, vhost: str) -> None:
        from pamqp.commands import Channel, Connection

        assert isinstance(tune, Connection.Tune)
        self._frame_max = tune.frame_max or _MIN_FRAME_MAX
        if heartbeat is None:
            heartbeat = min(tune.heartbeat, 60)
        self._send(0, Connection.TuneOk(tune.channel_max, self._frame_max, heartbeat))
        self._start_heartbeats(heartbeat)
        await self._call(0, Connection.Open(virtual_host=vhost), "Connection.OpenOk")
        await self._call(1, Channel.Open(), "Channel.OpenOk")

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

    async def flush(self) -> None:
        """Return once everything written (acks) has left the transport's buffer."""
        transport = self._transport
        if transport is None or self._ended:
            raise self._closed_error()
        if transport.get_write_buffer_size() == 0:
            return
        if self._drained is None:
            self._drained = self._loop.create_future()
            # With no high-water mark the transport pauses us at once and resumes us when it is empty.
            transport.set_write_buffer_limits(high=0)
        await asyncio.shield(self._drained)
        if self._ended:
            raise self._closed_error()

    @property
    def is_closed(self) -> bool:
        """Whether the link ended (deliveries it made can no longer be settled)."""
        return self._ended

    async def close(self) -> None:
        """Say goodbye (Connection.Close, waiting for CloseOk at most 2 s) and close the socket; safe to
        call again, and after the link ended by itself."""
        if self._transport is None:
            return
        if not self._ended:
            self._end(None)
            self._goodbye()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._lost), _CLOSE_WAIT + 1)

    # -- synchronous methods and writing

    async def _call(self, channel: int, method: Frame, reply: str) -> Frame:
        async with self._lock:
            if self._ended:
                raise self._closed_error()
            waiter = self._expect(reply)
            self._send(channel, method)
            return await waiter

    def _expect(self, reply: str) -> asyncio.Future[Frame]:
        """A future for the next method named ``reply`` (``"Basic.QosOk"``), failed if the link ends."""
        self._waiter, self._expected = self._loop.create_future(), reply
        return self._waiter

    def _send(self, channel: int, method: Frame) -> None:
        self._write(_marshal(method, channel))

    def _write(self, frame: bytes) -> None:
        if self._ended or self._transport is None:
            raise self._closed_error()
        self._transport.write(frame)
        self._wrote = True

    def _closed_error(self) -> OperationalError:
        """A new error (each raise its own traceback) telling why the link ended."""
        reason = self.closing.result() if self.closing.done() else None
        if reason is None:
            return OperationalError(f"{self._what}: the RabbitMQ connection is closed")
        error = OperationalError(str(reason))
        error.__cause__ = reason
        return error

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(_PROTOCOL_HEADER)

    def connection_lost(self, exc: Exception | None) -> None:
        why = f" ({exc})" if exc else ""
        self._end(OperationalError(f"{self._what} lost its connection to RabbitMQ{why}"))
        if not self._lost.done():
            self._lost.set_result(None)
        if self._close_timer is not None:
            self._close_timer.cancel()

    def pause_writing(self) -> None:
        pass  # acks are small and bounded by the prefetch: they are never held back

    def resume_writing(self) -> None:
        self._resume()

    def _resume(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            if self._transport is not None and not self._transport.is_closing():
                self._transport.set_write_buffer_limits()
            drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._heard = True
        if type(data) is not bytes:
            data = bytes(data)  # slices of it become message bodies
        rest = self._rest
        if rest:
            rest += data
            if len(rest) < self._need:
                return
            data = bytes(rest)
            rest.clear()
        try:
            delivered = self._frames(data)
        except (ValueError, IndexError, struct.error) as exc:
            self._end(OperationalError(f"{self._what} got a malformed frame from RabbitMQ: {exc}"))
            self._abort()
            return
        if delivered and self._on_batch is not None and not self._ended:
            self._on_batch()

    def _frames(self, data: bytes) -> int:
        """Handle every whole frame in ``data``, keep the partial one; return how many deliveries were
        completed."""
        completed = 0
        pos, size_of_data = 0, len(data)
        need = 8
        while size_of_data - pos >= 8:
            kind, channel, size = _HEAD(data, pos)
            stop = pos + 7 + size  # where the frame-end octet is
            if stop >= size_of_data:
                need = size + 8
                if kind not in (1, 2, 3, 8):
                    raise ValueError(f"unknown frame type {kind} (is this an AMQP 0-9-1 server?)")
                if need > self._frame_max:
                    raise ValueError(f"a frame of {need} bytes, over the agreed {self._frame_max}")
                break
            if data[stop] != 0xCE:
                raise ValueError(f"frame end {data[stop]:#x} instead of 0xce")
            if kind == 3:  # body
                delivered = self._delivering
                remaining = self._remaining - size
                if delivered is None or remaining < 0:
                    raise ValueError("a body frame outside a delivery's content")
                self._remaining = remaining
                if remaining == 0 and not self._chunks:
                    delivered.body = data[pos + 7 : stop]
                else:
                    self._chunks.append(data[pos + 7 : stop])
                    if remaining == 0:
                        delivered.body = b"".join(self._chunks)
                        self._chunks = []
                if remaining == 0:
                    self._delivering = None
                    completed += 1
                    self._deliver(delivered)
            elif kind == 1:  # method
                if channel == 1 and _METHOD(data, pos + 7)[0] == _DELIVER:
                    if self._delivering is not None:
                        raise ValueError("a Basic.Deliver before the previous delivery's content")
                    p = pos + 11  # past the class and method ids
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
                    # Properties and body are filled in as their frames arrive; -1: no header yet.
                    self._remaining = -1
                    self._delivering = Delivered(
                        self,
                        consumer_tag,
                        delivery_tag,
                        (bits & 1) == 1,
                        exchange,
                        routing_key,
                        b"",
                        _NO_PROPERTIES,
                    )
                else:
                    self._method(channel, data[pos : stop + 1])
            elif kind == 2:  # content header
                delivered = self._delivering
                if delivered is None or self._remaining != -1:
                    raise ValueError("a content header outside a delivery")
                _, _, body_size, flags = _CONTENT(data, pos + 7)
                p, word = pos + 21, flags
                while word & 1:  # more flag words follow (none are defined for basic)
                    (word,) = _FLAGS(data, p)
                    p += 2
                try:
                    delivered.properties, p = read_properties(data, p, flags)
                    if p > stop:
                        raise ValueError("message properties overrun their frame")
                except (ValueError, IndexError, struct.error) as exc:
                    # The frame's size is sound, so the stream is: only this message is unreadable.
                    # It is delivered with the reason, for the consumer to set aside (not redelivered
                    # in a loop, as ending the link would do).
                    delivered.error = f"unreadable AMQP properties: {exc}"
                self._remaining = body_size
                if not body_size:
                    self._delivering = None
                    completed += 1
                    self._deliver(delivered)
            elif kind != 8:  # 8: a heartbeat, which only needed to arrive
                raise ValueError(f"unknown frame type {kind}")
            pos = stop + 1
        if pos < size_of_data:
            self._rest += memoryview(data)[pos:]
            self._need = need
        return completed

    def _deliver(self, delivered: Delivered) -> None:
        if self._ended:
            return  # RabbitMQ requeues it: nobody could ack it now
        try:
            self._on_delivery(delivered)
        except Exception as exc:  # a bug of the consumer, not of the connection; RabbitMQ requeues
            log.error("%s: on_delivery failed; closing the link", self._what, exc_info=True)
            error = OperationalError(f"{self._what}: handling a delivery failed: {exc!r}")
            error.__cause__ = exc
            self._end(error)
            self._goodbye()

    def _method(self, channel: int, frame: bytes) -> None:
        """A method frame other than Basic.Deliver, read with pamqp."""
        from pamqp import commands
        from pamqp.base import Frame
        from pamqp.exceptions import PAMQPException
        from pamqp.frame import unmarshal

        try:
            method = unmarshal(frame)[2]
        except PAMQPException as exc:
            raise ValueError(str(exc)) from exc
        assert isinstance(method, Frame)
        if isinstance(method, commands.Connection.Close | commands.Channel.Close):
            text = f"{method.reply_code} {method.reply_text}"
            if isinstance(method, commands.Connection.Close):
                with contextlib.suppress(OperationalError):
                    self._send(0, commands.Connection.CloseOk())
                self._end(OperationalError(f"RabbitMQ closed the connection of {self._what}: {text}"))
                if self._transport is not None:
                    self._transport.close()
            else:
                with contextlib.suppress(OperationalError):
                    self._send(1, commands.Channel.CloseOk())
                self._end(OperationalError(f"RabbitMQ closed the channel of {self._what}: {text}"))
                self._goodbye()
        elif isinstance(method, commands.Connection.CloseOk):
            if self._transport is not None:
                self._transport.close()
        elif isinstance(method, commands.Basic.Cancel):  # the queue went away
            if not method.nowait and not self._ended:
                self._send(1, commands.Basic.CancelOk(consumer_tag=method.consumer_tag))
            if self._on_cancel is not None and not self._ended:
                self._on_cancel(str(method.consumer_tag))
        elif method.name == self._expected and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(method)
        else:  # Connection.Blocked/Unblocked (we only ack), or a reply nobody waits for any more
            log.debug("%s: ignoring %s on channel %d", self._what, method.name, channel)

    # -- ending

    def _end(self, reason: OperationalError | None) -> None:
        """Mark the link ended (once): ``closing`` gets the reason, a waiting call fails with it."""
        if self._ended:
            return
        self._ended = True
        if self._timer is not None:
            self._timer.cancel()
        if not self.closing.done():
            self.closing.set_result(reason)
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(reason or self._closed_error())
        self._resume()

    def _goodbye(self) -> None:
        """Connection.Close; the socket is closed on CloseOk, or after 2 s without one."""
        from pamqp.commands import Connection

        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(_marshal(Connection.Close(200, "bye", 0, 0), 0))
        self._close_timer = self._loop.call_later(_CLOSE_WAIT, transport.abort)

    def _abort(self) -> None:
        """Drop the socket without a goodbye (``connection_lost`` follows)."""
        if self._transport is not None:
            self._transport.abort()

    # -- heartbeats

    def _start_heartbeats(self, seconds: int) -> None:
        self._heartbeat = seconds
        if seconds > 0:
            self._last_heard = self._loop.time()
            self._timer = self._loop.call_later(seconds / 2, self._beat)

    def _beat(self) -> None:
        """Every half heartbeat: beat if nothing was written since the last time, and give up on a
        server that sent nothing in two heartbeats (RabbitMQ's own rule for its clients)."""
        now = self._loop.time()
        if self._heard:
            self._heard, self._last_heard = False, now
        elif now - self._last_heard > 2 * self._heartbeat:
            silent = 2 * self._heartbeat
            self._end(OperationalError(f"{self._what}: no heartbeat from RabbitMQ in {silent} s"))
            self._abort()
            return
        if not self._wrote and self._transport is not None:
            self._transport.write(_HEARTBEAT)
        self._wrote = False
        self._timer = self._loop.call_later(self._heartbeat / 2, self._beat)


def _marshal(method: Frame, channel: int) -> bytes:
    from pamqp.frame import marshal

    return marshal(method, channel)
