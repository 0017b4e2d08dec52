"""The consuming link against the shared RabbitMQ: what aiormq publishes (with confirms) arrives whole and
decodes as aiormq decodes it; qos, acks, nacks, cancel; and every way the link can end.

The module works in a virtual host of its own (with a slash in its name, so the URL's path is unquoted),
deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import quote

import aiormq
import pytest
from pamqp.commands import Basic

from celeriac.amqp import _wire as wire
from celeriac.amqp._codec import PROPERTY_NAMES
from celeriac.amqp._link import Delivered, Link
from celeriac.exceptions import OperationalError
from celeriac.protocol.message import Message
from tests.contract.conftest import _require, close_amqp_connections
from tests.servers import service_missing
from tests.unit.protocol.test_codec import celery_message as celery_headers_message


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, timeout=60, check=True)


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    _require("rabbitmq")
    if shutil.which("rabbitmqctl") is None:
        service_missing("rabbitmqctl is not on PATH (it makes the tests' virtual host)")
    vhost = f"celeriac/link-{uuid.uuid4().hex[:8]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@127.0.0.1:5672/{quote(vhost, safe='')}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


class Inbox:
    """What a link delivered, its batches and cancellations, and a way to wait for a count."""

    def __init__(self) -> None:
        self.got: list[Delivered] = []
        self.batches = 0
        self.cancelled: list[str] = []
        self.changed = asyncio.Event()

    def deliver(self, delivered: Delivered) -> None:
        self.got.append(delivered)

    def batch(self) -> None:
        self.batches += 1
        self.changed.set()

    def cancel(self, tag: str) -> None:
        self.cancelled.append(tag)
        self.changed.set()

    async def wait(self, count: int, timeout: float = 10.0) -> list[Delivered]:
        async with asyncio.timeout(timeout):
            while len(self.got) < count:
                self.changed.clear()
                await self.changed.wait()
        return self.got

    async def settle(self, seconds: float = 0.5) -> list[Delivered]:
        """What arrived once nothing more came for ``seconds``."""
        await asyncio.sleep(seconds)
        return self.got


@contextlib.asynccontextmanager
async def link_to(url: str, inbox: Inbox, **options: Any) -> AsyncIterator[Link]:
    link = await Link.open(
        url,
        options,
        what="the link test",
        on_delivery=inbox.deliver,
        on_batch=inbox.batch,
        on_cancel=inbox.cancel,
    )
    try:
        yield link
    finally:
        await link.close()


@contextlib.asynccontextmanager
async def publisher(url: str) -> AsyncIterator[Any]:
    """An aiormq channel with publisher confirms, and a fresh queue name for the test."""
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        await channel.confirm_delivery()
        yield channel
    finally:
        await connection.close()


async def new_queue(channel: Any) -> str:
    queue = f"link-{uuid.uuid4().hex[:10]}"
    await channel.queue_declare(queue, durable=True)
    return queue


async def publish(channel: Any, queue: str, bodies: list[bytes], **properties: Any) -> None:
    for body in bodies:
        await channel.basic_publish(body, routing_key=queue, properties=Basic.Properties(**properties))


async def ready(channel: Any, queue: str) -> int:
    return int((await channel.queue_declare(queue, passive=True)).message_count)


def celery_message() -> Message:
    """``add.delay(2, 3)`` as Celery 5.7 sends it (shared reference §2.1), with a time limit and a
    priority; published through the broker's own mapping (``to_amqp``)."""
    message = celery_headers_message(timelimit=[30, None])
    message.properties["priority"] = 3
    return message


# -- deliveries


def test_bodies_of_every_size_arrive_whole(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            frame_max = link._frame_max
            bodies = [b"", b"1", b"m" * (frame_max - 8), bytes(range(256)) * (3 * 4096)]  # 3 MB
            queue = await new_queue(channel)
            await publish(channel, queue, bodies, content_type="application/octet-stream")
            await link.qos(10)
            tag = await link.consume(queue)
            got = await inbox.wait(len(bodies))
            assert [d.body for d in got] == bodies
            assert all(type(d.body) is bytes for d in got)
            assert [d.delivery_tag for d in got] == [1, 2, 3, 4]
            assert {(d.consumer_tag, d.exchange, d.routing_key, d.redelivered, d.link) for d in got} == {
                (tag, "", queue, False, link)
            }
            assert got[0].properties.content_type == "application/octet-stream"
            # The 3 MB body took many reads; only a read that completed a delivery makes a batch.
            assert inbox.batches <= len(bodies)
            link.ack(got[-1].delivery_tag, multiple=True)
            await link.flush()

    run(scenario)


def test_celery_headers_decode_as_aiormq_decodes_them(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            body, ours_to_send = wire.to_amqp(celery_message())
            properties = Basic.Properties(**{n: getattr(ours_to_send, n) for n in PROPERTY_NAMES[:-1]})
            for _ in range(2):
                await channel.basic_publish(body, routing_key=queue, properties=properties)
            theirs = await channel.basic_get(queue, no_ack=True)  # aiormq's reading of the first
            await link.consume(queue)
            (ours,) = await inbox.wait(1)
            assert ours.body == theirs.body == body
            expected = theirs.header.properties
            for name in PROPERTY_NAMES[:-1]:  # all but the deprecated cluster_id
                assert getattr(ours.properties, name) == getattr(expected, name), name
            assert ours.properties.headers == celery_message().headers
            assert ours.properties.priority == 3 and ours.properties.delivery_mode == 2
            link.ack(ours.delivery_tag)

    run(scenario)


def test_many_deliveries_come_in_few_reads(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            bodies = [f"message {i}".encode() for i in range(500)]
            await publish(channel, queue, bodies)
            await link.qos(500)
            await link.consume(queue)
            got = await inbox.wait(500)
            assert [d.body for d in got] == bodies
            assert inbox.batches < 250  # most reads carried several deliveries
            link.ack(got[-1].delivery_tag, multiple=True)
            await link.flush()

    run(scenario)


def test_qos_bounds_what_is_pushed_until_acked(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            await publish(channel, queue, [b"%d" % i for i in range(10)])
            await link.qos(3)
            await link.consume(queue)
            assert len(await inbox.settle()) == 3
            link.ack(inbox.got[0].delivery_tag)
            assert len(await inbox.settle()) == 4
            link.ack(inbox.got[3].delivery_tag, multiple=True)  # three more at once
            assert len(await inbox.settle()) == 7
            assert [d.body for d in inbox.got] == [b"%d" % i for i in range(7)]

    run(scenario)


def test_ack_multiple_settles_everything_up_to_the_tag(url: str) -> None:
    async def scenario() -> None:
        async with publisher(url) as channel:
            queue = await new_queue(channel)
            await publish(channel, queue, [b"x"] * 10)
            inbox = Inbox()
            async with link_to(url, inbox) as link:
                await link.consume(queue)
                got = await inbox.wait(10)
                link.ack(got[5].delivery_tag, multiple=True)  # tags 1..6
                await link.flush()
            assert await ready(channel, queue) == 4  # the unacked rest went back on close
            inbox = Inbox()
            async with link_to(url, inbox) as link:
                await link.consume(queue)
                got = await inbox.wait(4)
                assert all(d.redelivered for d in got)
                link.ack(got[-1].delivery_tag, multiple=True)
                await link.flush()
            assert await ready(channel, queue) == 0

    run(scenario)


def test_nack_requeues_or_drops(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            await publish(channel, queue, [b"again", b"gone"])
            await link.qos(1)
            await link.consume(queue)
            (first,) = await inbox.wait(1)
            assert (first.body, first.redelivered) == (b"again", False)
            link.nack(first.delivery_tag, requeue=True)
            await inbox.wait(2)
            again = inbox.got[1]
            assert (again.body, again.redelivered) == (b"again", True)
            assert again.delivery_tag > first.delivery_tag
            link.ack(again.delivery_tag)
            gone = (await inbox.wait(3))[2]
            assert (gone.body, gone.redelivered) == (b"gone", False)
            link.nack(gone.delivery_tag, requeue=False)
            assert len(await inbox.settle()) == 3
            assert await ready(channel, queue) == 0

    run(scenario)


def test_cancel_stops_deliveries(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            await publish(channel, queue, [b"a", b"b", b"c"])
            await link.qos(1)
            tag = await link.consume(queue)
            (first,) = await inbox.wait(1)
            await link.cancel(tag)
            link.ack(first.delivery_tag)
            assert len(await inbox.settle()) == 1
            assert await ready(channel, queue) == 2
            assert not link.is_closed
            await link.consume(queue)  # the channel still works
            await inbox.wait(2)

    run(scenario)


def test_flush_waits_until_the_acks_are_written(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            await publish(channel, queue, [b"."] * 300)
            await link.qos(300)
            await link.consume(queue)
            for delivered in await inbox.wait(300):
                link.ack(delivered.delivery_tag)
            await link.flush()
            assert link._transport is not None and link._transport.get_write_buffer_size() == 0
            await link.flush()  # nothing to wait for
            await asyncio.sleep(0.3)
            assert await ready(channel, queue) == 0

    run(scenario)


# -- how a link ends


def test_acking_an_unknown_tag_ends_the_link(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with link_to(url, inbox) as link:
            link.ack(999)
            reason = await asyncio.wait_for(link.closing, 5)
            assert isinstance(reason, OperationalError)
            assert "406 PRECONDITION_FAILED" in str(reason)
            assert link.is_closed
            with pytest.raises(OperationalError, match="PRECONDITION_FAILED"):
                link.ack(1)
            with pytest.raises(OperationalError, match="PRECONDITION_FAILED"):
                await link.qos(1)
        assert link._lost.done()  # close() after the end still waited for the socket to go

    run(scenario)


def test_a_failing_call_fails_with_the_servers_reason(url: str) -> None:
    async def scenario() -> None:
        async with link_to(url, Inbox()) as link:
            with pytest.raises(OperationalError, match="404 NOT_FOUND"):
                await link.consume("no-such-queue")
            assert link.is_closed
            assert "404 NOT_FOUND" in str(link.closing.result())

    run(scenario)


def test_the_server_closing_the_connection_ends_the_link(url: str) -> None:
    name = f"link-test-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with link_to(url, Inbox(), connection_name=name) as link:
            assert await asyncio.to_thread(close_amqp_connections, name) == 1
            reason = await asyncio.wait_for(link.closing, 10)
            assert isinstance(reason, OperationalError)
            assert "320 CONNECTION_FORCED" in str(reason)
            assert link.is_closed

    run(scenario)


def test_closing_it_ourselves(url: str) -> None:
    async def scenario() -> None:
        link = await Link.open(url, {}, what="the link test", on_delivery=lambda d: None)
        assert not link.is_closed and not link.closing.done()
        await link.close()
        assert link.is_closed and link.closing.result() is None
        assert link._lost.done()
        await link.close()  # again: nothing happens
        with pytest.raises(OperationalError, match="closed"):
            link.ack(1)

    run(scenario)


def test_a_deleted_queue_cancels_its_consumer(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with publisher(url) as channel, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            tag = await link.consume(queue)
            await channel.queue_delete(queue)
            async with asyncio.timeout(5):
                while not inbox.cancelled:
                    inbox.changed.clear()
                    await inbox.changed.wait()
            assert inbox.cancelled == [tag]
            assert not link.is_closed
            await link.qos(5)  # the channel lives on

    run(scenario)


def test_a_wrong_password_names_user_and_vhost(url: str) -> None:
    async def scenario() -> None:
        wrong = url.replace("guest:guest@", "guest:not-the-password@")
        with pytest.raises(OperationalError) as raised:
            await Link.open(wrong, {}, what="the link test", on_delivery=lambda d: None)
        message = str(raised.value)
        assert "ACCESS_REFUSED" in message and "'guest'" in message and "celeriac/link-" in message
        assert "not-the-password" not in message

    run(scenario)


def test_nobody_listening_says_where(url: str) -> None:
    async def scenario() -> None:
        with pytest.raises(OperationalError, match=r"the link test cannot connect to 127\.0\.0\.1:1 "):
            await Link.open("amqp://guest:guest@127.0.0.1:1//", {}, what="the link test", on_delivery=print)

    run(scenario)


# -- heartbeats


@pytest.mark.slow
def test_heartbeats_keep_an_idle_link_open(url: str) -> None:
    async def scenario() -> None:
        async with link_to(url, Inbox(), heartbeat=1) as link:
            assert link._heartbeat == 1
            await asyncio.sleep(4)  # RabbitMQ drops a client silent for two heartbeats
            assert not link.is_closed
            await link.qos(2)

    run(scenario)


class Proxy:
    """A TCP relay to RabbitMQ that can stop passing bytes both ways (a stalled path, sockets open)."""

    def __init__(self) -> None:
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5672)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
        writer.close()

    async def close(self) -> None:
        self.flowing.set()
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.slow
def test_a_server_that_stops_answering_is_declared_dead(url: str) -> None:
    async def scenario() -> None:
        proxy = Proxy()
        port = await proxy.start()
        try:
            link = await Link.open(
                url.replace(":5672/", f":{port}/"), {"heartbeat": 1}, what="the link test", on_delivery=print
            )
            await asyncio.sleep(1.5)
            assert not link.is_closed
            proxy.flowing.clear()
            reason = await asyncio.wait_for(link.closing, 5)
            assert isinstance(reason, OperationalError)
            assert "no heartbeat from RabbitMQ in 2 s" in str(reason)
            await link.close()
        finally:
            await proxy.close()

    run(scenario)
