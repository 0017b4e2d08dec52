"""The Redis broker keeps kombu's layout, so Celery workers and producers share its queues."""

from __future__ import annotations

import asyncio
import uuid

from celeriac.brokers.redis import RedisBroker
from celeriac.protocol import Message
from tests.contract.conftest import SERVERS, _require


def test_priorities_land_in_celerys_default_buckets() -> None:
    _require("redis")
    prefix = f"test-{uuid.uuid4().hex}:"

    async def scenario() -> dict[str, int]:
        import redis.asyncio as aioredis

        broker = RedisBroker(SERVERS["redis"][3], options={"global_keyprefix": prefix})
        client = aioredis.Redis.from_url(SERVERS["redis"][3])
        try:
            for priority in (None, 0, 2, 5, 7, 200):
                await broker.publish(
                    "q",
                    Message(
                        body=b"[[], {}, {}]", headers={"id": str(priority)}, properties={"priority": priority}
                    ),
                )
            sizes = {
                name: await client.llen(f"{prefix}q{suffix}")
                for name, suffix in [("0", ""), ("3", "\x06\x163"), ("6", "\x06\x166"), ("9", "\x06\x169")]
            }
            await client.delete(*[key async for key in client.scan_iter(match=f"{prefix}*")])
            return sizes
        finally:
            await broker.close()
            await client.aclose()

    # kombu's rule: steps[bisect(steps, p) - 1] with steps [0, 3, 6, 9] (reference §2.4: 5 -> "\x06\x163")
    assert asyncio.run(scenario()) == {"0": 3, "3": 1, "6": 1, "9": 1}
