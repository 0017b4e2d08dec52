"""This machine's stores for the contract suites: which servers, at which URLs, and the kits on them.

The suites themselves are ``celeriac.testing.contract``; each technology's kit lives in its package
(``celeriac.<technology>.testkit``). Here: the local servers' URLs, whether they answer (when one does
not, its tests are skipped, except under ``CI=true``, where they fail), the private Redis Cluster and
Sentinel, and the parametrised ``broker_kit`` and ``backend_kit`` fixtures.

PostgreSQL and MySQL/MariaDB tests use the shared ``test`` database of the local servers; each test
works on queues and task ids of its own and removes what it left behind. Redis tests use database 15
(results: 14) with a key prefix of their own and delete its keys afterwards.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac.amqp.testkit import AMQPBrokerKit
from celeriac.memory.testkit import MemoryBackendKit, MemoryBrokerKit
from celeriac.redis.testkit import RedisBackendKit, RedisBrokerKit
from celeriac.sql.testkit import SQLBackendKit, SQLBrokerKit
from celeriac.sqs.testkit import SQSBrokerKit
from celeriac.testing.contract import BackendKit, BrokerKit
from tests import redis_topologies
from tests.servers import service_missing

SERVERS = {
    "postgresql": ("127.0.0.1", 5432, "psycopg", "postgresql+psycopg://root@127.0.0.1:5432/test"),
    "mysql": ("127.0.0.1", 3306, "pymysql", "mysql+pymysql://root@127.0.0.1:3306/test"),
    "redis": ("127.0.0.1", 6379, "redis", "redis://127.0.0.1:6379/15"),
    "rabbitmq": ("127.0.0.1", 5672, "aiormq", "amqp://guest:guest@127.0.0.1:5672//"),
    "rabbitmq-quorum": ("127.0.0.1", 5672, "aiormq", "amqp://guest:guest@127.0.0.1:5672//"),
}
REDIS_RESULTS = ("127.0.0.1", 6379, "redis", "redis://127.0.0.1:6379/14")
BROKERS = [
    "memory",
    "sqlite",
    "postgresql",
    "mysql",
    "redis",
    "redis-cluster",
    "redis-sentinel",
    "rabbitmq",
    "rabbitmq-quorum",
    "sqs",
]
BACKENDS = ["memory", "sqlite", "postgresql", "mysql", "redis"]
#: The backends with a ``cleanup()`` sweep (Redis expires records by itself).
SWEEPING_BACKENDS = ["memory", "sqlite", "postgresql", "mysql"]
AMQP_BROKERS = ["rabbitmq", "rabbitmq-quorum"]


@functools.cache
def _unavailable(server: str) -> str | None:
    host, port, driver, _ = SERVERS[server]
    if importlib.util.find_spec(driver) is None:
        return f"{server} tests need the {driver} driver (uv sync --group dev)"
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError as exc:
        return f"{server} is not answering on {host}:{port} ({exc})"
    return None


def _require(server: str) -> None:
    """Skip (under ``CI=true``: fail) when ``server``, one of ``SERVERS``, does not answer."""
    reason = _unavailable(server) if server in SERVERS else None
    if reason is None:
        return
    service_missing(reason)


#: The places a shared store (the beat's schedule, unique tasks' keys) is tested on.
STORE_KINDS = ["memory", "sqlite", "postgresql", "mysql", "redis", "redis-cluster"]


def store_url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a shared store of ``kind`` for one test (a new memory place, a new SQLite file)."""
    if kind == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/stores.sqlite3"
    if kind == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    _require(kind)
    return SERVERS[kind][3]


async def forget_keys(kind: str, url: str, scope: str, prefix: str = "") -> None:
    """Delete the unique tasks' keys a test kept at ``url`` under ``scope`` (Redis: after ``prefix``)."""
    if kind in ("postgresql", "mysql", "sqlite"):
        import sqlalchemy as sa

        from celeriac.sql.unique_store import SQLKeyStore, key_table

        store = SQLKeyStore(url, scope=scope)
        db = store._db
        await db.open()
        await db.call(
            db.write, lambda conn: conn.execute(sa.delete(key_table).where(key_table.c.scope == scope))
        )
        await store.close()
    elif kind.startswith("redis"):
        from celeriac.redis.client import redis_client

        client = redis_client(url, {}, what="the test")
        async for key in client.scan_iter(match=f"{prefix}celeriac.unique.{scope}.*"):
            await client.delete(key)
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


def sqs_kit(endpoint: str, **defaults: Any) -> SQSBrokerKit:
    """A kit on moto's SQS at ``endpoint``, with short leases' worth of visibility by default."""
    return SQSBrokerKit("sqs://test:test@", endpoint_url=endpoint, region="us-east-1", **defaults)


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


def amqp_defaults(server: str) -> dict[str, Any]:
    """Classic queues with priorities (Celery's task_queue_max_priority); quorum queues have none. A
    dead-letter queue per test; the delay scheme per queue type, under a prefix of the tests'."""
    queue_type = "quorum" if server == "rabbitmq-quorum" else "classic"
    return {
        "queue_type": queue_type,
        "max_priority": None if queue_type == "quorum" else 10,
        "dead_letter_queue": f"contract-dead-{uuid.uuid4().hex[:12]}",
        "delayed_prefix": f"celeriac-contract-{queue_type}",
        "connection_name": f"contract-{uuid.uuid4().hex[:12]}",
    }


def _redis_prefix(tagged: bool) -> str:
    # Celery's default priority buckets (0, 3, 6, 9) stay: the contract orders one priority per bucket.
    # On the cluster the prefix carries the hash tag that keeps every key in one slot.
    return ("{test-%s}:" if tagged else "test-%s:") % uuid.uuid4().hex


def _broker_kit(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> BrokerKit:
    """The kit for one of ``BROKERS`` on this machine."""
    if store == "memory":
        return MemoryBrokerKit()
    if store == "sqlite":
        return SQLBrokerKit(f"sqlite:///{tmp_path}/broker.sqlite3")
    if store in ("postgresql", "mysql"):
        _require(store)
        return SQLBrokerKit(SERVERS[store][3])
    if store == "redis":
        _require(store)
        return RedisBrokerKit(SERVERS[store][3], global_keyprefix=_redis_prefix(tagged=False))
    if store == "redis-cluster":
        url = request.getfixturevalue("redis_cluster_url")
        return RedisBrokerKit(url, global_keyprefix=_redis_prefix(tagged=True))
    if store == "redis-sentinel":
        sentinel = request.getfixturevalue("redis_sentinel")
        prefix = _redis_prefix(tagged=False)
        return RedisBrokerKit(sentinel.url, master_name=sentinel.master_name, global_keyprefix=prefix)
    if store == "sqs":
        return sqs_kit(request.getfixturevalue("sqs_endpoint"))
    _require(store)
    return AMQPBrokerKit(SERVERS[store][3], **amqp_defaults(store))


@pytest.fixture(params=BROKERS)
def broker_kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BrokerKit]:
    """Every broker of this machine in turn, cleaned after the test."""
    kit = _broker_kit(request.param, request, tmp_path)
    yield kit
    kit.clean()


@pytest.fixture(params=AMQP_BROKERS)
def amqp_brokers(request: pytest.FixtureRequest) -> Iterator[AMQPBrokerKit]:
    """The RabbitMQ kinds of queue alone, for what is AMQP-specific."""
    _require(request.param)
    kit = AMQPBrokerKit(SERVERS[request.param][3], **amqp_defaults(request.param))
    yield kit
    kit.clean()


def _backend_kit(store: str, tmp_path: Path) -> BackendKit:
    """The kit for one of ``BACKENDS`` on this machine."""
    if store == "memory":
        return MemoryBackendKit()
    if store == "sqlite":
        return SQLBackendKit(f"db+sqlite:///{tmp_path}/results.sqlite3")
    if store == "redis":
        _require_redis_results()
        return RedisBackendKit(REDIS_RESULTS[3])
    _require(store)
    return SQLBackendKit("db+" + SERVERS[store][3])


@pytest.fixture(params=BACKENDS)
def backend_kit(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BackendKit]:
    """Every result backend of this machine in turn, cleaned after the test."""
    kit = _backend_kit(request.param, tmp_path)
    yield kit
    kit.clean()


@pytest.fixture
def redis_results() -> Iterator[RedisBackendKit]:
    """Redis results alone, for what is Redis-specific."""
    _require_redis_results()
    kit = RedisBackendKit(REDIS_RESULTS[3])
    yield kit
    kit.clean()


_PG, _MYSQL, _REDIS, _AMQP = (SERVERS[s][3] for s in ("postgresql", "mysql", "redis", "rabbitmq"))
#: The canvas suite's broker/backend pairs, named after the servers they need: the broker's kit, its
#: URL and the backend's URL. Where one technology serves both, both use the same store.
CANVAS_PAIRS: dict[str, tuple[Callable[..., BrokerKit], str, str]] = {
    "memory": (MemoryBrokerKit, "memory://canvas-{id}", "memory://canvas-{id}"),
    "sqlite": (SQLBrokerKit, "sqlite:///{tmp}/canvas.db", "sqlite:///{tmp}/canvas.db"),
    "postgresql": (SQLBrokerKit, _PG, _PG),
    "mysql": (SQLBrokerKit, _MYSQL, _MYSQL),
    "redis": (RedisBrokerKit, _REDIS, _REDIS),
    "redis+postgresql": (RedisBrokerKit, _REDIS, _PG),
    "rabbitmq+redis": (AMQPBrokerKit, _AMQP, _REDIS),
    "sqs+redis": (SQSBrokerKit, "sqs://test:test@", _REDIS),
}


#: Pairs whose canvas run is long (moto answers slowly): run with ``./dev chaos``; the SQS worker
#: tests (tests/integration/test_worker_sqs.py) keep a canvas smoke test in the default run.
_LONG_CANVAS_PAIRS = {"sqs+redis"}


@pytest.fixture(
    params=[pytest.param(p, marks=pytest.mark.chaos) if p in _LONG_CANVAS_PAIRS else p for p in CANVAS_PAIRS]
)
def canvas_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[BrokerKit, str]]:
    """Each canvas pair in turn: the broker's kit (its ``defaults`` are the app's transport options)
    and the backend's URL; the kit is cleaned after the test."""
    for server in request.param.split("+"):
        _require(server)
    make_kit, broker, backend = CANVAS_PAIRS[request.param]
    tag = uuid.uuid4().hex[:10]
    if make_kit is SQSBrokerKit:
        kit: BrokerKit = sqs_kit(request.getfixturevalue("sqs_endpoint"))
    else:
        kit = make_kit(broker.format(id=tag, tmp=tmp_path), global_keyprefix=f"canvas-{tag}:")
    yield kit, backend.format(id=tag, tmp=tmp_path)
    kit.clean()
