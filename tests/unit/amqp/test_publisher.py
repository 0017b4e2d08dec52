"""The publishing link's frames, with no socket: what it writes (as pamqp reads it), and how RabbitMQ's acks,
nacks, returns and closes settle its publishes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from pamqp import body, commands, frame, header

from celeriac.amqp._codec import Properties
from celeriac.amqp._publisher import Publisher
from celeriac.exceptions import MessageUnroutable, OperationalError


class Transport:
    """What the publisher writes, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close


def run(scenario: Callable[[Publisher, Transport], Awaitable[None]], frame_max: int = 4096) -> None:
    async def main() -> None:
        publisher = Publisher("the test")
        transport = Transport()
        publisher._transport = transport  # type: ignore[assignment]
        publisher._frame_max = frame_max
        publisher._confirming = True
        await scenario(publisher, transport)

    asyncio.run(main())


def frames_of(data: bytes) -> list[Any]:
    """The frames of a write, as pamqp reads them."""
    found = []
    while data:
        consumed, _, value = frame.unmarshal(data)
        found.append(value)
        data = data[consumed:]
    return found


def server(*methods: Any) -> bytes:
    return b"".join(frame.marshal(method, 1) for method in methods)


def returned(message_id: str, code: int = 312, text: str = "NO_ROUTE") -> bytes:
    method = commands.Basic.Return(reply_code=code, reply_text=text, exchange="ex", routing_key="rk")
    properties = commands.Basic.Properties(content_type="text/plain", message_id=message_id)
    content = header.ContentHeader(0, 4, properties)
    return server(method, content) + frame.marshal(body.ContentBody(b"gone"), 1)


def sent_id(transport: Transport, index: int = -1) -> str:
    """The message id of a publish, as written."""
    return str(frames_of(transport.writes[index])[1].properties.message_id)


def test_a_publish_is_one_write_of_its_three_frames() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        properties = Properties(content_type="application/json", headers={"id": "1", "n": 2}, delivery_mode=2)
        future = publisher.publish("ex", "key", b'{"a": 1}', properties)
        assert not future.done()
        (write,) = transport.writes
        publish, content, payload = frames_of(write)
        assert isinstance(publish, commands.Basic.Publish)
        assert (publish.exchange, publish.routing_key, publish.mandatory, publish.immediate) == (
            "ex",
            "key",
            True,
            False,
        )
        assert content.body_size == 8 and payload.value == b'{"a": 1}'
        assert content.properties.headers == {"id": "1", "n": 2}
        assert (content.properties.content_type, content.properties.delivery_mode) == ("application/json", 2)
        # A mandatory message gets a message id (to match a return), on the wire only.
        assert len(content.properties.message_id) == 32 and properties.message_id is None
        publisher.publish("", "q", b"", Properties(message_id="mine"))
        assert sent_id(transport) == "mine"
        publisher.publish("fanout", "", b"x", Properties(), mandatory=False)
        assert frames_of(transport.writes[-1])[0].mandatory is False
        assert frames_of(transport.writes[-1])[1].properties.message_id is None

    run(scenario)


@pytest.mark.parametrize("size", [0, 1, 4088, 4089, 3 * 4088, 20_000])
def test_bodies_are_split_at_the_frame_size(size: int) -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        data = bytes(range(256)) * (size // 256) + bytes(size % 256)
        publisher.publish("", "q", data, Properties())
        (write,) = transport.writes
        _, content, *bodies = frames_of(write)
        assert content.body_size == size
        assert [len(b.value) for b in bodies] == [min(4088, size - i) for i in range(0, size, 4088)]
        assert b"".join(b.value for b in bodies) == data

    run(scenario)


def test_acks_settle_their_publishes_one_or_many_at_a_time() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        futures = [publisher.publish("", "q", b"%d" % i, Properties()) for i in range(6)]
        publisher.data_received(server(commands.Basic.Ack(delivery_tag=2)))
        assert [f.done() for f in futures] == [False, True, False, False, False, False]
        publisher.data_received(server(commands.Basic.Ack(delivery_tag=4, multiple=True)))
        assert [f.done() for f in futures] == [True, True, True, True, False, False]
        publisher.data_received(
            server(commands.Basic.Ack(delivery_tag=6), commands.Basic.Ack(delivery_tag=5))
        )
        assert all(f.done() and f.result() is None for f in futures)
        publisher.data_received(server(commands.Basic.Ack(delivery_tag=6, multiple=True)))  # nothing left
        assert not publisher._pending and not publisher.is_closed

    run(scenario)


def test_a_nack_fails_its_publishes() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        futures = [publisher.publish("", "q", b"x", Properties()) for _ in range(3)]
        publisher.data_received(server(commands.Basic.Nack(delivery_tag=2, multiple=True)))
        for future in futures[:2]:
            with pytest.raises(OperationalError, match=r"RabbitMQ refused the message .*x-overflow"):
                await future
        publisher.data_received(server(commands.Basic.Ack(delivery_tag=3)))
        assert await futures[2] is None

    run(scenario)


def test_a_return_before_its_ack_is_unroutable() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        first = publisher.publish("", "q", b"1", Properties())
        lost = publisher.publish("ex", "rk", b"gone", Properties())
        last = publisher.publish("", "q", b"3", Properties())
        stream = returned(sent_id(transport, 1)) + server(commands.Basic.Ack(delivery_tag=3, multiple=True))
        for i in range(len(stream)):  # however the bytes arrive
            publisher.data_received(stream[i : i + 1])
        with pytest.raises(MessageUnroutable, match="312 NO_ROUTE"):
            await lost
        assert await first is None and await last is None
        assert not publisher._pending and not publisher.is_closed

    run(scenario)


def test_returns_of_messages_with_the_same_chosen_id_go_to_the_oldest() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        futures = [publisher.publish("", "q", b"x", Properties(message_id="same")) for _ in range(3)]
        publisher.data_received(server(commands.Basic.Ack(delivery_tag=1)))
        publisher.data_received(returned("same") + server(commands.Basic.Ack(delivery_tag=2)))
        assert await futures[0] is None
        with pytest.raises(MessageUnroutable):
            await futures[1]
        assert not futures[2].done() and publisher._chosen == {"same": [3]}
        publisher.data_received(returned("unknown"))  # logged, ignored
        publisher.data_received(server(commands.Basic.Ack(delivery_tag=3)))
        assert await futures[2] is None and publisher._chosen == {}

    run(scenario)


def test_a_channel_closed_by_the_server_fails_every_pending_publish() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        futures = [publisher.publish("nowhere", "k", b"x", Properties()) for _ in range(3)]
        close = commands.Channel.Close(404, "NOT_FOUND - no exchange 'nowhere' in vhost '/'", 60, 40)
        publisher.data_received(server(close))
        for future in futures:
            with pytest.raises(OperationalError, match="404 NOT_FOUND - no exchange 'nowhere'"):
                await future
        assert publisher.channel_error == (404, "NOT_FOUND - no exchange 'nowhere' in vhost '/'")
        assert publisher.is_closed
        assert isinstance(frames_of(transport.writes[-2])[0], commands.Channel.CloseOk)
        with pytest.raises(OperationalError, match="NOT_FOUND"):
            publisher.publish("", "q", b"x", Properties())

    run(scenario)


def test_a_lost_connection_fails_every_pending_publish() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        futures = [publisher.publish("", "q", b"x", Properties()) for _ in range(2)]
        publisher.connection_lost(ConnectionResetError("reset"))
        for future in futures:
            with pytest.raises(OperationalError, match="lost its connection to RabbitMQ"):
                await future
        assert publisher.channel_error is None

    run(scenario)


def test_what_cannot_be_sent_raises_before_anything_is_written() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        with pytest.raises(TypeError, match=r"cannot write 'meta\.x'.*type set"):
            publisher.publish("", "q", b"x", Properties(headers={"ok": 1, "meta": {"x": {1}}}))
        with pytest.raises(ValueError, match="the routing key is 256 bytes long"):
            publisher.publish("", "k" * 256, b"x", Properties())
        with pytest.raises(ValueError, match="the exchange name is 300 bytes long"):
            publisher.publish("e" * 300, "q", b"x", Properties())
        with pytest.raises(ValueError, match="a frame holds 4074 at most"):
            publisher.publish("", "q", b"x", Properties(headers={"big": "x" * 5000}))
        assert transport.writes == [] and not publisher._pending
        publisher.publish("", "q", b"x", Properties())
        assert sent_id(transport).endswith(f"{1:016x}")  # still the first delivery tag

    run(scenario)


def test_publishing_needs_confirm_mode() -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        publisher._confirming = False
        with pytest.raises(RuntimeError, match="confirm_select"):
            publisher.publish("", "q", b"x", Properties())

    run(scenario)


def test_blocking_is_logged_once_per_change(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(publisher: Publisher, transport: Transport) -> None:
        blocked = frame.marshal(commands.Connection.Blocked(reason="low on memory"), 0)
        unblocked = frame.marshal(commands.Connection.Unblocked(), 0)
        for data in (blocked, blocked, unblocked, unblocked, blocked):
            publisher.data_received(data)
        assert not publisher.is_closed

    with caplog.at_level(logging.WARNING, logger="celeriac.amqp._publisher"):
        run(scenario)
    assert [r.getMessage() for r in caplog.records] == [
        "the test: RabbitMQ blocked publishing (low on memory); publishes wait until it unblocks",
        "the test: RabbitMQ unblocked publishing",
        "the test: RabbitMQ blocked publishing (low on memory); publishes wait until it unblocks",
    ]
