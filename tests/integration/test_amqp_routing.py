"""task_routes that name an exchange and routing key, on RabbitMQ: the message goes through that exchange.

What a user relies on: a route ``{"exchange": ..., "routing_key": ...}`` (no queue) reaches the queue
bound to that exchange with a matching pattern, whether ``task_queues`` declares the binding or someone
else did; a route's routing key goes through a topic queue's exchange (Celery's documented pattern); a
worker consuming that queue runs the task. The wire is read with a plain aiormq connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.amqp.client import connect_plain
from celeriac.exceptions import MessageUnroutable
from celeriac.testing import start_worker
from tests.contract.test_rpc_backend import AMQP, require_rabbitmq


class Topology:
    """Names unique to one test, and what the test declared itself; all deleted afterwards."""

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex[:10]
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    def queue(self, name: str) -> str:
        self.queues.append(f"route-{name}-{self.token}")
        return self.queues[-1]

    def exchange(self, name: str) -> str:
        self.exchanges.append(f"route-x-{name}-{self.token}")
        return self.exchanges[-1]

    async def bind(self, queue: str, exchange: str, pattern: str) -> None:
        """Declare a topic exchange and a queue bound to it, as another app (or an operator) would."""
        connection = await connect_plain(AMQP, {}, what="the routing test")
        try:
            channel = await connection.channel()
            await channel.exchange_declare(exchange, exchange_type="topic", durable=True)
            await channel.queue_declare(queue, durable=True)
            await channel.queue_bind(queue, exchange, routing_key=pattern)
        finally:
            await connection.close()

    async def take(self, queue: str) -> list[tuple[str, str, str]]:
        """Every message on ``queue``, taken: (task name, exchange, routing key) each."""
        connection = await connect_plain(AMQP, {}, what="the routing test")
        found = []
        try:
            channel = await connection.channel()
            while (got := await channel.basic_get(queue, no_ack=True)).delivery_tag is not None:
                name = (got.header.properties.headers or {}).get("task")
                found.append((str(name), got.exchange or "", got.routing_key or ""))
        finally:
            await connection.close()
        return found

    async def delete(self) -> None:
        connection = await connect_plain(AMQP, {}, what="the routing test")
        try:
            for name, is_queue in [*((q, True) for q in self.queues), *((x, False) for x in self.exchanges)]:
                channel = await connection.channel()  # a fresh one: a missing entity closes it
                with contextlib.suppress(Exception):  # never declared, or gone already
                    await (channel.queue_delete(name) if is_queue else channel.exchange_delete(name))
                    await channel.close()
        finally:
            await connection.close()


@pytest.fixture
def topology() -> Iterator[Topology]:
    require_rabbitmq()
    made = Topology()
    yield made
    asyncio.run(made.delete())


def celeriac_app(topology: Topology, **settings: Any) -> Celeriac:
    default = topology.queue("default")
    return Celeriac("routing", broker=AMQP, backend="disabled://", task_default_queue=default, **settings)


def test_a_route_naming_an_exchange_reaches_the_queue_task_queues_binds_to_it(topology: Topology) -> None:
    media, videos = topology.exchange("media"), topology.queue("videos")
    app = celeriac_app(
        topology,
        task_queues=[{"name": videos, "exchange": media, "exchange_type": "topic", "routing_key": "media.#"}],
        task_routes={"media.encode": {"exchange": media, "routing_key": "media.video.hd"}},
    )
    try:
        app.send_task("media.encode", (1,))  # the client declares the queue and its binding first
    finally:
        app.close()
    assert asyncio.run(topology.take(videos)) == [("media.encode", media, "media.video.hd")]


def test_a_route_reaches_a_queue_bound_by_someone_else(topology: Topology) -> None:
    """No task_queues: the message goes through the exchange and RabbitMQ's bindings decide."""
    media, audio = topology.exchange("media"), topology.queue("audio")
    asyncio.run(topology.bind(audio, media, "media.*"))
    app = celeriac_app(
        topology,
        task_routes={"media.*": {"exchange": media, "exchange_type": "topic", "routing_key": "media.audio"}},
    )
    try:
        app.send_task("media.mix")
        with pytest.raises(MessageUnroutable):  # "media.*" does not take it: refused, not dropped
            app.send_task("media.mix", routing_key="media.audio.hd")
    finally:
        app.close()
    assert asyncio.run(topology.take(audio)) == [("media.mix", media, "media.audio")]


def test_a_routes_routing_key_goes_through_its_topic_queues_exchange(topology: Topology) -> None:
    """Celery's documented pattern: ``{"queue": "feed_tasks", "routing_key": "feed.import"}``."""
    tasks, feeds = topology.exchange("tasks"), topology.queue("feeds")
    app = celeriac_app(
        topology,
        task_queues=[{"name": feeds, "exchange": tasks, "exchange_type": "topic", "routing_key": "feed.#"}],
        task_routes={"feed.import": {"queue": feeds, "routing_key": "feed.import"}},
    )
    try:
        app.send_task("feed.import")
    finally:
        app.close()
    assert asyncio.run(topology.take(feeds)) == [("feed.import", tasks, "feed.import")]


def test_a_worker_on_the_bound_queue_runs_the_routed_task(topology: Topology) -> None:
    media, videos = topology.exchange("media"), topology.queue("videos")
    app = Celeriac(
        "routing",
        broker=AMQP,
        backend="rpc://",
        task_default_queue=videos,
        task_queues=[{"name": videos, "exchange": media, "exchange_type": "topic", "routing_key": "media.#"}],
        task_routes={"media.double": {"exchange": media, "routing_key": "media.video"}},
    )

    @app.task(name="media.double")
    def double(x: int) -> int:
        return 2 * x

    try:
        with start_worker(app, queues=[videos]):
            assert double.delay(21).get(timeout=10) == 42
    finally:
        app.close()
