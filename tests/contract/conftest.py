"""Fixtures for the contract suites: every broker and every backend behind one small kit.

PostgreSQL and MySQL/MariaDB tests use the shared ``test`` database of the local servers; each test
works on queues and task ids of its own and removes what it left behind. Redis tests use database 15
with a key prefix of their own and delete its keys afterwards. When a server does not
answer, its tests are skipped, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import json
import socket
import subprocess
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa

from celeriac.amqp._codec import Properties
from celeriac.backends import Backend, create_backend
from celeriac.brokers import Broker, create_broker
from celeriac.memory import backend as memory_backend
from celeriac.memory import broker as memory_broker
from celeriac.sql.backend import chord_parts, chords, group_meta, task_meta
from celeriac.sql.broker import dead_letters, messages
from celeriac.sql.database import engine_url
from tests import redis_topologies
from tests.servers import service_missing

SERVERS = {
    "postgresql": ("127.0.0.1", 5432, "psycopg", "postgresql+psycopg://root@127.0.0.1:5432/test"),
    "mysql": ("127.0.0.1", 3306, "pymysql", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "redis": ("127.0.0.1", 6379, "redis", "redis://127.0.0.1:6379/15"),
    "rabbitmq": ("127.0.0.1", 5672, "aiormq", "amqp://guest:guest@127.0.0.1:5672//"),
    "rabbitmq-quorum": ("127.0.0.1", 5672, "aiormq", "amqp://guest:guest@127.0.0.1:5672//"),
}
KINDS = ["memory", "sqlite", "postgresql", "mysql"]
BROKER_KINDS = [*KINDS, "redis", "redis-cluster", "redis-sentinel", "rabbitmq", "rabbitmq-quorum"]
REDIS_KINDS = ("redis", "redis-cluster", "redis-sentinel")
AMQP_KINDS = ("rabbitmq", "rabbitmq-quorum")
#: Exchanges every RabbitMQ test shares; a test's own broadcast exchanges are deleted after it.
_SHARED_EXCHANGES = ("celery.pidbox", "reply.celery.pidbox", "celeryev")


@functools.cache
def _unavailable(kind: str) -> str | None:
    host, port, driver, _ = SERVERS[kind]
    if importlib.util.find_spec(driver) is None:
        return f"{kind} tests need the {driver} driver (uv sync --group dev)"
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        return f"{kind} is not answering on {host}:{port} ({exc})"
    return None


def _require(kind: str) -> None:
    reason = _unavailable(kind) if kind in SERVERS else None
    if reason is None:
        return
    service_missing(reason)


def run_in_thread(scenario: Callable[[], Awaitable[None]]) -> threading.Thread:
    """Run ``scenario`` on a fresh event loop in another thread (another client of the same store)."""
    thread = threading.Thread(target=lambda: asyncio.run(_as_coroutine(scenario)), daemon=True)
    thread.start()
    return thread


async def _as_coroutine(scenario: Callable[[], Awaitable[None]]) -> None:
    await scenario()


class _Kit:
    """What both kits share: the stores a scenario opened are closed when it ends, even on failure."""

    _open: list[Broker] | list[Backend]

    def run(self, scenario: Callable[[], Awaitable[None]]) -> None:
        async def main() -> None:
            try:
                await scenario()
            finally:
                while self._open:
                    await self._open.pop().close()

        asyncio.run(main())


class BrokerKit(_Kit):
    """One broker kind for one test: fresh queue names, brokers closed on the loop that made them."""

    def __init__(self, kind: str, url: str, **defaults: Any) -> None:
        self.kind = kind
        self.url = url
        self.defaults = defaults
        self.queues: list[str] = []
        self._open: list[Broker] = []
        self._made: list[Broker] = []

    def queue(self) -> str:
        name = f"contract-{uuid.uuid4().hex[:12]}"
        self.queues.append(name)
        return name

    def broker(self, **options: Any) -> Broker:
        broker = create_broker(self.url, {**self.defaults, **options})
        self._open.append(broker)
        self._made.append(broker)
        return broker

    @staticmethod
    def freeze(broker: Broker) -> None:
        """Stop a broker's lease heartbeat, as when its worker process is killed or hangs.

        On RabbitMQ the connection is the lease: its socket is dropped without a goodbye, as when the
        process dies, and RabbitMQ gives its deliveries back.
        """
        consuming = getattr(broker, "_consuming", None)
        if consuming is not None:  # RabbitMQ: the consuming and publishing links, the aiormq connection
            for link in (consuming.link, cast(Any, broker)._publisher):
                if link is not None and link._transport is not None:
                    link._transport.abort()
            connection = cast(Any, broker)._connection
            if connection is not None:
                abort_amqp(connection)
            return
        heartbeat = cast(Any, broker)._heartbeat
        if heartbeat is not None:
            heartbeat.cancel()

    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Store bytes as a message, bypassing the envelope (a corrupt or foreign message)."""
        if self.kind == "memory":
            store = cast(Any, broker)._store
            with store.lock:
                store.add(queue, payload, 0, None)
            return
        if self.kind in REDIS_KINDS:
            await broker.connect()
            await cast(Any, broker)._client.lpush(self.defaults["global_keyprefix"] + queue, payload)
            return
        if self.kind in AMQP_KINDS:
            # Bare bytes, no headers or properties: what a foreign producer may send.
            await broker.declare(queue)
            publisher = await cast(Any, broker)._publishing()
            await publisher.publish("", queue, payload, Properties(), mandatory=False)
            return
        await broker.connect()
        engine = sa.create_engine(engine_url(self.url))
        try:
            with engine.begin() as conn:
                row = {"queue": queue, "priority": 0, "not_before": 0.0, "payload": payload, "created": 0.0}
                conn.execute(messages.insert(), row)
        finally:
            engine.dispose()

    def clean(self) -> None:
        if self.kind == "memory":
            memory_broker.reset(self.url)
        elif self.kind in REDIS_KINDS:
            asyncio.run(_delete_redis_keys(self.url, self.defaults))
        elif self.kind in AMQP_KINDS:
            exchanges = {x for b in self._made for x in cast(Any, b).exchanges} - set(_SHARED_EXCHANGES)
            queues = [*self.queues, self.defaults["dead_letter_queue"]]
            asyncio.run(_delete_amqp(self.url, queues, exchanges))
        elif self.kind in SERVERS and self.queues:
            engine = sa.create_engine(engine_url(self.url))
            try:
                with engine.begin() as conn:
                    conn.execute(messages.delete().where(messages.c.queue.in_(self.queues)))
                    conn.execute(dead_letters.delete().where(dead_letters.c.queue.in_(self.queues)))
            finally:
                engine.dispose()


async def _delete_redis_keys(url: str, options: dict[str, Any]) -> None:
    from celeriac.redis.client import redis_client

    client = redis_client(url, options, what="the test")
    try:
        pattern = options["global_keyprefix"].replace("{", "\\{").replace("}", "\\}") + "*"
        keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


def close_amqp_connections(name: str) -> int:
    """Close, from the server side (``rabbitmqctl close_connection``), every connection named ``name``
    or ``name (...)`` (a broker's consuming link is ``name (consumer)``); return how many there were."""
    listing = subprocess.run(
        ["rabbitmqctl", "-q", "--no-table-headers", "list_connections", "pid", "client_properties"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    # The properties are printed as Erlang terms, names in double quotes.
    quoted, qualified = json.dumps(name), json.dumps(name + " (")[:-1]
    pids = [line.split("\t")[0] for line in listing.splitlines() if quoted in line or qualified in line]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "-q", "close_connection", pid, "closed by a test"], timeout=60, check=True
        )
    return len(pids)


def abort_amqp(connection: Any) -> None:
    """Drop an aiormq connection's socket at once (a reset, no AMQP goodbye), as a killed process does."""
    frame = connection._writer_task.get_coro().cr_frame
    frame.f_locals["writer"].transport.abort()


async def _delete_amqp(url: str, queues: list[str], exchanges: set[str]) -> None:
    """Delete a test's queues and exchanges (a missing one closes the channel: open a fresh one each)."""
    from celeriac.amqp.client import connect_plain

    connection = await connect_plain(url, {}, what="the test")
    try:
        for name, is_queue in [*((q, True) for q in queues), *((x, False) for x in sorted(exchanges))]:
            channel = await connection.channel()
            try:
                if is_queue:
                    await channel.queue_delete(name)
                else:
                    await channel.exchange_delete(name)
            except Exception:  # already gone
                continue
            await channel.close()
    finally:
        await connection.close()


class BackendKit(_Kit):
    """One backend kind for one test; backends are closed on the loop that made them."""

    def __init__(self, kind: str, url: str) -> None:
        self.kind = kind
        self.url = url
        self.task_ids: list[str] = []
        self.group_ids: list[str] = []
        self._open: list[Backend] = []

    def task_id(self) -> str:
        task_id = str(uuid.uuid4())
        self.task_ids.append(task_id)
        return task_id

    def group_id(self) -> str:
        """A fresh group (or chord) id, whose saved group and chord state are deleted after the test."""
        group_id = str(uuid.uuid4())
        self.group_ids.append(group_id)
        return group_id

    def backend(self, **options: Any) -> Backend:
        backend = create_backend(self.url, **options)
        self._open.append(backend)
        return backend

    def clean(self) -> None:
        if self.kind == "memory":
            memory_backend.reset(self.url)
        elif self.kind in SERVERS and (self.task_ids or self.group_ids):
            engine = sa.create_engine(engine_url(self.url))
            groups = self.group_ids
            try:
                with engine.begin() as conn:
                    conn.execute(task_meta.delete().where(task_meta.c.task_id.in_(self.task_ids)))
                    if groups and sa.inspect(conn).has_table(chords.name):
                        conn.execute(group_meta.delete().where(group_meta.c.taskset_id.in_(groups)))
                        conn.execute(chord_parts.delete().where(chord_parts.c.group_id.in_(groups)))
                        conn.execute(chords.delete().where(chords.c.group_id.in_(groups)))
            finally:
                engine.dispose()


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A private 3-node Redis Cluster for the session."""
    _require_redis_server()
    with redis_topologies.redis_cluster() as url:
        yield url


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[redis_topologies.Sentinel]:
    """A private master, replica and sentinel for the session."""
    _require_redis_server()
    with redis_topologies.redis_sentinel() as sentinel:
        yield sentinel


def _require_redis_server() -> None:
    reason = redis_topologies.missing_redis_server() or _unavailable("redis")
    if reason is not None:
        service_missing(reason)


def amqp_defaults(kind: str) -> dict[str, Any]:
    """Classic queues with priorities (Celery's task_queue_max_priority); quorum queues have none. A
    dead-letter queue per test; the delay scheme per queue type, under a prefix of the tests'."""
    queue_type = "quorum" if kind == "rabbitmq-quorum" else "classic"
    return {
        "queue_type": queue_type,
        "max_priority": None if queue_type == "quorum" else 10,
        "dead_letter_queue": f"contract-dead-{uuid.uuid4().hex[:12]}",
        "delayed_prefix": f"celeriac-contract-{queue_type}",
        "connection_name": f"contract-{uuid.uuid4().hex[:12]}",
    }


@pytest.fixture(params=AMQP_KINDS)
def amqp_brokers(request: pytest.FixtureRequest) -> Iterator[BrokerKit]:
    """The RabbitMQ kinds alone, for what is AMQP-specific."""
    _require(request.param)
    kit = BrokerKit(request.param, SERVERS[request.param][3], **amqp_defaults(request.param))
    yield kit
    kit.clean()


@pytest.fixture(params=BROKER_KINDS)
def brokers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerKit]:
    kind = request.param
    defaults: dict[str, Any] = {}
    if kind == "memory":
        url = f"memory://contract-{uuid.uuid4().hex[:12]}"
    elif kind == "sqlite":
        url = f"sqlite:///{tmp_path}/broker.sqlite3"
    elif kind == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
    elif kind == "redis-sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        url, defaults = sentinel.url, {"master_name": sentinel.master_name}
    else:
        _require(kind)
        url = SERVERS[kind][3]
    if kind in AMQP_KINDS:
        defaults.update(amqp_defaults(kind))
    if kind in REDIS_KINDS:
        # Celery's default priority buckets (0, 3, 6, 9) stay: the contract orders one priority per bucket.
        # On the cluster the prefix carries the hash tag that keeps every key in one slot.
        tag = "{test-%s}:" if kind == "redis-cluster" else "test-%s:"
        defaults["global_keyprefix"] = tag % uuid.uuid4().hex
    kit = BrokerKit(kind, url, **defaults)
    yield kit
    kit.clean()


REDIS_RESULTS = ("127.0.0.1", 6379, "redis", "redis://127.0.0.1:6379/14")


class RedisBackendKit(BackendKit):
    """Redis results for one test: keys and channels under a prefix of its own, deleted afterwards.

    The test's connections carry a client name of their own, so ``CLIENT LIST`` can count them.
    """

    def __init__(self) -> None:
        self.prefix = f"contract-{uuid.uuid4().hex[:12]}:"
        self.client_name = f"celeriac-{self.prefix[:-1]}"
        super().__init__("redis", f"{REDIS_RESULTS[3]}?client_name={self.client_name}")

    def backend(self, **options: Any) -> Backend:
        settings = {"global_keyprefix": self.prefix, **(options.pop("options", None) or {})}
        return super().backend(options=settings, **options)

    def clean(self) -> None:
        import redis

        client = redis.Redis.from_url(REDIS_RESULTS[3])
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


def _require_redis_results() -> None:
    host, port, driver, _ = REDIS_RESULTS
    reason = None
    if importlib.util.find_spec(driver) is None:
        reason = f"redis tests need the {driver} client (uv sync --group dev)"
    else:
        try:
            socket.create_connection((host, port), timeout=1).close()
        except OSError as exc:
            reason = f"redis is not answering on {host}:{port} ({exc})"
    if reason is not None:
        service_missing(reason)


@pytest.fixture(params=[*KINDS, "redis"])
def backends(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendKit]:
    kind = request.param
    if kind == "redis":
        _require_redis_results()
        redis_kit = RedisBackendKit()
        yield redis_kit
        redis_kit.clean()
        return
    _require(kind)
    if kind == "memory":
        url = f"memory://contract-{uuid.uuid4().hex[:12]}"
    elif kind == "sqlite":
        url = f"db+sqlite:///{tmp_path}/results.sqlite3"
    else:
        url = "db+" + SERVERS[kind][3]
    kit = BackendKit(kind, url)
    yield kit
    kit.clean()
