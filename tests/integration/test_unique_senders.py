"""Eight senders at once, each on its own event loop and connection, send one unique task with the
same arguments through every store this machine has (with a RabbitMQ broker, the Redis result
backend's): one message goes out, and all eight get its id."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from tests.contract.conftest import SERVERS, _require, forget_keys

# rabbitmq: the keys go to the Redis result backend
KINDS = ["memory", "sqlite", "postgresql", "mysql", "redis", "rabbitmq"]
SENDERS = 8


@pytest.fixture(params=KINDS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Celeriac]:
    kind = request.param
    name = f"uniq-{uuid.uuid4().hex[:10]}"  # the key store's scope: this test's own
    if kind == "memory":
        url = f"memory://{name}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/senders.sqlite3"
    else:
        _require(kind)
        url = SERVERS[kind][3]
    backend = url
    if kind == "rabbitmq":
        _require("redis")
        backend = SERVERS["redis"][3]
    options = {"global_keyprefix": f"{name}:"} if kind == "redis" else {}
    app = Celeriac(name, broker=url, backend=backend, broker_transport_options=options)
    yield app

    async def clean() -> None:
        if kind == "rabbitmq":
            from celeriac.amqp.testkit import delete_amqp

            await delete_amqp(url, [name], [])
            await forget_keys("redis", backend, name)
        else:
            await app.broker().purge(name)
            await forget_keys(kind, url, name, prefix=f"{name}:")
        await app.aclose()

    asyncio.run(clean())
    app.close()


def test_eight_concurrent_senders_publish_one_message_and_all_get_its_id(app: Celeriac) -> None:
    queue = app.main

    @app.task(name="uniq.rebuild", unique_for=60, queue=queue)
    def rebuild(index: str) -> None: ...

    gate = threading.Barrier(SENDERS)
    ids: list[str] = []

    def sender() -> None:
        async def send() -> str:
            try:
                await app.broker().declare(queue)
                gate.wait(10)
                return (await rebuild.adelay("products")).id
            finally:
                await app.aclose()

        ids.append(asyncio.run(send()))

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(ids) == SENDERS and len(set(ids)) == 1

    async def size() -> int:
        return await app.broker().size(queue)

    assert app.run(size()) == 1
