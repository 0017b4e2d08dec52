"""The Redis broker's and backend's kits for the contract suites (``celeriac.testing.contract``).

Each kit keeps a test's keys under a ``global_keyprefix`` of the test's own and deletes them in
``clean``; on a Redis Cluster the prefix must carry a hash tag (``{test-...}:``), so that every key of
the test hashes to one slot.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from celeriac.backends import Backend
from celeriac.brokers import Broker
from celeriac.redis.broker import RedisBroker
from celeriac.redis.client import redis_client
from celeriac.testing.contract.kit import BackendKit, BrokerKit

__all__ = ["RedisBackendKit", "RedisBrokerKit"]


class RedisBrokerKit(BrokerKit):
    """Redis brokers (single server, Sentinel or Cluster) whose keys start with the ``global_keyprefix``
    of ``defaults``; ``clean`` deletes them. A kit with an empty prefix deletes nothing."""

    broadcasts = True

    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Push ``payload`` on the queue's list, where a Celery client would push an envelope."""
        assert isinstance(broker, RedisBroker)
        client = await broker._connected()
        await client.lpush(broker._list(queue, 0), payload)

    def freeze(self, broker: Broker) -> None:
        """Cancel the broker's heartbeat: its consumer key expires, as a dead worker's does."""
        assert isinstance(broker, RedisBroker)
        if broker._heartbeat is not None:
            broker._heartbeat.cancel()

    def clean(self) -> None:
        """Delete every key under the kit's prefix."""
        if self.defaults.get("global_keyprefix"):
            asyncio.run(self._delete_keys())

    async def _delete_keys(self) -> None:
        client = redis_client(self.url, self.defaults, what="the test")
        try:
            pattern = self.defaults["global_keyprefix"].replace("{", "\\{").replace("}", "\\}") + "*"
            keys = [key async for key in client.scan_iter(match=pattern, count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


class RedisBackendKit(BackendKit):
    """Redis results for one test: keys and channels under a prefix of its own, deleted by ``clean``.

    The test's connections carry a client name of their own (``client_name``), so ``CLIENT LIST`` can
    count them.
    """

    def __init__(self, url: str) -> None:
        """A kit on the Redis server at ``url`` (with no query string)."""
        #: The ``global_keyprefix`` of every backend of the kit.
        self.prefix = f"contract-{uuid.uuid4().hex[:12]}:"
        #: The client name of every connection of the kit's backends.
        self.client_name = f"celeriac-{self.prefix[:-1]}"
        self.server_url = url
        super().__init__(f"{url}?client_name={self.client_name}")

    def make(self, **settings: Any) -> Backend:
        """A backend with the kit's prefix, and the transport ``options`` of ``settings`` over it."""
        options = {"global_keyprefix": self.prefix, **(settings.pop("options", None) or {})}
        return super().make(options=options, **settings)

    def clean(self) -> None:
        """Delete every key under the kit's prefix."""
        import redis

        client = redis.Redis.from_url(self.server_url)
        try:
            keys = list(client.scan_iter(match=f"{self.prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
