"""The SQS broker's layout and limits against moto's server: what kombu's SQS transport would read and
write (base64 JSON envelope, mangled and prefixed queue names, predefined queues), delay hops, the
message limit, and the delivery count that dead-letters a poison message."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import ConfigurationError, MessageTooLarge
from celeriac.protocol.envelope import to_envelope
from celeriac.protocol.message import Message
from celeriac.sqs import _wire
from celeriac.sqs.broker import SQSBroker
from celeriac.sqs.client import Clients
from celeriac.sqs.testkit import SQSBrokerKit
from celeriac.testing.contract import BrokerContract
from celeriac.testing.contract.broker import ids, message
from tests.contract.conftest import REDIS_RESULTS, _require_redis_results, sqs_kit


@pytest.fixture
def kit(sqs_endpoint: str) -> Iterator[SQSBrokerKit]:
    kit = sqs_kit(sqs_endpoint)
    yield kit
    kit.clean()


async def _raw(broker: SQSBroker, queue: str) -> list[dict[str, Any]]:
    """Receive a queue's messages as any SQS client would (hidden for 30 s)."""
    target = await broker._sqs.get(queue)
    client = await broker._sqs.client()
    reply = await client.receive_message(
        QueueUrl=target.url, MaxNumberOfMessages=10, VisibilityTimeout=30, MessageAttributeNames=["All"]
    )
    return list(reply.get("Messages") or [])


def test_a_message_is_kombus_base64_envelope_on_a_mangled_prefixed_queue(kit: SQSBrokerKit) -> None:
    async def scenario() -> None:
        broker = kit.broker()
        assert isinstance(broker, SQSBroker)
        await broker.publish("my.queue:x", message("t-1"))
        kit.queues.append("my.queue:x")
        target = await broker._sqs.get("my.queue:x")
        assert target.url.endswith("/" + kit.defaults["queue_name_prefix"] + "my-queue_x")
        [raw] = await _raw(broker, "my.queue:x")
        envelope = json.loads(base64.b64decode(raw["Body"]))
        assert list(envelope) == ["body", "content-encoding", "content-type", "headers", "properties"]
        assert envelope["headers"]["id"] == "t-1" and envelope["headers"]["task"] == "proj.add"
        assert envelope["properties"]["body_encoding"] == "base64"
        assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": "my.queue:x"}
        assert json.loads(base64.b64decode(envelope["body"]))[0] == [2, 3]
        assert "MessageAttributes" not in raw  # nothing a kombu reader would have to skip

    kit.run(scenario)


def test_a_plain_json_body_from_another_producer_is_read(kit: SQSBrokerKit) -> None:
    """kombu's ``sqs_base64_encoding=False`` sends the envelope's JSON as it is: read it too, and the
    delivery tag is the receipt handle, as kombu sets it."""

    async def scenario() -> None:
        plain, queue = kit.broker(sqs_base64_encoding=False), kit.queue()
        await plain.publish(queue, message("plain"))
        [raw] = await _raw(plain, queue)  # type: ignore[arg-type]
        assert json.loads(raw["Body"])["headers"]["id"] == "plain"
        assert isinstance(plain, SQSBroker)
        await plain._sqs.show(await plain._sqs.get(queue), [raw["ReceiptHandle"]])
        [got] = await kit.broker().fetch([queue], 10, 2.0)
        assert ids([got]) == ["plain"] and got.message is not None
        assert got.message.properties["delivery_tag"] == got.tag

    kit.run(scenario)


def test_predefined_queues_are_the_only_queues(kit: SQSBrokerKit, sqs_endpoint: str) -> None:
    async def scenario() -> None:
        creator = kit.broker()
        assert isinstance(creator, SQSBroker)
        queue = kit.queue()
        url = (await creator._sqs.get(queue)).url
        sqs_name = kit.defaults["queue_name_prefix"] + queue
        broker = kit.broker(predefined_queues={sqs_name: {"url": url}})
        await broker.publish(queue, message("pre"))
        assert ids(await broker.fetch([queue], 10, 2.0)) == ["pre"]
        with pytest.raises(ConfigurationError, match="not in predefined_queues"):
            await broker.publish("undeclared", message())

    kit.run(scenario)


def test_sqs_message_limit_is_a_clear_error_at_publish(kit: SQSBrokerKit) -> None:
    async def scenario() -> None:
        broker, queue = kit.broker(), kit.queue()
        big = message("big")
        big.body = b"x" * 200_000  # base64 makes it ~267 KB: over 256 KiB
        with pytest.raises(MessageTooLarge, match=r"proj.add is \d+ bytes on SQS, over its limit of 262144"):
            await broker.publish(queue, big)
        assert await broker.size(queue) == 0

    kit.run(scenario)


def test_a_long_delay_hops_until_it_is_due(kit: SQSBrokerKit) -> None:
    """A message due beyond SQS's 15 minutes is sent with the longest delay and its due time; one that
    surfaces early is sent on again (a hop), never handed out, and arrives once due, delivered once."""

    async def scenario() -> None:
        broker, queue = kit.broker(), kit.queue()
        assert isinstance(broker, SQSBroker)
        await broker.publish(queue, message("next-hour"), not_before=time.time() + 3600)
        assert await broker.size(queue) == 1 and await broker.fetch([queue], 10, 0.0) == []
        # The last hop: what a 15-minute delay leaves, surfacing 2 s early.
        due = time.time() + 2.0
        body = _wire.encode_body(to_envelope(message("almost"), routing_key=queue))
        target = await broker._sqs.get(queue)
        entry = {"MessageBody": body, "MessageAttributes": {_wire.NOT_BEFORE: _wire.attribute(due)}}
        await broker._sqs.send(target, [entry])
        assert await broker.fetch([queue], 10, 0.5) == []  # surfaced, hopped, not handed out
        assert await broker.size(queue) == 2  # still counted, delayed
        [got] = await broker.fetch([queue], 10, 5.0)
        assert ids([got]) == ["almost"] and got.deliveries == 1
        assert due <= time.time() < due + 1.5

    kit.run(scenario)


def test_the_fourth_delivery_of_a_message_dead_letters_it_in_a_worker(kit: SQSBrokerKit) -> None:
    """SQS's receive count is the delivery count: a message received three times (its worker died
    each time) is dead-lettered by the next worker with the reason, not run."""
    from celeriac import Celeriac
    from celeriac.testing import start_worker

    queue = kit.queue()
    app = Celeriac("poison", broker=kit.url, backend="memory://poison-" + queue)
    app.conf.broker_transport_options = dict(kit.defaults, lease_seconds=1)
    app.conf.task_default_queue = queue
    ran: list[int] = []

    @app.task(name="poison.add")
    def add(x: int, y: int) -> int:
        ran.append(x + y)
        return x + y

    async def deliver_three_times() -> None:
        broker = kit.broker(lease_seconds=1)
        sent = message("poison-1")
        poison = Message(sent.body, {**sent.headers, "task": "poison.add"}, properties=sent.properties)
        await broker.publish(queue, poison)
        for _ in range(3):
            [got] = await broker.fetch([queue], 1, 3.0)
            await broker.reject(got, requeue=True)

    kit.run(deliver_three_times)
    try:
        with start_worker(app, concurrency=1):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not app.dead_letters(queue):
                time.sleep(0.1)
        [dead] = app.dead_letters(queue)
        assert dead.task_id == "poison-1" and "broker_max_deliveries=3" in dead.reason
        assert ran == []
    finally:
        app.close()


def test_clean_leaves_no_queue(sqs_endpoint: str) -> None:
    kit = sqs_kit(sqs_endpoint)

    async def scenario() -> None:
        await kit.broker().publish(kit.queue(), message())

    kit.run(scenario)
    kit.clean()

    async def listing() -> list[str]:
        clients = Clients(SQSBroker(kit.url, options=dict(kit.defaults)).settings)
        try:
            client = await clients.get()
            reply = await client.list_queues(QueueNamePrefix=kit.defaults["queue_name_prefix"])
            return list(reply.get("QueueUrls") or [])
        finally:
            await clients.aclose()

    assert asyncio.run(listing()) == []


def test_a_fifo_queue_keeps_order_groups_and_refuses_a_per_message_delay(kit: SQSBrokerKit) -> None:
    """A queue named ``*.fifo`` is an SQS FIFO queue: messages go in kombu's group ``default`` (or the
    message's ``MessageGroupId`` property) with a fresh deduplication id each, and come out in order;
    a delay of one message is refused with the reason (FIFO queues delay only as a whole)."""

    async def scenario() -> None:
        broker = kit.broker()
        assert isinstance(broker, SQSBroker)
        queue = f"{kit.queue()}.fifo"
        kit.queues.append(queue)
        same = message("dup")
        for name in ("f1", "f2", "f3"):
            await broker.publish(queue, message(name))
        await broker.publish(queue, same)
        await broker.publish(queue, same)  # no deduplication unless the sender asks for it
        target = await broker._sqs.get(queue)
        assert target.fifo and target.url.endswith(".fifo")
        got = await broker.fetch([queue], 10, 2.0)
        assert ids(got) == ["f1", "f2", "f3", "dup", "dup"]
        await broker.release(got[3:])  # given back in its group, not counted
        await broker.ack(got[:3])
        again = await broker.fetch([queue], 10, 2.0)
        assert ids(again) == ["dup", "dup"] and [d.deliveries for d in again] == [1, 1]
        grouped = Message(same.body, {**same.headers, "id": "g"}, properties={"MessageGroupId": "g1"})
        await broker.publish(queue, grouped)
        client = await broker._sqs.client()
        reply = await client.receive_message(
            QueueUrl=target.url, MessageSystemAttributeNames=["MessageGroupId"], WaitTimeSeconds=1
        )
        assert [m["Attributes"]["MessageGroupId"] for m in reply["Messages"]] == ["g1"]
        with pytest.raises(ConfigurationError, match=r"FIFO queue .* cannot delay one message"):
            await broker.publish(queue, message("later"), not_before=time.time() + 5)

    kit.run(scenario)


def test_a_client_script_exits_without_complaints(kit: SQSBrokerKit) -> None:
    """A script that sends a task and exits without closing the app leaves no unclosed HTTP session
    behind (aiohttp would print "Unclosed client session" at exit)."""
    import subprocess
    import sys

    queue = kit.queue()
    script = (
        "import json, sys; from celeriac import Celeriac; app = Celeriac('script', broker=sys.argv[1]); "
        "app.conf.broker_transport_options = json.loads(sys.argv[2]); "
        f"app.send_task('proj.add', (1, 2), queue={queue!r})"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, kit.url, json.dumps(kit.defaults)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr

    async def count() -> None:
        assert await kit.broker().size(queue) == 1

    kit.run(count)


def test_apply_async_names_a_fifo_group_and_deduplication_id(kit: SQSBrokerKit) -> None:
    """``apply_async(MessageGroupId=..., MessageDeduplicationId=...)``, as Celery users write it for SQS
    FIFO queues: the group is SQS's, and a second send with the same deduplication id is dropped by SQS."""
    from celeriac import Celeriac

    queue = f"{kit.queue()}.fifo"
    kit.queues.append(queue)
    app = Celeriac("fifo", broker=kit.url)
    app.conf.broker_transport_options = dict(kit.defaults)
    try:
        for _ in range(2):
            app.send_task("proj.add", (1, 2), queue=queue, MessageGroupId="g1", MessageDeduplicationId="once")

        async def check() -> None:
            broker = kit.broker()
            assert isinstance(broker, SQSBroker)
            target = await broker._sqs.get(queue)
            client = await broker._sqs.client()
            reply = await client.receive_message(
                QueueUrl=target.url, MaxNumberOfMessages=10, MessageSystemAttributeNames=["All"]
            )
            assert [m["Attributes"]["MessageGroupId"] for m in reply["Messages"]] == ["g1"]
            assert reply["Messages"][0]["Attributes"]["MessageDeduplicationId"] == "once"

        kit.run(check)
    finally:
        app.close()


class TestBroadcastsThroughASideChannel:
    """With ``broadcast_url`` (Redis, or an SQLite file), the SQS broker's broadcasts (remote control,
    events) pass the contract's broadcast tests; without it, the contract's refusal test runs in
    ``test_broker_contract``."""

    test_broadcast_reaches_every_subscriber_of_its_exchange = (
        BrokerContract.test_broadcast_reaches_every_subscriber_of_its_exchange
    )
    test_broadcast_patterns_select_by_routing_key = (
        BrokerContract.test_broadcast_patterns_select_by_routing_key
    )

    @pytest.fixture(params=["redis", "sqlite"])
    def broker_kit(
        self, request: pytest.FixtureRequest, sqs_endpoint: str, tmp_path: Path
    ) -> Iterator[SQSBrokerKit]:
        if request.param == "redis":
            _require_redis_results()
        side = REDIS_RESULTS[3] if request.param == "redis" else f"sqlite:///{tmp_path}/side.sqlite3"
        kit = sqs_kit(sqs_endpoint, broadcast_url=side)
        kit.broadcasts = True
        yield kit
        kit.clean()


def test_a_queue_that_fails_does_not_strand_what_the_others_gave(kit: SQSBrokerKit) -> None:
    """One fetch polls every queue at once; when one poll fails, the messages the others received are
    handed out (and a fetch where every poll failed raises)."""

    async def scenario() -> None:
        creator = kit.broker()
        assert isinstance(creator, SQSBroker)
        good, gone = kit.queue(), kit.queue()
        good_url = (await creator._sqs.get(good)).url
        gone_url = (await creator._sqs.get(gone)).url
        await (await creator._sqs.client()).delete_queue(QueueUrl=gone_url)
        prefix = kit.defaults["queue_name_prefix"]
        broker = kit.broker(
            predefined_queues={prefix + good: {"url": good_url}, prefix + gone: {"url": gone_url}}
        )
        await broker.publish(good, message("kept"))
        assert ids(await broker.fetch([gone, good], 10, 1.0)) == ["kept"]
        with pytest.raises(Exception, match=r"NonExistentQueue|does not exist"):
            await broker.fetch([gone], 10, 0.0)

    kit.run(scenario)


def test_a_full_size_message_is_dead_lettered_with_a_shortened_reason(kit: SQSBrokerKit) -> None:
    """The dead letter is the message plus its reason, within SQS's limit: the reason gives way."""

    async def scenario() -> None:
        broker, queue = kit.broker(max_message_bytes=8000), kit.queue()
        big = message("big")
        big.body = b"x" * 4000  # about 7.7 KB on SQS, base64 twice over
        await broker.publish(queue, big)
        [got] = await broker.fetch([queue], 1, 2.0)
        await broker.reject(got, requeue=False, reason="ValueError: " + "y" * 5000)
        [dead] = await broker.dead_letters(queue)
        assert dead.task_id == "big" and dead.reason.startswith("ValueError: yyy")
        assert len(dead.reason) < 1000

    kit.run(scenario)
