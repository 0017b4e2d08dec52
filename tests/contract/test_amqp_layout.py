"""What is RabbitMQ-specific: declarations as Celery's, the message on the wire, confirms and unroutable
messages, the delay scheme, dead-letter headers, delivery counts, and recovery from lost connections.

The wire is read with a plain aiormq channel, not through the broker under test.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any, cast

import pytest

from celeriac.amqp._topology import level_name
from celeriac.amqp._wire import delay_routing_key
from celeriac.amqp.broker import AMQPBroker
from celeriac.amqp.client import connect_plain
from celeriac.amqp.testkit import AMQPBrokerKit
from celeriac.exceptions import MessageUnroutable
from celeriac.protocol.message import Message
from celeriac.testing.contract.broker import ids, message
from tests.contract.conftest import close_amqp_connections


async def plain(kit: AMQPBrokerKit) -> Any:
    """A connection of the test's own, to look at what the broker left on the server."""
    return await connect_plain(kit.url, {}, what="the layout test")


def test_queues_are_declared_as_celery_declares_them(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        await broker.declare(queue)
        connection = await plain(amqp_brokers)
        try:
            channel = await connection.channel()
            # Redeclaring with other arguments would close the channel (PRECONDITION_FAILED).
            if amqp_brokers.defaults["queue_type"] == "quorum":
                arguments: dict[str, Any] = {"x-queue-type": "quorum"}
            else:
                arguments = {"x-max-priority": 10}  # task_queue_max_priority=10, as Celery sets it
            await channel.queue_declare(queue, durable=True, arguments=arguments)
            # The delay scheme is kombu's: level 27 holds a message 2**27 s, then hands it to level 26.
            prefix = cast(AMQPBroker, broker).delayed_prefix
            level = {
                "x-queue-type": "quorum" if amqp_brokers.defaults["queue_type"] == "quorum" else "classic",
                "x-overflow": "reject-publish",
                "x-message-ttl": 2**27 * 1000,
                "x-dead-letter-exchange": level_name(26, prefix),
            }
            if amqp_brokers.defaults["queue_type"] == "quorum":
                level["x-dead-letter-strategy"] = "at-least-once"
            await channel.queue_declare(level_name(27, prefix), durable=True, arguments=level)
        finally:
            await connection.close()

    amqp_brokers.run(scenario)


def test_the_message_on_the_wire_is_celerys(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        sent = message("wire-1", priority=5)
        sent.headers.update({"shadow": None, "timelimit": [None, None], "stamps": {}, "retries": 0})
        await broker.publish(queue, sent)
        connection = await plain(amqp_brokers)
        try:
            got = await (await connection.channel()).basic_get(queue, no_ack=True)
        finally:
            await connection.close()
        assert (got.exchange, got.routing_key) == ("", queue)  # the default exchange, as Celery sends
        props = got.header.properties
        assert props.delivery_mode == 2 and props.priority == 5
        assert (props.content_type, props.content_encoding) == ("application/json", "utf-8")
        assert (props.correlation_id, props.reply_to) == ("wire-1", "client-1")
        headers = dict(props.headers)
        headers.pop("x-delivery-count", None)  # what a quorum queue adds on every delivery
        assert headers == sent.headers and got.body == sent.body

    amqp_brokers.run(scenario)


def test_our_delay_routing_key_is_kombus() -> None:
    from kombu.transport.native_delayed_delivery import calculate_routing_key

    now = 1_000_000.0
    for seconds in (1, 2, 59, 3600, 7 * 86400):
        ours = delay_routing_key(now + seconds, "celery", now=now)
        assert ours == calculate_routing_key(seconds, "celery")
    # a fraction of a second is rounded up: a delayed message is never early
    assert delay_routing_key(now + 0.2, "q", now=now) == calculate_routing_key(1, "q")
    with pytest.raises(ValueError, match=r"8\.5 years"):
        delay_routing_key(now + 2**28, "q", now=now)


def test_a_delayed_message_waits_in_the_delay_queues_not_in_a_worker(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        await broker.publish(queue, message("week"), not_before=time.time() + 7 * 86400)
        # 604800 s = 0b10010011101010000000: its highest set bit sends it to level 19 first
        prefix = cast(AMQPBroker, broker).delayed_prefix
        connection = await plain(amqp_brokers)
        try:
            channel = await connection.channel()
            got = await channel.basic_get(level_name(19, prefix), no_ack=False)
            assert got.delivery_tag is not None
            assert got.routing_key.endswith("." + queue) and got.header.properties.headers["id"] == "week"
        finally:
            await connection.close()  # gives it back
        assert await broker.size(queue) == 1
        assert await broker.fetch([queue], 10, 0.0) == []
        assert await broker.purge(queue) == 1 and await broker.size(queue) == 0

    amqp_brokers.run(scenario)


def test_an_unroutable_message_is_an_error_to_the_sender(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        exchange = f"contract-x-{uuid.uuid4().hex[:8]}"
        connection = await plain(amqp_brokers)
        try:
            await (await connection.channel()).exchange_declare(exchange, exchange_type="topic")
            routed = message("nowhere")
            routed.properties["delivery_info"] = {"exchange": exchange, "routing_key": "no.binding"}
            with pytest.raises(MessageUnroutable, match=r"no\.binding"):
                await broker.publish(queue, routed)
            await broker.publish(queue, message("fine"))  # the broker carries on
            assert ids(await broker.fetch([queue], 10, 1.0)) == ["fine"]
        finally:
            await (await connection.channel()).exchange_delete(exchange)
            await connection.close()

    amqp_brokers.run(scenario)


def test_concurrent_publishes_share_the_confirm_round_trips(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        await broker.declare(queue)
        await asyncio.gather(*(broker.publish(queue, message(f"m{n}")) for n in range(500)))
        # every publish returned after its confirm: all are there
        assert await broker.size(queue) == 500

    amqp_brokers.run(scenario)


def test_a_dead_letter_carries_its_reason_in_headers(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        await broker.publish(queue, message("bad"))
        [got] = await broker.fetch([queue], 10, 1.0)
        await broker.reject(got, requeue=False, reason="undecodable message: body is not JSON")
        connection = await plain(amqp_brokers)
        try:
            channel = await connection.channel()
            dead = await channel.basic_get(cast(AMQPBroker, broker).dead_letter_queue, no_ack=False)
        finally:
            await connection.close()
        headers = dead.header.properties.headers
        assert headers["x-celeriac-dead-queue"] == queue
        assert headers["x-celeriac-dead-reason"] == "undecodable message: body is not JSON"
        assert headers["id"] == "bad" and dead.body == got.raw
        # reading the dead letters leaves them there
        assert len(await broker.dead_letters(queue)) == 1 and len(await broker.dead_letters(queue)) == 1

    amqp_brokers.run(scenario)


def test_the_dead_letter_queue_is_trimmed_from_its_oldest_end(amqp_brokers: AMQPBrokerKit) -> None:
    """Purging with no queue (the worker's retention) drops the oldest letters of the whole dead-letter
    queue and stops at the first it keeps; requeuing with no queue sends each letter to its own queue."""

    async def scenario() -> None:
        broker, first, second = amqp_brokers.broker(), amqp_brokers.queue(), amqp_brokers.queue()

        async def bury(queue: str, name: str) -> None:
            await broker.publish(queue, message(name))
            [got] = await broker.fetch([queue], 1, 5.0)
            await broker.reject(got, requeue=False, reason=f"bad {name}")

        await bury(first, "old-1")
        await bury(second, "old-2")
        await asyncio.sleep(1.5)
        for name in ("new-1", "new-2"):
            await bury(first, name)
        await bury(second, "new-3")
        assert await broker.purge_dead_letters(keep=4) == 1  # the oldest, without a look at the others
        assert await broker.purge_dead_letters(older_than=1.0, keep=10) == 1
        # The age check looked at new-1 and gave it back (at the back, on a quorum queue): listing
        # sorts by time all the same.
        assert [d.task_id for d in await broker.dead_letters()] == ["new-3", "new-2", "new-1"]
        assert await broker.purge_dead_letters(older_than=1.0) == 0  # no look again before one can expire
        assert await broker.requeue_dead_letters() == 3
        back = await broker.fetch([first], 10, 2.0)
        while len(back) < 2 and (more := await broker.fetch([first], 10, 2.0)):
            back += more  # a pushing broker may hand them out one fetch at a time
        assert sorted(ids(back), key=str) == ["new-1", "new-2"]
        assert ids(await broker.fetch([second], 10, 2.0)) == ["new-3"]
        assert await broker.dead_letters() == []

    amqp_brokers.run(scenario)


def test_deliveries_are_counted_across_requeues_and_lost_connections(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        queue = amqp_brokers.queue()
        first = amqp_brokers.broker()
        await first.publish(queue, message("poison"))
        [got] = await first.fetch([queue], 10, 1.0)
        await first.reject(got, requeue=True)
        [got] = await first.fetch([queue], 10, 1.0)
        assert got.deliveries == 2
        # The reject acked the first delivery once its counted copy was in. A death before RabbitMQ
        # read that ack brings the first delivery back too (at least once, two copies): this test is
        # about a death after it, so one round trip on the consuming channel comes first.
        consuming = cast(Any, first)._consuming
        await consuming.link.qos(consuming.prefetch)
        amqp_brokers.freeze(first)  # the process running it died
        second = amqp_brokers.broker()
        [got] = await second.fetch([queue], 10, 5.0)
        assert got.deliveries == 3 and got.message is not None
        assert "x-celeriac-deliveries" not in got.message.headers
        assert "x-delivery-count" not in got.message.headers
        amqp_brokers.freeze(second)
        [got] = await amqp_brokers.broker().fetch([queue], 10, 5.0)
        assert got.deliveries == 4

    amqp_brokers.run(scenario)


def test_a_declaration_rabbitmq_refuses_is_logged_and_the_queue_used(
    amqp_brokers: AMQPBrokerKit, caplog: pytest.LogCaptureFixture
) -> None:
    async def scenario() -> None:
        queue = amqp_brokers.queue()
        connection = await plain(amqp_brokers)
        try:  # someone declared it otherwise (a Celery app with other settings)
            await (await connection.channel()).queue_declare(
                queue, durable=True, arguments={"x-message-ttl": 600_000}
            )
        finally:
            await connection.close()
        broker = amqp_brokers.broker()
        with caplog.at_level(logging.ERROR, "celeriac.amqp.broker"):
            await broker.publish(queue, message("still-works"))
        assert ids(await broker.fetch([queue], 10, 1.0)) == ["still-works"]
        assert queue in caplog.text and "x-message-ttl" in caplog.text
        assert "task_default_queue_type" in caplog.text

    amqp_brokers.run(scenario)


def test_the_broker_carries_on_after_the_server_closes_its_connection(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        await broker.publish(queue, message("before"))
        [held] = await broker.fetch([queue], 10, 1.0)
        name = amqp_brokers.defaults["connection_name"]
        assert await asyncio.to_thread(close_amqp_connections, name) == 3  # declaring, publishing, consuming
        # The next call reconnects; RabbitMQ requeued the held message, which comes back counted.
        [again] = await broker.fetch([queue], 10, 5.0)
        assert ids([again]) == ["before"] and again.deliveries == 2
        await broker.ack([held])  # a delivery of the dead channel: dropped, not an error
        await broker.publish(queue, message("after"))
        assert ids(await broker.fetch([queue], 10, 5.0)) == ["after"]
        await broker.ack([again])
        await broker.close()
        assert await amqp_brokers.broker().size(queue) == 1  # "after", never acked, is back

    amqp_brokers.run(scenario)


def test_broadcasts_use_celerys_exchanges(amqp_brokers: AMQPBrokerKit) -> None:
    async def scenario() -> None:
        broker = amqp_brokers.broker()
        async with broker.subscribe("celeryev", "worker.#") as events:
            sent = Message(body=b'{"type": "worker-heartbeat"}', headers={"hostname": "w1@x"})
            await broker.broadcast("celeryev", sent, routing_key="worker.heartbeat")
            got = await asyncio.wait_for(anext(events), 5)
            assert got.body == sent.body and got.properties["delivery_mode"] == 1
            assert got.properties["delivery_info"] == {
                "exchange": "celeryev",
                "routing_key": "worker.heartbeat",
                "redelivered": False,
            }
        connection = await plain(amqp_brokers)
        try:  # declared as Celery declares them: these redeclarations would fail otherwise
            channel = await connection.channel()
            await channel.exchange_declare("celeryev", exchange_type="topic", durable=True)
            await broker.broadcast("celery.pidbox", Message(body=b"{}", headers={}))
            await channel.exchange_declare("celery.pidbox", exchange_type="fanout", durable=False)
        finally:
            await connection.close()

    amqp_brokers.run(scenario)


def test_task_queues_from_kombu_route_through_their_exchange(amqp_brokers: AMQPBrokerKit) -> None:
    from kombu import Exchange, Queue

    async def scenario() -> None:
        queue, exchange = amqp_brokers.queue(), f"contract-x-{uuid.uuid4().hex[:8]}"
        queues = [Queue(queue, Exchange(exchange, type="topic"), routing_key="feed.#")]
        broker = amqp_brokers.broker(queues=queues)
        await broker.publish(queue, message("routed"))
        connection = await plain(amqp_brokers)
        try:
            # bound as Celery binds it: anything under feed. reaches the queue
            channel = await connection.channel()
            await channel.basic_publish(b"[[], {}, {}]", exchange=exchange, routing_key="feed.other")
            got = await broker.fetch([queue], 10, 2.0)
            assert [d.message.properties["delivery_info"]["exchange"] for d in got if d.message] == [
                exchange,
                exchange,
            ]
            assert ids(got)[0] == "routed"
        finally:
            await (await connection.channel()).exchange_delete(exchange)
            await connection.close()

    amqp_brokers.run(scenario)


def test_a_missing_exchange_is_an_error_naming_it_and_the_broker_carries_on(
    amqp_brokers: AMQPBrokerKit,
) -> None:
    async def scenario() -> None:
        broker, queue = amqp_brokers.broker(), amqp_brokers.queue()
        routed = message("lost")
        routed.properties["delivery_info"] = {"exchange": "contract-no-such-exchange", "routing_key": "k"}
        with pytest.raises(MessageUnroutable, match="no exchange 'contract-no-such-exchange'"):
            await broker.publish(queue, routed)
        await broker.publish(queue, message("fine"))
        assert ids(await broker.fetch([queue], 10, 1.0)) == ["fine"]

    amqp_brokers.run(scenario)
