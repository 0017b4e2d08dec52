"""The Broker contract as a pytest suite: what the worker and the client rely on, for any broker.

Run it against your own broker with a kit (``celeriac.testing.contract.kit.BrokerKit``) that says how
to make your broker, store raw bytes on it, freeze its lease and clean up after a test::

    import pytest
    from celeriac.testing.contract import BrokerContract, BrokerKit

    class MyKit(BrokerKit):
        broadcasts = True  # capability flags: see BrokerKit

        async def put_raw(self, broker, queue, payload): ...
        def freeze(self, broker): ...
        def clean(self): ...

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def broker_kit(self):
            kit = MyKit("mybroker://localhost")
            yield kit
            kit.clean()

pytest collects ``TestMyBroker`` with every test of ``BrokerContract``; the base class itself is not
collected (its name does not start with ``Test``). Every test requests the fixture ``broker_kit``,
so one parametrised fixture in a ``conftest.py`` runs the suite on several brokers.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import pytest

from celeriac.brokers import Broker, Delivery
from celeriac.protocol.message import Message
from celeriac.testing.contract.kit import BrokerKit

__all__ = ["BrokerContract", "ids", "message"]


def message(name: str = "", priority: int | None = None) -> Message:
    """A task message for ``proj.add(2, 3)`` with task id ``name`` (a fresh one when empty)."""
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
    """The task ids of ``deliveries``, in order (None for a delivery the broker could not read)."""
    return [d.message.task_id if d.message else None for d in deliveries]


async def _take(broker: Broker, queue: str, count: int) -> list[Delivery]:
    """Fetch until ``count`` deliveries came (a pushing broker may hand a batch out over several
    fetches), or a fetch came back empty."""
    got: list[Delivery] = []
    while len(got) < count and (batch := await broker.fetch([queue], count - len(got), 1.0)):
        got += batch
    return got


async def _bury(broker: Broker, queue: str, *names: str) -> None:
    """Publish a message per name, fetch them and dead-letter each, in that order (reason "bad <name>")."""
    for name in names:
        await broker.publish(queue, message(name))
    for got in await _take(broker, queue, len(names)):
        await broker.reject(got, requeue=False, reason=f"bad {ids([got])[0]}")


async def _dead(broker: Broker, queue: str) -> list[str | None]:
    """The task ids of the dead letters of ``queue``, newest first."""
    return [d.task_id for d in await broker.dead_letters(queue)]


async def _next_message(subscription: AsyncIterator[Message], timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(anext(subscription), timeout)


class BrokerContract:
    """Every behaviour a broker promises (see ``celeriac.brokers.base.Broker``), one test each.

    Subclass it as ``Test...`` and provide a ``broker_kit`` fixture; each test makes its brokers and
    queues through the kit, runs one scenario on an event loop, and leaves cleaning to the fixture.
    """

    def test_round_trip_preserves_the_message(self, broker_kit: BrokerKit) -> None:
        """A fetched message has the body, headers and properties published, and delivery info."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
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

        broker_kit.run(scenario)

    def test_fifo_within_a_priority(self, broker_kit: BrokerKit) -> None:
        """Messages of one priority come out in the order they were published."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            for n in range(10):
                await broker.publish(queue, message(f"m{n}"))
            # A pushing broker (AMQP) may hand a batch out over several fetches; the order is what counts.
            got: list[Delivery] = []
            while len(got) < 10 and (batch := await broker.fetch([queue], 10 - len(got), 1.0)):
                got += batch
            assert ids(got) == [f"m{n}" for n in range(10)]

        broker_kit.run(scenario)

    def test_priorities_order_messages_as_the_broker_says(self, broker_kit: BrokerKit) -> None:
        """Within one queue, priorities order messages as ``Broker.priority_order`` says."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            # One priority per kombu bucket (0, 3, 6, 9): Redis with Celery's default buckets orders them too
            for name, priority in [("a", 6), ("b", 0), ("c", 9), ("d", 0), ("e", 3), ("f", None)]:
                await broker.publish(queue, message(name, priority))
            expected = {
                "lower-first": ["b", "d", "f", "e", "a", "c"],
                "higher-first": ["c", "a", "e", "b", "d", "f"],  # AMQP: RabbitMQ with x-max-priority
                "none": ["a", "b", "c", "d", "e", "f"],  # e.g. quorum queues: FIFO
            }[broker.priority_order]
            assert ids(await broker.fetch([queue], 10, 1.0)) == expected

        broker_kit.run(scenario)

    def test_several_queues(self, broker_kit: BrokerKit) -> None:
        """A fetch takes only from the queues it names, and from all of them."""

        async def scenario() -> None:
            broker, one, two = broker_kit.broker(), broker_kit.queue(), broker_kit.queue()
            await broker.publish(one, message("in-one"))
            await broker.publish(two, message("in-two"))
            [got] = await broker.fetch([two], 10, 1.0)
            assert (got.queue, ids([got])) == (two, ["in-two"])
            await broker.publish(two, message("in-two-again"))
            got_both = await broker.fetch([one, two], 10, 1.0)
            assert {(d.queue, ids([d])[0]) for d in got_both} == {(one, "in-one"), (two, "in-two-again")}

        broker_kit.run(scenario)

    def test_limit_is_respected(self, broker_kit: BrokerKit) -> None:
        """A fetch hands out at most ``limit`` messages, the rest stay for the next."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            for n in range(5):
                await broker.publish(queue, message(f"m{n}"))
            assert ids(await broker.fetch([queue], 2, 1.0)) == ["m0", "m1"]
            assert ids(await broker.fetch([queue], 10, 1.0)) == ["m2", "m3", "m4"]

        broker_kit.run(scenario)

    def test_fetch_waits_up_to_timeout_then_returns_nothing(self, broker_kit: BrokerKit) -> None:
        """A fetch on an empty queue waits about ``timeout`` seconds, then returns nothing."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            started = time.monotonic()
            assert await broker.fetch([queue], 10, 0.3) == []
            assert 0.25 <= time.monotonic() - started < 2.0

        broker_kit.run(scenario)

    def test_fetch_wakes_when_another_thread_publishes(self, broker_kit: BrokerKit) -> None:
        """A waiting fetch returns soon after another client publishes, without waiting out its timeout."""

        queue = broker_kit.queue()

        async def publish_later() -> None:
            await asyncio.sleep(0.3)
            publisher = broker_kit.broker()  # its own instance, on its own loop and thread
            await publisher.publish(queue, message("late"))
            await publisher.close()

        async def scenario() -> None:
            broker = broker_kit.broker()
            await broker.connect()
            thread = broker_kit.run_in_thread(publish_later)
            started = time.monotonic()
            got = await broker.fetch([queue], 10, 10.0)
            waited = time.monotonic() - started
            thread.join(5)
            assert ids(got) == ["late"]
            assert 0.25 <= waited < 1.5

        broker_kit.run(scenario)

    def test_not_before_hides_a_message_until_it_is_due(self, broker_kit: BrokerKit) -> None:
        """A message published with ``not_before`` is counted but not handed out until it is due."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            due = time.time() + 0.6
            await broker.publish(queue, message("later"), not_before=due)
            await broker.publish(queue, message("now"))
            assert ids(await broker.fetch([queue], 10, 0.0)) == ["now"]
            assert await broker.size(queue) == 1
            got = await broker.fetch([queue], 10, 5.0)
            assert ids(got) == ["later"]
            assert due - 0.05 <= time.time() < due + 0.8

        broker_kit.run(scenario)

    def test_a_message_back_from_a_delay_can_be_delayed_again(self, broker_kit: BrokerKit) -> None:
        """A delayed message fetched and published again with ``not_before`` (a task retried with a
        countdown, twice) comes back each time: nothing the delay wrote into it holds it back.

        The delay, rounded up to 3 s, is two powers of two: on RabbitMQ's delay scheme the message passes
        two delay queues, so a second trip dead-letters it into a queue its first trip already left
        (which RabbitMQ drops as a dead-letter cycle when the message still carries ``x-death``)."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            again = message("again")
            for trip in range(2):
                await broker.publish(queue, again, not_before=time.time() + 2.1)
                got = await broker.fetch([queue], 10, 5.0)
                assert ids(got) == ["again"], f"trip {trip + 1}: the delayed message never came back"
                await broker.ack(got)
                assert got[0].message is not None
                again = got[0].message

        broker_kit.run(scenario)

    def test_ack_removes_the_message(self, broker_kit: BrokerKit) -> None:
        """An acked message is gone for every consumer."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            await broker.publish(queue, message("done"))
            await broker.ack(await broker.fetch([queue], 10, 1.0))
            await broker.close()
            assert await broker_kit.broker().fetch([queue], 10, 0.0) == []
            assert await broker_kit.broker().size(queue) == 0

        broker_kit.run(scenario)

    def test_reject_with_requeue_gives_it_back_counting_the_delivery(self, broker_kit: BrokerKit) -> None:
        """A requeued message comes back, counted as its second delivery."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            await broker.publish(queue, message("again"))
            [first] = await broker.fetch([queue], 10, 1.0)
            await broker.reject(first, requeue=True)
            [second] = await broker.fetch([queue], 10, 1.0)
            assert ids([second]) == ["again"]
            assert second.deliveries == 2 and second.redelivered
            assert second.message is not None and second.message.properties["delivery_info"]["redelivered"]

        broker_kit.run(scenario)

    def test_reject_without_requeue_dead_letters_with_the_reason(self, broker_kit: BrokerKit) -> None:
        """A rejected message leaves its queue and is kept as a dead letter with the reason."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
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

        broker_kit.run(scenario)

    def test_requeued_dead_letters_return_to_their_queue_oldest_first(self, broker_kit: BrokerKit) -> None:
        """``requeue_dead_letters`` puts a queue's dead letters back, oldest first, up to ``limit`` or of the
        task ids asked for, each delivered afresh (count 1); other queues' dead letters stay.

        A broker whose kit says it does not manage dead letters must refuse with NotImplementedError.
        """

        async def scenario() -> None:
            broker, queue, other = broker_kit.broker(), broker_kit.queue(), broker_kit.queue()
            if not broker_kit.manages_dead_letters:
                with pytest.raises(NotImplementedError):
                    await broker.requeue_dead_letters(queue)
                return
            await broker.publish(queue, message("d1"))
            [first] = await _take(broker, queue, 1)
            await broker.reject(first, requeue=True)
            [again] = await _take(broker, queue, 1)
            assert again.deliveries == 2
            await broker.reject(again, requeue=False, reason="bad d1")
            await _bury(broker, queue, "d2", "d3", "d4")
            await _bury(broker, other, "o1")
            assert await _dead(broker, queue) == ["d4", "d3", "d2", "d1"]
            assert await broker.requeue_dead_letters(queue, limit=2) == 2
            back = await _take(broker, queue, 2)
            assert ids(back) == ["d1", "d2"] and [d.deliveries for d in back] == [1, 1]
            await broker.ack(back)
            assert await _dead(broker, queue) == ["d4", "d3"]
            assert await broker.requeue_dead_letters(queue, ids=["d4", "unknown"]) == 1
            [d4] = await _take(broker, queue, 1)
            assert ids([d4]) == ["d4"] and d4.deliveries == 1
            await broker.ack([d4])
            assert await broker.requeue_dead_letters(queue, limit=0) == 0
            assert await broker.requeue_dead_letters(queue) == 1
            assert await broker.requeue_dead_letters(queue) == 0
            assert ids(await _take(broker, queue, 1)) == ["d3"]
            assert await _dead(broker, queue) == []
            assert await _dead(broker, other) == ["o1"]
            with pytest.raises(ValueError, match="limit"):
                await broker.requeue_dead_letters(queue, limit=-1)

        broker_kit.run(scenario)

    def test_purged_dead_letters_go_by_age_and_by_count(self, broker_kit: BrokerKit) -> None:
        """``purge_dead_letters`` deletes a queue's dead letters older than ``older_than`` seconds, or all
        but the newest ``keep``, or all of them; other queues' dead letters stay.

        A broker whose kit says it does not manage dead letters must refuse with NotImplementedError.
        """

        async def scenario() -> None:
            broker, queue, other = broker_kit.broker(), broker_kit.queue(), broker_kit.queue()
            if not broker_kit.manages_dead_letters:
                with pytest.raises(NotImplementedError):
                    await broker.purge_dead_letters(queue)
                return
            await _bury(broker, queue, "old1", "old2")
            await _bury(broker, other, "o1")
            await asyncio.sleep(1.5)
            await _bury(broker, queue, "new1", "new2", "new3")
            assert await broker.purge_dead_letters(queue, older_than=3600) == 0
            assert await broker.purge_dead_letters(queue, older_than=1.0) == 2
            assert await _dead(broker, queue) == ["new3", "new2", "new1"]
            assert await broker.purge_dead_letters(queue, keep=5) == 0
            assert await broker.purge_dead_letters(queue, keep=1) == 2
            assert await _dead(broker, queue) == ["new3"]
            assert await broker.purge_dead_letters(queue) == 1
            assert await _dead(broker, queue) == []
            assert await _dead(broker, other) == ["o1"]
            for bad in ({"keep": -1}, {"older_than": -5.0}):
                with pytest.raises(ValueError, match=next(iter(bad))):
                    await broker.purge_dead_letters(queue, **bad)

        broker_kit.run(scenario)

    def test_release_does_not_count_a_delivery(self, broker_kit: BrokerKit) -> None:
        """A released message comes back as if it had never been delivered."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            await broker.publish(queue, message("unstarted"))
            await broker.release(await broker.fetch([queue], 10, 1.0))
            [again] = await broker_kit.broker().fetch([queue], 10, 1.0)
            assert again.deliveries == 1 and not again.redelivered

        broker_kit.run(scenario)

    def test_close_gives_unacked_messages_back_with_their_count(self, broker_kit: BrokerKit) -> None:
        """Closing a broker gives back what it held, counted as delivered once."""

        async def scenario() -> None:
            leaving, queue = broker_kit.broker(), broker_kit.queue()
            await leaving.publish(queue, message("held"))
            assert len(await leaving.fetch([queue], 10, 1.0)) == 1
            await leaving.close()
            [again] = await broker_kit.broker().fetch([queue], 10, 1.0)
            assert ids([again]) == ["held"] and again.deliveries == 2

        broker_kit.run(scenario)

    def test_a_dead_consumers_message_comes_back_after_its_lease(self, broker_kit: BrokerKit) -> None:
        """A frozen consumer's message goes to another once its lease ends; its late ack changes nothing."""

        async def scenario() -> None:
            crashed, queue = broker_kit.broker(lease_seconds=0.5), broker_kit.queue()
            await crashed.publish(queue, message("orphan"))
            [lost] = await crashed.fetch([queue], 10, 1.0)
            survivor = broker_kit.broker(lease_seconds=5)
            if broker_kit.pushes:
                # The connection is the lease: the server gives the message back as soon as it drops.
                assert await survivor.fetch([queue], 10, 0.0) == []
                broker_kit.freeze(crashed)
                started = time.monotonic()
                [again] = await survivor.fetch([queue], 10, 5.0)
                assert time.monotonic() - started < 2.0
            else:
                broker_kit.freeze(crashed)
                assert await survivor.fetch([queue], 10, 0.0) == []
                started = time.monotonic()
                [again] = await survivor.fetch([queue], 10, 5.0)
                assert 0.2 < time.monotonic() - started < 2.0
            assert ids([again]) == ["orphan"] and again.deliveries == 2
            # Asked before a late run records anything, the frozen consumer learns it lost the message.
            assert await crashed.holds([lost]) == [False]
            assert await survivor.holds([again]) == [True]
            # The dead consumer's late ack must not delete what another consumer now holds.
            await crashed.ack([lost])
            await survivor.reject(again, requeue=True)
            if broker_kit.pushes:
                await survivor.close()  # else the server pushes the requeued message to it again
            assert ids(await broker_kit.broker().fetch([queue], 10, 1.0)) == ["orphan"]

        broker_kit.run(scenario)

    def test_a_live_consumers_heartbeat_keeps_its_message(self, broker_kit: BrokerKit) -> None:
        """A consumer that stays alive keeps its message for longer than several leases."""

        async def scenario() -> None:
            worker, queue = broker_kit.broker(lease_seconds=0.5), broker_kit.queue()
            await worker.publish(queue, message("long-task"))
            held = await worker.fetch([queue], 10, 1.0)
            await asyncio.sleep(1.6)  # more than three leases
            assert await broker_kit.broker().fetch([queue], 10, 0.0) == []
            assert await worker.holds(held) == [True]
            await worker.ack(held)
            assert await broker_kit.broker().size(queue) == 0

        broker_kit.run(scenario)

    def test_purge_and_size_count_waiting_and_delayed_messages(self, broker_kit: BrokerKit) -> None:
        """``size`` and ``purge`` count waiting and delayed messages of one queue, not held ones."""

        async def scenario() -> None:
            broker, queue, other = broker_kit.broker(), broker_kit.queue(), broker_kit.queue()
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

        broker_kit.run(scenario)

    def test_two_consumers_never_get_the_same_message(self, broker_kit: BrokerKit) -> None:
        """Two consumers draining one queue share it out: each message exactly once."""

        count = 200
        taken: list[str | None] = []

        async def consume(queue: str, seen: list[str | None], ready: asyncio.Barrier) -> None:
            # Each consumer keeps fetching until every message is taken (or 30 s pass): one that found
            # the queue busy a few times in a row under a loaded machine must not give up early. Both
            # connect before either fetches (opening a connection can outlast draining 200 messages),
            # and each spends a moment on what it got, as a worker does.
            consumer = broker_kit.broker()
            await consumer.size(queue)
            await ready.wait()
            deadline = time.monotonic() + 30
            while len(taken) < count and time.monotonic() < deadline:
                got = await consumer.fetch([queue], 7, 0.2)
                seen.extend(ids(got))
                taken.extend(ids(got))
                await consumer.ack(got)
                await asyncio.sleep(0.005)

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            for n in range(count):
                await broker.publish(queue, message(f"m{n}"))
            first: list[str | None] = []
            second: list[str | None] = []
            ready = asyncio.Barrier(2)
            await asyncio.gather(consume(queue, first, ready), consume(queue, second, ready))
            assert sorted(first + second, key=str) == sorted((f"m{n}" for n in range(count)), key=str)
            assert first and second, "both consumers should have taken part"

        broker_kit.run(scenario)

    def test_an_undecodable_stored_message_is_delivered_with_its_error(self, broker_kit: BrokerKit) -> None:
        """Bytes the broker cannot read are still delivered, and can be dead-lettered as they are."""

        async def scenario() -> None:
            broker, queue = broker_kit.broker(), broker_kit.queue()
            await broker_kit.put_raw(broker, queue, b"\xff not an envelope")
            [got] = await broker.fetch([queue], 10, 1.0)
            if not broker_kit.enveloped:
                # No envelope to misread: the bytes arrive as a body with no headers, and the worker's
                # decoder finds what is wrong with them.
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

        broker_kit.run(scenario)

    def test_broadcast_reaches_every_subscriber_of_its_exchange(self, broker_kit: BrokerKit) -> None:
        """A broadcast reaches every subscriber of its exchange and no other.

        A broker whose kit says it does not broadcast must refuse with NotImplementedError.
        """

        async def scenario() -> None:
            sender, listener = broker_kit.broker(), broker_kit.broker()
            if not broker_kit.broadcasts:
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
                    got = await _next_message(subscription)
                    assert got.task_id == "m-1"
                    assert got.properties["delivery_info"]["exchange"] == exchange
                await sender.broadcast(f"{exchange}-other", message("m-2"))
                assert (await _next_message(other)).task_id == "m-2"

        broker_kit.run(scenario)

    def test_broadcast_patterns_select_by_routing_key(self, broker_kit: BrokerKit) -> None:
        """A subscription's pattern selects broadcasts by routing key.

        A broker whose kit says it does not broadcast must refuse to subscribe with NotImplementedError.
        """

        async def scenario() -> None:
            broker = broker_kit.broker()
            if not broker_kit.broadcasts:
                with pytest.raises(NotImplementedError, match="cannot broadcast"):
                    async with broker.subscribe("celeryev", "worker.*"):
                        pass
                return
            exchange = f"ev-{uuid.uuid4().hex[:8]}"
            async with broker.subscribe(exchange, "worker.*") as workers, broker.subscribe(exchange) as every:
                await broker.broadcast(exchange, message("task"), routing_key="task.multi")
                await broker.broadcast(exchange, message("heartbeat"), routing_key="worker.heartbeat")
                await broker.broadcast(exchange, message("bare"))
                assert (await _next_message(workers)).task_id == "heartbeat"
                assert [(await _next_message(every)).task_id for _ in range(3)] == [
                    "task",
                    "heartbeat",
                    "bare",
                ]
                with pytest.raises(TimeoutError):
                    await _next_message(workers, timeout=0.3)

        broker_kit.run(scenario)
