"""The Backend contract as it applies to rpc:// (results as messages to the sending client), on RabbitMQ.

What applies: a record published by a worker reaches the client named by its ``reply_to`` and equals
the record sent; ``wait`` returns it (whether it came before or during the wait); failure, retry and
revoked records; the latest state of a task wins. What does not, asserted as documented: another
client never sees a result that is not its own, ``forget`` only drops this client's copy, and groups
cannot be saved nor chords counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from celeriac import states
from celeriac.amqp._rpc_replies import is_consumed
from celeriac.amqp.client import connect_plain
from celeriac.amqp.rpc import RPCBackend
from celeriac.backends import ResultMeta, create_backend
from celeriac.backends.base import ChordPart
from celeriac.exceptions import ConfigurationError, TimeoutError
from celeriac.testing.contract import Kit
from tests.contract.conftest import close_amqp_connections
from tests.servers import RabbitServer, service_missing
from tests.servers import rabbit_server as rabbit_server  # the fixture

AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def require_rabbitmq() -> None:
    """Skip when RabbitMQ on 127.0.0.1:5672 does not answer; under ``CI=true`` fail instead."""
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=1).close()
    except OSError as exc:
        reason = f"RabbitMQ is not answering on 127.0.0.1:5672 ({exc})"
        service_missing(reason)


class RPCKit(Kit):
    """Backends for one test, each a client (or worker) with a reply queue of its own; closed after."""

    def backend(self, reply_to: str | None = None, **options: Any) -> RPCBackend:
        queue = reply_to or f"contract-rpc-{uuid.uuid4().hex[:12]}"
        backend = create_backend(
            "rpc://", options={"broker_url": AMQP, "reply_to": queue, **options}, expires=60.0
        )
        assert isinstance(backend, RPCBackend)
        self._open.append(backend)
        return backend


@pytest.fixture
def rpc() -> Iterator[RPCKit]:
    require_rabbitmq()
    yield RPCKit()


def record(status: str, reply_to: str | None, task_id: str | None = None, **fields: Any) -> ResultMeta:
    ready = status in states.READY_STATES
    return ResultMeta(
        task_id or str(uuid.uuid4()),
        status,
        date_done=datetime.now(UTC).replace(microsecond=0) if ready else None,
        reply_to=reply_to,
        **fields,
    )


def test_a_result_reaches_the_client_that_sent_the_task(rpc: RPCKit) -> None:
    async def scenario() -> None:
        client, worker = rpc.backend(), rpc.backend()
        await client.expect_reply(client.reply_to)  # what the app does before it sends a task
        ok = record(
            states.SUCCESS,
            client.reply_to,
            result={"total": 5, "note": "ünïcode"},
            children=[[[str(uuid.uuid4()), None], None]],
            parent_id=str(uuid.uuid4()),
            group_id=str(uuid.uuid4()),
            extended={"name": "proj.add", "args": [2, 3], "kwargs": {}, "worker": "w1", "retries": 0},
        )
        failed = record(
            states.FAILURE,
            client.reply_to,
            result={"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"},
            traceback="Traceback (most recent call last):\nValueError: boom\n",
        )
        await worker.store([ok, failed])  # before anyone waits: kept in the queue
        assert await client.wait(ok.task_id, timeout=5) == ok
        assert await client.wait(failed.task_id, timeout=5) == failed
        assert await client.get_many([ok.task_id, failed.task_id]) == {ok.task_id: ok, failed.task_id: failed}

    rpc.run(scenario)


def test_a_wait_is_woken_by_the_result(rpc: RPCKit) -> None:
    async def scenario() -> None:
        client, worker = rpc.backend(), rpc.backend()
        await client.expect_reply(client.reply_to)
        ok = record(states.SUCCESS, client.reply_to, result=42)
        waiting = asyncio.ensure_future(client.wait(ok.task_id, timeout=10))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        await worker.store([ok])
        assert (await waiting).result == 42

    rpc.run(scenario)


def test_results_queued_before_the_first_read_are_all_there(rpc: RPCKit) -> None:
    async def scenario() -> None:
        client, worker = rpc.backend(), rpc.backend()
        await client.expect_reply(client.reply_to)
        metas = [record(states.SUCCESS, client.reply_to, result=i) for i in range(50)]
        await worker.store(metas)
        # The first read opens the consumer and reads the backlog before it answers.
        found = await client.get_many([m.task_id for m in metas])
        assert [found[m.task_id].result for m in metas] == list(range(50))

    rpc.run(scenario)


def test_the_latest_state_wins_and_a_final_one_stays(rpc: RPCKit) -> None:
    async def scenario() -> None:
        client, worker = rpc.backend(), rpc.backend()
        await client.expect_reply(client.reply_to)
        task_id = str(uuid.uuid4())
        await worker.store([record(states.STARTED, client.reply_to, task_id, result={"pid": 1})])
        assert (await client.get(task_id)).status == states.STARTED
        retry = record(
            states.RETRY,
            client.reply_to,
            task_id,
            result={"exc_type": "OSError", "exc_message": ["again"], "exc_module": "builtins"},
        )
        await worker.store([retry])
        await asyncio.sleep(0.1)
        assert await client.get(task_id) == retry
        with pytest.raises(TimeoutError, match="RETRY"):
            await client.wait(task_id, timeout=0.2)
        await worker.store([record(states.SUCCESS, client.reply_to, task_id, result=7)])
        assert (await client.wait(task_id, timeout=5)).result == 7
        # A duplicate run's late STARTED does not undo the result.
        await worker.store([record(states.STARTED, client.reply_to, task_id)])
        await asyncio.sleep(0.1)
        assert (await client.get(task_id)).status == states.SUCCESS

    rpc.run(scenario)


def test_a_revoked_record_reaches_the_client_but_revoke_cannot_be_stored(rpc: RPCKit) -> None:
    async def scenario() -> None:
        client, worker = rpc.backend(), rpc.backend()
        await client.expect_reply(client.reply_to)
        expired = record(
            states.REVOKED,
            client.reply_to,
            result={
                "exc_type": "TaskRevokedError",
                "exc_message": ["expired"],
                "exc_module": "celery.exceptions",
            },
        )
        await worker.store([expired])
        assert await client.wait(expired.task_id, timeout=5) == expired
        # revoke() writes a record for no message: workers could not look it up, so it is refused.
        with pytest.raises(ConfigurationError, match="revocations"):
            await client.store([record(states.REVOKED, None)])
        # A message that named no reply queue gets no result (nobody could read it), as in Celery.
        await worker.store([record(states.SUCCESS, "")])

    rpc.run(scenario)


def test_another_client_never_sees_the_result(rpc: RPCKit) -> None:
    async def scenario() -> None:
        client, other, worker = rpc.backend(), rpc.backend(), rpc.backend()
        await client.expect_reply(client.reply_to)
        ok = record(states.SUCCESS, client.reply_to, result=1)
        await worker.store([ok])
        assert (await other.get(ok.task_id)).status == states.PENDING
        with pytest.raises(TimeoutError):
            await other.wait(ok.task_id, timeout=0.3)
        assert (await client.wait(ok.task_id, timeout=5)).result == 1

    rpc.run(scenario)


def test_forget_drops_this_clients_copy_only(rpc: RPCKit) -> None:
    async def scenario() -> None:
        client, worker = rpc.backend(), rpc.backend()
        await client.expect_reply(client.reply_to)
        ok = record(states.SUCCESS, client.reply_to, result=1)
        await worker.store([ok])
        assert (await client.wait(ok.task_id, timeout=5)).result == 1
        await client.forget(ok.task_id)
        assert (await client.get(ok.task_id)).status == states.PENDING
        await worker.forget(ok.task_id)  # a worker has nothing to forget: no error

    rpc.run(scenario)


def test_clients_on_two_loops_of_one_process_share_the_reply_queue(rpc: RPCKit) -> None:
    """RabbitMQ gives each message to one consumer: two loops of one client must not split results."""
    queue = f"contract-rpc-{uuid.uuid4().hex[:12]}"
    got: dict[str, Any] = {}

    async def scenario() -> None:
        here, worker = rpc.backend(queue), rpc.backend()
        await here.expect_reply(queue)
        ids = [str(uuid.uuid4()) for _ in range(20)]
        started = threading.Event()

        async def other_loop() -> None:
            there = create_backend("rpc://", options={"broker_url": AMQP, "reply_to": queue}, expires=60.0)
            try:
                waits = [there.wait(task_id, timeout=10) for task_id in ids[::2]]
                started.set()
                got["there"] = [meta.result for meta in await asyncio.gather(*waits)]
            finally:
                await there.close()

        thread = threading.Thread(target=lambda: asyncio.run(other_loop()))
        thread.start()
        await asyncio.to_thread(started.wait, 5)
        waits = asyncio.gather(*(here.wait(task_id, timeout=10) for task_id in ids[1::2]))
        await worker.store([record(states.SUCCESS, queue, t, result=i) for i, t in enumerate(ids)])
        got["here"] = [meta.result for meta in await waits]
        await asyncio.to_thread(thread.join, 10)

    rpc.run(scenario)
    assert got == {"there": list(range(0, 20, 2)), "here": list(range(1, 20, 2))}


def test_the_reply_is_celerys_message(rpc: RPCKit) -> None:
    """Default exchange, rk = reply_to, correlation_id = task id, JSON record; transient unless persistent."""

    async def scenario() -> None:
        queue = f"contract-rpc-raw-{uuid.uuid4().hex[:12]}"
        connection = await connect_plain(AMQP, {}, what="the rpc test")
        try:
            channel = await connection.channel()
            await channel.queue_declare(queue)
            for persistent, mode in ((False, 1), (True, 2)):
                worker = rpc.backend(persistent=persistent)
                ok = record(states.SUCCESS, queue, result=[1, "a"])
                await worker.store([ok])  # returns once RabbitMQ confirmed it: it is in the queue
                message = await channel.basic_get(queue, no_ack=True)
                properties = message.header.properties
                assert properties.correlation_id == ok.task_id
                assert (properties.content_type, properties.content_encoding) == ("application/json", "utf-8")
                assert properties.delivery_mode == mode
                assert message.routing_key == queue and message.exchange == ""
                body = json.loads(message.body)
                assert body["task_id"] == ok.task_id and body["status"] == "SUCCESS"
                assert body["result"] == [1, "a"] and body["date_done"]
            await channel.queue_delete(queue)
        finally:
            await connection.close()

    rpc.run(scenario)


def test_a_reply_that_cannot_be_read_fails_the_wait(rpc: RPCKit) -> None:
    from pamqp.commands import Basic

    async def scenario() -> None:
        client = rpc.backend()
        await client.expect_reply(client.reply_to)
        task_id = str(uuid.uuid4())
        waiting = asyncio.ensure_future(client.wait(task_id, timeout=10))
        connection = await connect_plain(AMQP, {}, what="the rpc test")
        try:
            channel = await connection.channel()
            assert client.reply_to is not None
            properties = Basic.Properties(content_type="application/json", correlation_id=task_id)
            await channel.basic_publish(b"{not json", routing_key=client.reply_to, properties=properties)
        finally:
            await connection.close()
        meta = await waiting
        assert meta.status == states.FAILURE and meta.result["exc_type"] == "DecodeError"

    rpc.run(scenario)


async def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout}s"
        await asyncio.sleep(0.05)


def test_consumer_and_publisher_come_back_after_the_server_closes_their_connections(rpc: RPCKit) -> None:
    """What aio-pika's robust connection did for us: reconnect, declare the reply queue again with
    Celery's arguments, consume again; a wait begun before the outage gets its result after it."""

    async def scenario() -> None:
        name = f"contract-rpc-{uuid.uuid4().hex[:12]}"
        client, worker = rpc.backend(connection_name=name), rpc.backend(connection_name=name)
        assert client.reply_to is not None
        await client.expect_reply(client.reply_to)
        before = record(states.SUCCESS, client.reply_to, result="before")
        await worker.store([before])
        assert (await client.wait(before.task_id, timeout=5)).result == "before"
        after = record(states.SUCCESS, client.reply_to, result="after")
        waiting = asyncio.ensure_future(client.wait(after.task_id, timeout=30))

        # The client's publishing connection (it declared its queue), its consumer's, the worker's.
        assert await asyncio.to_thread(close_amqp_connections, name) == 3
        await _until(lambda: is_consumed(AMQP, str(client.reply_to)), 15, "consuming again")
        await worker.store([after])  # on a new connection: the old one is gone
        assert (await waiting).result == "after"

        # The queue came back as Celery declares it: a declaration with other arguments would fail.
        connection = await connect_plain(AMQP, {}, what="the rpc test")
        try:
            channel = await connection.channel()
            declared = await channel.queue_declare(
                client.reply_to, durable=True, auto_delete=True, arguments={"x-expires": 60_000}
            )
            assert declared.consumer_count == 1
        finally:
            await connection.close()

    rpc.run(scenario)


def test_the_consumer_comes_back_when_its_queue_is_deleted(
    rpc: RPCKit, caplog: pytest.LogCaptureFixture
) -> None:
    """RabbitMQ cancels the consumer of a deleted queue; the client declares it again and consumes."""

    async def scenario() -> None:
        client, worker = rpc.backend(), rpc.backend()
        assert client.reply_to is not None
        await client.expect_reply(client.reply_to)
        assert (await client.get_many(["nothing"])) == {}  # the first read starts the consumer
        assert is_consumed(AMQP, client.reply_to)
        connection = await connect_plain(AMQP, {}, what="the rpc test")
        try:
            await (await connection.channel()).queue_delete(client.reply_to)
        finally:
            await connection.close()
        await _until(lambda: "cancelled its consumer" in caplog.text, 5, "cancelled")
        await _until(lambda: is_consumed(AMQP, str(client.reply_to)), 15, "consuming again")
        ok = record(states.SUCCESS, client.reply_to, result=3)
        await worker.store([ok])
        assert (await client.wait(ok.task_id, timeout=5)).result == 3

    with caplog.at_level(logging.WARNING, logger="celeriac.amqp.rpc"):
        rpc.run(scenario)


@pytest.mark.slow
def test_the_consumer_waits_out_an_outage_and_a_wait_across_it_gets_its_result(
    rabbit_server: Callable[..., RabbitServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A private node whose AMQP port closes for a while: the consumer tries again with backoff (every
    attempt refused) and is back soon after the port opens."""
    server = rabbit_server()
    url = server.url()
    options = {"broker_url": url, "connect_timeout": 1.0}

    async def scenario() -> None:
        client = create_backend("rpc://", options={**options, "reply_to": "outage-client"}, expires=60.0)
        worker = create_backend("rpc://", options={**options, "reply_to": "outage-worker"}, expires=60.0)
        try:
            await client.expect_reply("outage-client")
            assert (await client.get_many(["nothing"])) == {}  # consuming
            ok = record(states.SUCCESS, "outage-client", result="after the outage")
            waiting = asyncio.ensure_future(client.wait(ok.task_id, timeout=60))
            await asyncio.to_thread(server.stop_app)
            await _until(lambda: "cannot reconnect yet" in caplog.text, 20, "refused while down")
            await asyncio.sleep(2)  # several refused attempts, further and further apart
            await asyncio.to_thread(server.start_app)
            await _until(lambda: is_consumed(url, "outage-client"), 20, "consuming again")
            await worker.store([ok])  # the worker's connection died too: the next call makes a new one
            assert (await waiting).result == "after the outage"
            assert caplog.text.count("cannot reconnect yet") >= 2  # it kept trying while down
        finally:
            await worker.close()
            await client.close()

    with caplog.at_level(logging.DEBUG, logger="celeriac.amqp.rpc"):
        asyncio.run(scenario())


def test_groups_cannot_be_saved_and_chords_not_counted(rpc: RPCKit) -> None:
    async def scenario() -> None:
        backend = rpc.backend()
        with pytest.raises(ConfigurationError, match=r"GroupResult\.save"):
            await backend.save_group("g", [["g", None], []])
        with pytest.raises(ConfigurationError, match=r"GroupResult\.restore"):
            await backend.restore_group("g")
        await backend.forget_group("g")  # nothing was saved: nothing to do
        with pytest.raises(ConfigurationError, match="chords"):
            await backend.chord_begin("g", 2)
        with pytest.raises(ConfigurationError, match="chords"):
            await backend.chord_part("g", ChordPart("t", 0, states.SUCCESS, 1), 2)

    rpc.run(scenario)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "no broker_url"),
        ({"broker_url": "redis://localhost"}, "needs an AMQP broker"),
    ],
)
def test_rpc_needs_an_amqp_broker(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        create_backend("rpc://", options=options)
