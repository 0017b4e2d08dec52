"""A lean AMQP 0-9-1 connection with one channel, frames cut straight off the socket: what the consuming
``Link`` (``_amqp_link``) and the ``Publisher`` (``_amqp_publisher``) share.

aiormq reads every frame through a stream reader, a lock, pamqp's generic unmarshalling, a queue per
channel and a task per message; for a busy worker or client that is most of its CPU. A ``Connection`` is
an ``asyncio.Protocol``: ``data_received`` cuts the bytes it got into frames and hands the frequent
method frames of channel 1 (Basic.Deliver, Basic.Ack, ...) to the subclass's ``_fast``, in the same call;
content (a header frame and body frames, after Basic.Deliver or Basic.Return) is assembled here and
handed to ``_complete``. The rare frames (handshake, close, synchronous replies) are built and read with
pamqp.

It does not reconnect: its ``closing`` future says when and why it ended, and its owner opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from celeriac.amqp._codec import Properties, read_properties
from celeriac.amqp.client import amqp_url, tls_context
from celeriac.exceptions import MissingDependency, OperationalError

if TYPE_CHECKING:
    from pamqp.base import Frame

__all__ = ["Connection", "Content", "role_options"]

log = logging.getLogger(__name__)

_PROTOCOL_HEADER = b"AMQP\x00\x00\x09\x01"
_HEARTBEAT = b"\x08\x00\x00\x00\x00\x00\x00\xce"
_HEAD = struct.Struct(">BHI").unpack_from  # frame type, channel, payload size
_METHOD = struct.Struct(">I").unpack_from  # class id and method id as one number
_CONTENT = struct.Struct(">HHQH").unpack_from  # class, weight, body size, first property flags
_FLAGS = struct.Struct(">H").unpack_from
_MIN_FRAME_MAX = 131072  # what we ask for when the server sets no limit
_CLOSE_WAIT = 2.0
_NO_PROPERTIES = Properties()


def role_options(options: Mapping[str, Any], role: str, what: str) -> dict[str, Any]:
    """``options`` for one of an owner's own connections: RabbitMQ shows it as ``<connection name>
    (role)``, the connection name defaulting to ``what`` the owner is."""
    name = str(options.get("connection_name") or what)
    return {**options, "connection_name": f"{name} ({role})"}


class Content:
    """A message whose content (properties and body) RabbitMQ sends after a method frame."""

    __slots__ = ("body", "error", "properties")

    def __init__(self) -> None:
        self.body = b""
        self.properties = _NO_PROPERTIES
        #: Why the properties could not be read (they are then empty); None for a sound message.
        self.error: str | None = None


class Connection(asyncio.Protocol):
    """One AMQP connection with one channel (number 1).

    Subclasses read the frequent method frames of channel 1 themselves (``_fast``) and take each whole
    content (``_complete``); the others go to ``_other`` once the replies and closes are handled.

    ``closing`` is done once the connection ended: with the reason (an ``OperationalError``), or None
    when ``close()`` ended it. After that, writing raises.
    """

    closing: asyncio.Future[BaseException | None]

    def __init__(self, what: str) -> None:
        self._what = what
        self._loop = asyncio.get_running_loop()
        self.closing = self._loop.create_future()
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._ended = False
        #: The reply code and text of the Channel.Close that ended it (a refused operation: 404, 406,
        #: ...), when one did; the server is alive then, and so is what was declared on it.
        self.channel_error: tuple[int, str] | None = None
        # Reading: a partial frame kept for the next read, and how many bytes it needs to be whole.
        self._rest = bytearray()
        self._need = 0
        self._frame_max = _MIN_FRAME_MAX
        self._incoming: Content | None = None  # a message whose content is still coming
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

    # -- what subclasses read

    def _fast(self, method: int, data: bytes, offset: int) -> bool:
        """Handle the method frame of channel 1 numbered ``method`` (class and method id) whose
        arguments start at ``offset``, if it is one read here; whether it was."""
        return False

    def _complete(self, content: Content) -> None:
        """A message's content arrived whole."""

    def _other(self, method: Frame) -> None:
        """A method frame nobody waits for (Connection.Blocked, Basic.Cancel, a late reply)."""
        log.debug("%s: ignoring %s", self._what, method.name)

    def _after_read(self) -> None:
        """A read completed at least one content."""

    def _begin(self, content: Content) -> None:
        """Expect ``content``'s header and body frames next (called from ``_fast``)."""
        if self._incoming is not None:
            raise ValueError("a message before the previous message's content")
        self._remaining = -1
        self._incoming = content

    # -- opening

    async def _connect(self, url: str, options: Mapping[str, Any]) -> None:
        """Connect, log in and open channel 1.

        Options (``celeriac.amqp.client``'s): ``heartbeat`` in seconds (None: the server's proposal, at most
        60; 0: none), ``connect_timeout`` (default 4 s, for all of it), ``ssl`` (TLS settings for
        ``amqps://``), ``connection_name`` (what RabbitMQ shows; default what the connection is for).

        Raises:
            OperationalError: the server did not answer in time, refused the login (naming the user and
                virtual host) or closed the connection.
        """
        what = self._what
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

        step = "connect to"
        try:
            async with asyncio.timeout(timeout):
                started = self._expect("Connection.Start")  # the server speaks first
                await self._loop.create_connection(
                    lambda: self, host, port, ssl=context, server_hostname=host if context else None
                )
                start = await started
                step = f"log in as {user!r} to"
                tune = await self._login(start, user, password, name)
                step = f"open the vhost as {user!r} on"
                await self._tune(tune, heartbeat, vhost)
        except BaseException as exc:
            self._abort()
            if isinstance(exc, TimeoutError):
                raise OperationalError(f"{what} cannot {step} {where}: no answer in {timeout:g} s") from exc
            if isinstance(exc, (OSError, OperationalError, ValueError)):
                raise OperationalError(f"{what} cannot {step} {where}: {exc}") from exc
            raise

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

    # -- the connection's state

    async def flush(self) -> None:
        """Return once everything written has left the transport's buffer."""
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
        """Whether the connection ended."""
        return self._ended

    async def close(self) -> None:
        """Say goodbye (Connection.Close, waiting for CloseOk at most 2 s) and close the socket; safe to
        call again, and after the connection ended by itself."""
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
        """A new error (each raise its own traceback) telling why the connection ended."""
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
        pass  # what is written waits in the transport's buffer; TCP holds back the writer

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
            completed = self._frames(data)
        except (ValueError, IndexError, struct.error) as exc:
            self._end(OperationalError(f"{self._what} got a malformed frame from RabbitMQ: {exc}"))
            self._abort()
            return
        if completed and not self._ended:
            self._after_read()

    def _frames(self, data: bytes) -> int:
        """Handle every whole frame in ``data``, keep the partial one; return how many contents were
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
                incoming = self._incoming
                remaining = self._remaining - size
                if incoming is None or remaining < 0:
                    raise ValueError("a body frame outside a message's content")
                self._remaining = remaining
                if remaining == 0 and not self._chunks:
                    incoming.body = data[pos + 7 : stop]
                else:
                    self._chunks.append(data[pos + 7 : stop])
                    if remaining == 0:
                        incoming.body = b"".join(self._chunks)
                        self._chunks = []
                if remaining == 0:
                    self._incoming = None
                    completed += 1
                    self._complete(incoming)
            elif kind == 1:  # method
                if channel != 1 or not self._fast(_METHOD(data, pos + 7)[0], data, pos + 11):
                    self._method(channel, data[pos : stop + 1])
            elif kind == 2:  # content header
                incoming = self._incoming
                if incoming is None or self._remaining != -1:
                    raise ValueError("a content header outside a message")
                _, _, body_size, flags = _CONTENT(data, pos + 7)
                p, word = pos + 21, flags
                while word & 1:  # more flag words follow (none are defined for basic)
                    (word,) = _FLAGS(data, p)
                    p += 2
                try:
                    incoming.properties, p = read_properties(data, p, flags)
                    if p > stop:
                        raise ValueError("message properties overrun their frame")
                except (ValueError, IndexError, struct.error) as exc:
                    # The frame's size is sound, so the stream is: only this message is unreadable.
                    # It is handed over with the reason, for the consumer to set aside (not redelivered
                    # in a loop, as ending the connection would do).
                    incoming.error = f"unreadable AMQP properties: {exc}"
                self._remaining = body_size
                if not body_size:
                    self._incoming = None
                    completed += 1
                    self._complete(incoming)
            elif kind != 8:  # 8: a heartbeat, which only needed to arrive
                raise ValueError(f"unknown frame type {kind}")
            pos = stop + 1
        if pos < size_of_data:
            self._rest += memoryview(data)[pos:]
            self._need = need
        return completed

    def _method(self, channel: int, frame: bytes) -> None:
        """A method frame ``_fast`` did not take, read with pamqp."""
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
                if not self._ended:
                    self.channel_error = (int(method.reply_code or 0), str(method.reply_text))
                self._end(OperationalError(f"RabbitMQ closed the channel of {self._what}: {text}"))
                self._goodbye()
        elif isinstance(method, commands.Connection.CloseOk):
            if self._transport is not None:
                self._transport.close()
        elif method.name == self._expected and self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(method)
        elif not self._ended:
            self._other(method)

    # -- ending

    def _end(self, reason: OperationalError | None) -> None:
        """Mark the connection ended (once): ``closing`` gets the reason, a waiting call fails with it."""
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
