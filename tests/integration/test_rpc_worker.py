"""rpc:// results with a real celeriac worker on RabbitMQ: what a client of the rpc backend relies on.

The worker runs in-process (``start_worker``) on the shared RabbitMQ, on a queue of the test's own
that is deleted afterwards. The client is the synchronous API (the portal loop), as most callers use it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator

import pytest

from celeriac import Celeriac, group, states
from celeriac.amqp.client import connect_plain
from celeriac.exceptions import ConfigurationError, TimeoutError
from celeriac.testing import start_worker
from tests.contract.test_rpc_backend import AMQP, require_rabbitmq


class Boom(Exception):
    pass


async def _delete_queues(names: list[str]) -> None:
    connection = await connect_plain(AMQP, {}, what="the rpc test")
    try:
        channel = await connection.channel()
        for name in names:
            await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest.fixture
def app() -> Iterator[Celeriac]:
    require_rabbitmq()
    queue = f"rpc-it-{uuid.uuid4().hex[:10]}"
    app = Celeriac("rpcit", broker=AMQP, backend="rpc://", task_default_queue=queue)

    @app.task(name="rpcit.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="rpcit.fail")
    def fail(kind: str) -> None:
        raise (ValueError if kind == "value" else Boom)(f"{kind} failed")

    @app.task(name="rpcit.flaky", bind=True, max_retries=3)
    def flaky(self: object, times: int) -> int:
        request = self.request  # type: ignore[attr-defined]
        if request.retries < times:
            raise self.retry(countdown=0.1)  # type: ignore[attr-defined]
        return int(request.retries)

    yield app
    app.close()
    asyncio.run(_delete_queues([queue]))


def test_get_returns_the_value_and_failures_keep_their_type(app: Celeriac) -> None:
    with start_worker(app):
        assert app.send_task("rpcit.add", (2, 3)).get(timeout=10) == 5
        with pytest.raises(ValueError, match="value failed"):
            app.send_task("rpcit.fail", ("value",)).get(timeout=10)
        failed = app.send_task("rpcit.fail", ("boom",))
        with pytest.raises(Exception, match="boom failed") as raised:
            failed.get(timeout=10)
        assert type(raised.value).__name__ == "Boom"
        assert failed.state == states.FAILURE


def test_a_result_sent_before_the_wait_is_kept(app: Celeriac) -> None:
    with start_worker(app):
        results = [app.send_task("rpcit.add", (i, i)) for i in range(20)]
        deadline = time.monotonic() + 10
        while not all(r.state == states.SUCCESS for r in results) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [r.get(timeout=5) for r in results] == [2 * i for i in range(20)]


def test_retries_end_with_the_result(app: Celeriac) -> None:
    with start_worker(app):
        assert app.send_task("rpcit.flaky", (2,)).get(timeout=10) == 2


def test_a_group_is_joined(app: Celeriac) -> None:
    add = app.tasks["rpcit.add"]
    with start_worker(app):
        result = group(add.s(i, 1) for i in range(10)).apply_async()
        assert result.get(timeout=10) == [i + 1 for i in range(10)]
        with pytest.raises(ConfigurationError, match=r"GroupResult\.save"):
            result.save()


def test_another_client_cannot_read_the_result(app: Celeriac) -> None:
    other = Celeriac("rpcit-other", broker=AMQP, backend="rpc://")
    try:
        with start_worker(app):
            result = app.send_task("rpcit.add", (1, 1))
            assert result.get(timeout=10) == 2
            assert other.AsyncResult(result.id).state == states.PENDING
            with pytest.raises(TimeoutError):
                other.AsyncResult(result.id).get(timeout=0.3)
    finally:
        other.close()


def test_revoke_says_it_needs_a_stored_backend(app: Celeriac) -> None:
    result = app.AsyncResult(str(uuid.uuid4()))
    with pytest.raises(ConfigurationError, match="revocations"):
        result.revoke()


def test_async_client_reads_its_results(app: Celeriac) -> None:
    async def main() -> list[int]:
        sent = [await app.send_task("rpcit.add", (i, 2)).aget(timeout=10) for i in range(3)]
        # Sent from this loop, waited for here, through the process's one reply consumer.
        result = await app.asend_task("rpcit.add", (5, 5))
        sent.append(await result.aget(timeout=10))
        await app.aclose()
        return sent

    with start_worker(app):
        assert asyncio.run(main()) == [2, 3, 4, 10]
