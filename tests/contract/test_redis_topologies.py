"""The Redis broker on a Cluster and behind Sentinel, beyond the contract suite that runs on both.

A Sentinel failover (the master's process killed) leaves a broker that keeps publishing and fetching
from the promoted replica; on a Cluster every key a script touches shares one hash tag, so nothing is
cross-slot, and a broker without a tagged prefix gets one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from celeriac.brokers import create_broker
from celeriac.exceptions import ConfigurationError
from celeriac.protocol.message import Message
from celeriac.redis.testkit import RedisBrokerKit
from celeriac.testing.contract.broker import ids, message
from tests import redis_topologies

pytestmark = pytest.mark.usefixtures("_redis_server_required")


@pytest.fixture
def _redis_server_required() -> None:
    from tests.contract.conftest import _require_redis_server

    _require_redis_server()


def _message(n: int) -> Message:
    return message(f"id-{n}")


def test_broker_follows_a_sentinel_failover() -> None:
    with redis_topologies.redis_sentinel() as sentinel:
        old_master = sentinel.master.port
        assert sentinel.current_master() == old_master

        async def scenario() -> None:
            broker = create_broker(sentinel.url, {"master_name": sentinel.master_name, "lease_seconds": 5})
            try:
                for n in range(5):
                    await broker.publish("q", _message(n))
                got = await broker.fetch(["q"], 10, 1.0)
                assert sorted(map(str, ids(got))) == [f"id-{n}" for n in range(5)]
                await broker.ack(got)
                # Let the replica catch up before its master dies: replication is asynchronous.
                await asyncio.sleep(0.5)
                sentinel.kill_master()
                deadline = time.monotonic() + 30
                while sentinel.current_master() == old_master:
                    assert time.monotonic() < deadline, "the sentinel did not promote the replica"
                    await asyncio.sleep(0.2)
                published = 0
                while published < 5:
                    assert time.monotonic() < deadline, "publishing never succeeded after the failover"
                    try:
                        await broker.publish("q", _message(100 + published))
                        published += 1
                    except Exception:  # the old master is gone until the client asks the sentinel again
                        await asyncio.sleep(0.2)
                got = await broker.fetch(["q"], 10, 2.0)
                assert sorted(map(str, ids(got))) == [f"id-{100 + n}" for n in range(5)]
                await broker.ack(got)
            finally:
                await broker.close()

        asyncio.run(scenario())
        assert sentinel.current_master() == sentinel.replica.port


def test_cluster_broker_keys_share_one_slot(redis_cluster_url: str) -> None:
    """Without a tagged prefix the broker adds ``{celeriac}``; every key it wrote hashes to one slot."""
    from redis.asyncio.cluster import RedisCluster

    kit = RedisBrokerKit(redis_cluster_url, global_keyprefix="")

    async def scenario() -> None:
        broker = kit.broker(lease_seconds=5)
        assert broker.prefix == "{celeriac}"  # type: ignore[attr-defined]
        queue = kit.queue()
        await broker.publish(queue, _message(1))
        await broker.publish(queue, _message(2), not_before=time.time() + 3600)
        held = await broker.fetch([queue], 1, 1.0)
        await broker.reject(held[0], requeue=False, reason="kept for the test")
        client = RedisCluster.from_url(redis_cluster_url.replace("redis+cluster", "redis"))
        try:
            keys = [key async for key in client.scan_iter(match="\\{celeriac\\}*")]
            assert {b"{celeriac}celeriac.delayed", b"{celeriac}celeriac.dead_letters"} <= set(keys)
            assert len({client.keyslot(key) for key in keys}) == 1
            await client.delete(*keys)
        finally:
            await client.aclose()

    kit.run(scenario)


def test_broker_over_tls() -> None:
    """rediss:// with the CA to trust works end to end; without trusting it, the error says TLS."""
    with redis_topologies.redis_tls() as (url, cert):

        async def scenario() -> None:
            trusted = create_broker(url, {"ssl": {"ssl_ca_certs": str(cert), "ssl_cert_reqs": "required"}})
            try:
                await trusted.publish("q", _message(1))
                got = await trusted.fetch(["q"], 5, 1.0)
                assert ids(got) == ["id-1"]
                await trusted.ack(got)
            finally:
                await trusted.close()
            untrusted = create_broker(url, {"ssl": {"ssl_cert_reqs": "required"}})
            try:
                with pytest.raises(Exception, match=r"(?i)certificate|ssl"):
                    await untrusted.publish("q", _message(2))
            finally:
                await untrusted.close()
            with pytest.raises(ConfigurationError, match=r"unknown TLS option.*ssl_ca_cert"):
                await create_broker(url, {"ssl": {"ssl_ca_cert": str(cert)}}).connect()

        asyncio.run(scenario())


def test_result_backend_behind_sentinel_and_not_on_a_cluster(redis_sentinel: Any) -> None:
    """Results work through Sentinel (store, wait by pub/sub); a cluster URL is refused, saying why."""
    from celeriac import states
    from celeriac.backends import create_backend
    from celeriac.backends.base import ResultMeta

    async def scenario() -> None:
        options = {"master_name": redis_sentinel.master_name, "global_keyprefix": f"t-{uuid.uuid4().hex}:"}
        backend = create_backend(redis_sentinel.url, options=options)
        writer = create_backend(redis_sentinel.url, options=options)
        try:
            waiting = asyncio.create_task(backend.wait("sentinel-task", timeout=5.0))
            await asyncio.sleep(0.2)
            await writer.store([ResultMeta("sentinel-task", states.SUCCESS, result=42)])
            assert (await waiting).result == 42
            await backend.forget("sentinel-task")
        finally:
            await backend.close()
            await writer.close()
        with pytest.raises(ConfigurationError, match="cannot use a Redis Cluster"):
            await create_backend("redis+cluster://127.0.0.1:7000").get("x")

    asyncio.run(scenario())


def test_broker_over_a_unix_socket() -> None:
    """``redis+socket:///path?virtual_host=<db>``, kombu's URL for a Unix socket."""
    import shutil
    import tempfile
    from pathlib import Path

    from tests.servers import RedisServer

    folder = Path(tempfile.mkdtemp(prefix="cr-"))  # short: a socket path must fit in 107 bytes
    socket_path = folder / "redis.sock"
    try:
        with RedisServer(
            folder / "server", {"unixsocket": str(socket_path), "unixsocketperm": "700"}
        ).start():

            async def scenario() -> None:
                broker = create_broker(f"redis+socket://{socket_path}?virtual_host=3")
                try:
                    await broker.publish("q", _message(7))
                    got = await broker.fetch(["q"], 5, 1.0)
                    assert ids(got) == ["id-7"]
                    await broker.ack(got)
                finally:
                    await broker.close()

            asyncio.run(scenario())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
