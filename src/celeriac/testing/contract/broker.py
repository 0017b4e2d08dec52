"""The Broker contract, run against every broker: what the worker and the client rely on."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from celeriac.brokers import Delivery
from celeriac.protocol.message import Message
from tests.contract.conftest import AMQP_KINDS, BrokerKit, run_in_thread


def message(name: str = "", priority: int | None = None) -> Message:
    task_id = name or uuid.uuid4().hex
    properties: dict[str, object] = {"correlation_id": task_id, "reply_to": "client-1"}
    if priority is not None:
        properties["priority"] = priority
    return Message(
        body=b'[[2, 3], {}, {"callbacks": null, "errbacks": null, "chain": null, "chord": null}]',
        headers={"lang": "py", "task": "proj.add", "id": task_id, "retries": 0, "eta": None},
        properties=properties,
    )


def ids(deliveries: list[Delivery]) -> list[str | None]:
    return [d.message.task_id if d.message else None for d in deliveries]


def test_round_trip_preserves_the_message(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        sent = message("task-1", priority=3)
        await broker.publish(queue, sent)
        [got] = await broker.fetch([queue], 10, 1.0)
        assert got.queue == queue and got.deliveries == 1 and not got.redelivered
        assert got.error is None and got.raw
        assert got.message is not None
        assert (got.message.body, got.message.headers) == (sent.body, sent.headers)
        assert (got.message.content_type, got.message.content_encoding) == ("application/json", "utf-8")
        properties = got.message.properties
        assert properties["correlation_id"] == "task-1" and properties["reply_to"] == "client-1"
        assert properties["priority"] == 3
        assert properties["delivery_info"]["routing_key"] == queue
        assert properties["delivery_info"]["redelivered"] is False

    brokers.run(scenario)


def test_fifo_within_a_priority(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        for n in range(10):
            await broker.publish(queue, message(f"m{n}"))
        # A pushing broker (AMQP) may hand a batch out over several fetches; the order is what counts.
        got: list[Delivery] = []
        while len(got) < 10 and (batch := await broker.fetch([queue], 10 - len(got), 1.0)):
            got += batch
        assert ids(got) == [f"m{n}" for n in range(10)]

    brokers.run(scenario)


def test_priorities_order_messages_as_the_broker_says(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        # One priority per kombu bucket (0, 3, 6, 9), so Redis with Celery's default buckets orders them too
        for name, priority in [("a", 6), ("b", 0), ("c", 9), ("d", 0), ("e", 3), ("f", None)]:
            await broker.publish(queue, message(name, priority))
        expected = {
            "lower-first": ["b", "d", "f", "e", "a", "c"],
            "higher-first": ["c", "a", "e", "b", "d", "f"],  # AMQP: RabbitMQ with x-max-priority
            "none": ["a", "b", "c", "d", "e", "f"],  # e.g. quorum queues: FIFO
        }[broker.priority_order]
        assert ids(await broker.fetch([queue], 10, 1.0)) == expected

    brokers.run(scenario)


def test_several_queues(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, one, two = brokers.broker(), brokers.queue(), brokers.queue()
        await broker.publish(one, message("in-one"))
        await broker.publish(two, message("in-two"))
        [got] = await broker.fetch([two], 10, 1.0)
        assert (got.queue, ids([got])) == (two, ["in-two"])
        await broker.publish(two, message("in-two-again"))
        got_both = await broker.fetch([one, two], 10, 1.0)
        assert {(d.queue, ids([d])[0]) for d in got_both} == {(one, "in-one"), (two, "in-two-again")}

    brokers.run(scenario)


def test_limit_is_respected(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        for n in range(5):
            await broker.publish(queue, message(f"m{n}"))
        assert ids(await broker.fetch([queue], 2, 1.0)) == ["m0", "m1"]
        assert ids(await broker.fetch([queue], 10, 1.0)) == ["m2", "m3", "m4"]

    brokers.run(scenario)


def test_fetch_waits_up_to_timeout_then_returns_nothing(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        started = time.monotonic()
        assert await broker.fetch([queue], 10, 0.3) == []
        assert 0.25 <= time.monotonic() - started < 2.0

    brokers.run(scenario)


def test_fetch_wakes_when_another_thread_publishes(brokers: BrokerKit) -> None:
    queue = brokers.queue()

    async def publish_later() -> None:
        await asyncio.sleep(0.3)
        publisher = brokers.broker()  # its own instance, on its own loop and thread
        await publisher.publish(queue, message("late"))
        await publisher.close()

    async def scenario() -> None:
        broker = brokers.broker()
        await broker.connect()
        thread = run_in_thread(publish_later)
        started = time.monotonic()
        got = await broker.fetch([queue], 10, 10.0)
        waited = time.monotonic() - started
        thread.join(5)
        assert ids(got) == ["late"]
        assert 0.25 <= waited < 1.5

    brokers.run(scenario)


def test_not_before_hides_a_message_until_it_is_due(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        due = time.time() + 0.6
        await broker.publish(queue, message("later"), not_before=due)
        await broker.publish(queue, message("now"))
        assert ids(await broker.fetch([queue], 10, 0.0)) == ["now"]
        assert await broker.size(queue) == 1
        got = await broker.fetch([queue], 10, 5.0)
        assert ids(got) == ["later"]
        assert due - 0.05 <= time.time() < due + 0.8

    brokers.run(scenario)


def test_ack_removes_the_message(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        await broker.publish(queue, message("done"))
        await broker.ack(await broker.fetch([queue], 10, 1.0))
        await broker.close()
        assert await brokers.broker().fetch([queue], 10, 0.0) == []
        assert await brokers.broker().size(queue) == 0

    brokers.run(scenario)


def test_reject_with_requeue_gives_it_back_counting_the_delivery(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        await broker.publish(queue, message("again"))
        [first] = await broker.fetch([queue], 10, 1.0)
        await broker.reject(first, requeue=True)
        [second] = await broker.fetch([queue], 10, 1.0)
        assert ids([second]) == ["again"]
        assert second.deliveries == 2 and second.redelivered
        assert second.message is not None and second.message.properties["delivery_info"]["redelivered"]

    brokers.run(scenario)


def test_reject_without_requeue_dead_letters_with_the_reason(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        await broker.publish(queue, message("poison"))
        [got] = await broker.fetch([queue], 10, 1.0)
        await broker.reject(got, requeue=False, reason="ValueError: cannot decode arguments")
        assert await broker.fetch([queue], 10, 0.0) == []
        assert await broker.size(queue) == 0
        [dead] = await broker.dead_letters(queue)
        assert (dead.queue, dead.reason) == (queue, "ValueError: cannot decode arguments")
        assert dead.message is not None and dead.message.task_id == "poison"
        assert dead.raw and abs(dead.time - time.time()) < 60
        assert any(d.reason == dead.reason for d in await broker.dead_letters())

    brokers.run(scenario)


def test_release_does_not_count_a_delivery(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        await broker.publish(queue, message("unstarted"))
        await broker.release(await broker.fetch([queue], 10, 1.0))
        [again] = await brokers.broker().fetch([queue], 10, 1.0)
        assert again.deliveries == 1 and not again.redelivered

    brokers.run(scenario)


def test_close_gives_unacked_messages_back_with_their_count(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        leaving, queue = brokers.broker(), brokers.queue()
        await leaving.publish(queue, message("held"))
        assert len(await leaving.fetch([queue], 10, 1.0)) == 1
        await leaving.close()
        [again] = await brokers.broker().fetch([queue], 10, 1.0)
        assert ids([again]) == ["held"] and again.deliveries == 2

    brokers.run(scenario)


def test_a_dead_consumers_message_comes_back_after_its_lease(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        crashed, queue = brokers.broker(lease_seconds=0.5), brokers.queue()
        await crashed.publish(queue, message("orphan"))
        [lost] = await crashed.fetch([queue], 10, 1.0)
        survivor = brokers.broker(lease_seconds=5)
        if brokers.kind in AMQP_KINDS:
            # The connection is the lease: RabbitMQ gives the message back as soon as it drops.
            assert await survivor.fetch([queue], 10, 0.0) == []
            brokers.freeze(crashed)
            started = time.monotonic()
            [again] = await survivor.fetch([queue], 10, 5.0)
            assert time.monotonic() - started < 2.0
        else:
            brokers.freeze(crashed)
            assert await survivor.fetch([queue], 10, 0.0) == []
            started = time.monotonic()
            [again] = await survivor.fetch([queue], 10, 5.0)
            assert 0.2 < time.monotonic() - started < 2.0
        assert ids([again]) == ["orphan"] and again.deliveries == 2
        # The dead consumer's late ack must not delete what another consumer now holds.
        await crashed.ack([lost])
        await survivor.reject(again, requeue=True)
        if brokers.kind in AMQP_KINDS:
            await survivor.close()  # else RabbitMQ pushes the requeued message to it again
        assert ids(await brokers.broker().fetch([queue], 10, 1.0)) == ["orphan"]

    brokers.run(scenario)


def test_a_live_consumers_heartbeat_keeps_its_message(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        worker, queue = brokers.broker(lease_seconds=0.5), brokers.queue()
        await worker.publish(queue, message("long-task"))
        held = await worker.fetch([queue], 10, 1.0)
        await asyncio.sleep(1.6)  # more than three leases
        assert await brokers.broker().fetch([queue], 10, 0.0) == []
        await worker.ack(held)
        assert await brokers.broker().size(queue) == 0

    brokers.run(scenario)


def test_purge_and_size_count_waiting_and_delayed_messages(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue, other = brokers.broker(), brokers.queue(), brokers.queue()
        for n in range(4):
            await broker.publish(queue, message(f"m{n}"))
        await broker.publish(queue, message("next-week"), not_before=time.time() + 7 * 86400)
        await broker.publish(other, message("elsewhere"))
        assert await broker.size(queue) == 5
        held = await broker.fetch([queue], 1, 1.0)
        assert await broker.size(queue) == 4
        assert await broker.purge(queue) == 4
        assert await broker.size(queue) == 0 and await broker.size(other) == 1
        await broker.ack(held)
        assert await broker.fetch([queue], 10, 0.0) == []

    brokers.run(scenario)


def test_two_consumers_never_get_the_same_message(brokers: BrokerKit) -> None:
    count = 200

    async def consume(queue: str, seen: list[str | None]) -> None:
        consumer = brokers.broker()
        idle = 0
        while idle < 3:
            got = await consumer.fetch([queue], 7, 0.2)
            idle = 0 if got else idle + 1
            seen.extend(ids(got))
            await consumer.ack(got)

    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        for n in range(count):
            await broker.publish(queue, message(f"m{n}"))
        first: list[str | None] = []
        second: list[str | None] = []
        await asyncio.gather(consume(queue, first), consume(queue, second))
        assert sorted(first + second, key=str) == sorted((f"m{n}" for n in range(count)), key=str)
        assert first and second, "both consumers should have taken part"

    brokers.run(scenario)


def test_an_undecodable_stored_message_is_delivered_with_its_error(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = brokers.broker(), brokers.queue()
        await brokers.put_raw(broker, queue, b"\xff not an envelope")
        [got] = await broker.fetch([queue], 10, 1.0)
        if brokers.kind in AMQP_KINDS:
            # AMQP has no envelope to misread: the bytes arrive as a body with no headers, and the
            # worker's decoder finds what is wrong with them.
            assert got.message is not None and got.message.body == got.raw == b"\xff not an envelope"
            assert got.message.headers == {} and got.error is None
            reason = "undecodable message: body is not JSON"
        else:
            assert got.message is None and got.error and got.raw == b"\xff not an envelope"
            reason = got.error
        await broker.reject(got, requeue=False, reason=reason)
        [dead] = await broker.dead_letters(queue)
        assert dead.raw == b"\xff not an envelope" and dead.reason == reason
        assert dead.message is None or dead.message.body == dead.raw

    brokers.run(scenario)


BROADCASTING = ("memory", "redis", "redis-cluster", "redis-sentinel", *AMQP_KINDS)


async def _next(subscription: AsyncIterator[Message], timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(subscription), timeout)


def test_broadcast_reaches_every_subscriber_of_its_exchange(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        sender, listener = brokers.broker(), brokers.broker()
        if brokers.kind not in BROADCASTING:
            with pytest.raises(NotImplementedError, match="cannot broadcast"):
                await sender.broadcast("celery.pidbox", message())
            return
        exchange = f"x-{uuid.uuid4().hex[:8]}"
        async with (
            listener.subscribe(exchange) as first,
            sender.subscribe(exchange) as second,
            listener.subscribe(f"{exchange}-other") as other,
        ):
            await sender.broadcast(exchange, message("m-1"))
            for subscription in (first, second):
                got = await _next(subscription)
                assert got.task_id == "m-1"
                assert got.properties["delivery_info"]["exchange"] == exchange
            await sender.broadcast(f"{exchange}-other", message("m-2"))
            assert (await _next(other)).task_id == "m-2"

    brokers.run(scenario)


def test_broadcast_patterns_select_by_routing_key(brokers: BrokerKit) -> None:
    async def scenario() -> None:
        broker = brokers.broker()
        if brokers.kind not in BROADCASTING:
            with pytest.raises(NotImplementedError, match="cannot broadcast"):
                async with broker.subscribe("celeryev", "worker.*"):
                    pass
            return
        exchange = f"ev-{uuid.uuid4().hex[:8]}"
        async with broker.subscribe(exchange, "worker.*") as workers, broker.subscribe(exchange) as every:
            await broker.broadcast(exchange, message("task"), routing_key="task.multi")
            await broker.broadcast(exchange, message("heartbeat"), routing_key="worker.heartbeat")
            await broker.broadcast(exchange, message("bare"))
            assert (await _next(workers)).task_id == "heartbeat"
            assert [(await _next(every)).task_id for _ in range(3)] == ["task", "heartbeat", "bare"]
            with pytest.raises(TimeoutError):
                await _next(workers, timeout=0.3)

    brokers.run(scenario)
