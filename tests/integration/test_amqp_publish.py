"""The publishing link against the shared RabbitMQ: what it publishes arrives whole (read by aiormq and by
our consuming link), confirms pipeline, and every refusal (no route, no exchange, a full queue, a closed
connection) fails the publishes it concerns, and only those, without hanging.

The module works in a virtual host of its own (test_amqp_link's), deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiormq
import pytest

from celeriac.amqp import _wire as wire
from celeriac.amqp._codec import PROPERTY_NAMES, Properties
from celeriac.amqp._publisher import Publisher
from celeriac.amqp.broker import AMQPBroker
from celeriac.exceptions import MessageUnroutable, OperationalError
from celeriac.protocol.message import Message
from tests.contract.conftest import close_amqp_connections
from tests.integration import test_amqp_link as link_tests
from tests.integration.test_amqp_link import Inbox, Proxy, celery_message, link_to, run
from tests.unit.amqp.test_codec import celery_properties

url = link_tests.url  # the module's virtual host (a fixture)


@contextlib.asynccontextmanager
async def publisher_to(url: str, **options: Any) -> AsyncIterator[Publisher]:
    publisher = await Publisher.open(url, options, what="the publish test")
    try:
        yield publisher
    finally:
        await publisher.close()


@contextlib.asynccontextmanager
async def admin(url: str) -> AsyncIterator[Any]:
    """An aiormq channel to declare and inspect with."""
    connection = await aiormq.connect(url)
    try:
        yield await connection.channel()
    finally:
        await connection.close()


async def new_queue(channel: Any, **arguments: Any) -> str:
    queue = f"publish-{uuid.uuid4().hex[:10]}"
    await channel.queue_declare(queue, durable=True, arguments=arguments or None)
    return queue


async def ready(channel: Any, queue: str) -> int:
    return int((await channel.queue_declare(queue, passive=True)).message_count)


def every_property() -> Properties:
    headers = {"lang": "py", "n": -7, "big": 2**40, "f": 0.25, "raw": b"\x00\xff", "no": None, "l": [1, "2"]}
    return Properties(**celery_properties(headers))


# -- what arrives


def test_a_confirmed_publish_arrives_with_every_property_read_by_aiormq_and_by_our_link(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with admin(url) as channel, publisher_to(url) as publisher, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            sent = every_property()
            body, celery = wire.to_amqp(celery_message())
            for data, properties in ((b"body", sent), (b"body", sent), (body, celery)):
                assert await publisher.publish("", queue, data, properties) is None
            theirs = await channel.basic_get(queue, no_ack=True)
            for name in PROPERTY_NAMES[:-1]:
                assert getattr(theirs.header.properties, name) == getattr(sent, name), name
            assert theirs.body == b"body"
            await link.consume(queue)
            mine, with_celery = await inbox.wait(2)
            assert mine.properties == sent and mine.body == b"body" and mine.error is None
            assert with_celery.properties.headers == celery_message().headers
            # Celery's messages carry no message id: one is made, to match a return.
            made = with_celery.properties.message_id
            assert made is not None and len(made) == 32 and celery.message_id is None
            with_celery.properties.message_id = None
            assert with_celery.properties == celery and with_celery.body == body
            link.ack(with_celery.delivery_tag, multiple=True)
            await link.flush()

    run(scenario)


def test_bodies_of_every_size_arrive_whole(url: str) -> None:
    async def scenario() -> None:
        inbox = Inbox()
        async with admin(url) as channel, publisher_to(url) as publisher, link_to(url, inbox) as link:
            queue = await new_queue(channel)
            step = publisher._frame_max - 8
            bodies = [b"", b"1", b"m" * step, b"n" * (step + 1), bytes(range(256)) * (3 * 4096)]  # 3 MB
            await asyncio.gather(*(publisher.publish("", queue, b, Properties()) for b in bodies))
            await link.qos(10)
            await link.consume(queue)
            got = await inbox.wait(len(bodies))
            assert [d.body for d in got] == bodies
            link.ack(got[-1].delivery_tag, multiple=True)
            await link.flush()

    run(scenario)


def test_a_thousand_pipelined_publishes_are_all_confirmed(url: str) -> None:
    async def scenario() -> None:
        async with admin(url) as channel, publisher_to(url) as publisher:
            queue = await new_queue(channel)
            acks: list[tuple[int, bool]] = []
            confirm = publisher._confirm

            def counting(tag: int, multiple: bool, refused: str | None) -> None:
                acks.append((tag, multiple))
                confirm(tag, multiple, refused)

            publisher._confirm = counting  # type: ignore[method-assign]
            futures = [
                publisher.publish("", queue, b"%d" % i, Properties(delivery_mode=2)) for i in range(1000)
            ]
            await asyncio.wait_for(asyncio.gather(*futures), 30)
            assert not publisher._pending
            assert any(multiple for _, multiple in acks) and len(acks) < 1000  # RabbitMQ acked in batches
            assert await ready(channel, queue) == 1000

    run(scenario)


# -- refusals


def test_an_unroutable_publish_fails_alone_and_the_link_carries_on(url: str) -> None:
    async def scenario() -> None:
        async with admin(url) as channel, publisher_to(url) as publisher:
            queue = await new_queue(channel)
            first = publisher.publish("", queue, b"1", Properties())
            lost = publisher.publish("", f"no-queue-{uuid.uuid4().hex[:8]}", b"2", Properties())
            last = publisher.publish("", queue, b"3", Properties(message_id="chosen"))
            with pytest.raises(MessageUnroutable, match="312 NO_ROUTE"):
                await lost
            assert await first is None and await last is None
            assert not publisher.is_closed
            await publisher.publish("", queue, b"4", Properties())
            assert await ready(channel, queue) == 3
            # Not mandatory: dropped by RabbitMQ, and confirmed.
            await publisher.publish("", "no-queue", b"5", Properties(), mandatory=False)

    run(scenario)


def test_a_missing_exchange_fails_every_pending_publish_with_the_servers_reason(url: str) -> None:
    async def scenario() -> None:
        async with admin(url) as channel, publisher_to(url) as publisher:
            queue = await new_queue(channel)
            futures = [
                publisher.publish("", queue, b"1", Properties()),
                publisher.publish("no-such-exchange", "k", b"2", Properties()),
            ]
            outcomes = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 10)
            assert isinstance(outcomes[1], OperationalError)
            assert "404 NOT_FOUND - no exchange 'no-such-exchange'" in str(outcomes[1])
            assert publisher.is_closed and publisher.channel_error is not None
            assert publisher.channel_error[0] == 404
            with pytest.raises(OperationalError, match="NOT_FOUND"):
                publisher.publish("", queue, b"3", Properties())

    run(scenario)


def test_a_full_queue_that_rejects_publishes_nacks_them(url: str) -> None:
    async def scenario() -> None:
        async with admin(url) as channel, publisher_to(url) as publisher:
            queue = await new_queue(channel, **{"x-max-length": 1, "x-overflow": "reject-publish"})
            await publisher.publish("", queue, b"fits", Properties())
            with pytest.raises(OperationalError, match=r"RabbitMQ refused the message .*basic\.nack"):
                await publisher.publish("", queue, b"refused", Properties())
            assert not publisher.is_closed
            assert await ready(channel, queue) == 1

    run(scenario)


@pytest.mark.slow
def test_the_server_closing_the_connection_fails_pending_publishes(url: str) -> None:
    name = f"publish-test-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        proxy = Proxy()
        port = await proxy.start()
        try:
            async with (
                admin(url) as channel,
                publisher_to(url.replace(":5672/", f":{port}/"), connection_name=name) as publisher,
            ):
                queue = await new_queue(channel)
                proxy.flowing.clear()  # the publishes wait, unconfirmed
                futures = [publisher.publish("", queue, b"x", Properties()) for _ in range(3)]
                assert await asyncio.to_thread(close_amqp_connections, name) == 1
                proxy.flowing.set()
                for future in futures:
                    with pytest.raises(OperationalError, match="320 CONNECTION_FORCED"):
                        await asyncio.wait_for(future, 10)
                assert publisher.is_closed
        finally:
            await proxy.close()

    run(scenario)


def test_a_lost_connection_fails_pending_publishes(url: str) -> None:
    async def scenario() -> None:
        proxy = Proxy()
        port = await proxy.start()
        try:
            async with publisher_to(url.replace(":5672/", f":{port}/")) as publisher:
                proxy.flowing.clear()
                futures = [publisher.publish("", "q", b"x", Properties()) for _ in range(3)]
                await proxy.close()  # the sockets go, without a goodbye
                for future in futures:
                    with pytest.raises(OperationalError, match="lost its connection to RabbitMQ"):
                        await asyncio.wait_for(future, 10)
        finally:
            await proxy.close()

    run(scenario)


# -- through the broker


def message(task_id: str) -> Message:
    return Message(body=b"[]", headers={"id": task_id, "task": "t"}, properties={})


def test_the_broker_publishes_on_its_named_link_and_reopens_it(url: str) -> None:
    name = f"publish-broker-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        broker = AMQPBroker(url, options={"connection_name": name})
        queue = f"publish-{uuid.uuid4().hex[:10]}"
        try:
            await asyncio.gather(*(broker.publish(queue, message(str(i))) for i in range(20)))
            publisher = broker._publisher
            assert publisher is not None
            # One link for the concurrent first publishes, named after the broker's connection.
            assert await asyncio.to_thread(close_amqp_connections, f"{name} (publisher)") == 1
            await asyncio.wait_for(publisher.closing, 10)
            await broker.publish(queue, message("after"))  # on a new link
            assert broker._publisher is not publisher and await broker.size(queue) == 21
            routed = message("lost")
            routed.properties["delivery_info"] = {"exchange": "publish-no-such-exchange", "routing_key": "k"}
            with pytest.raises(MessageUnroutable, match="no exchange 'publish-no-such-exchange'"):
                await broker.publish(queue, routed)
            routed.properties["delivery_info"] = {"exchange": "amq.topic", "routing_key": "no.binding"}
            with pytest.raises(MessageUnroutable, match=r"no queue .*'no\.binding'.*312 NO_ROUTE"):
                await broker.publish(queue, routed)
            await broker.publish(queue, message("fine"))
            assert await broker.size(queue) == 22
            with pytest.raises(TypeError, match=r"cannot send a message to .*cannot write 'bad'"):
                await broker.publish(queue, Message(body=b"", headers={"bad": {1}}, properties={}))
        finally:
            await broker.purge(queue)
            await broker.close()
        assert broker._publisher is None and publisher.is_closed

    run(scenario)
