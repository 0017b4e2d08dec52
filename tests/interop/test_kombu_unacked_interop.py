"""Messages a crashed Celery worker held are given back by celeriac, as a live Celery worker would.

A real kombu consumer (Celery's transport) takes a message with its ack emulation, which parks the
message in kombu's ``unacked`` hash, and then its process dies without acking. Once kombu's
``visibility_timeout`` has passed, a celeriac consumer's sweep puts it back on its queue, marked
redelivered, and fetches it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import sys
import time
import uuid

from celeriac.redis.broker import RedisBroker
from tests.interop.conftest import require_redis

REDIS = "redis://127.0.0.1:6379/13"

CRASHING_CONSUMER = """
import os, sys
from kombu import Connection
url, prefix, queue = sys.argv[1:4]
with Connection(url, transport_options={"global_keyprefix": prefix}) as conn:
    simple = conn.SimpleQueue(queue)
    simple.put({"hello": "celery"}, priority=0)
    message = simple.get(timeout=5)
    assert message.payload == {"hello": "celery"}
    sys.stdout.write("taken\\n")
    sys.stdout.flush()
    os._exit(1)  # a crash: no ack, no restore at shutdown
"""


def test_celerys_unacked_message_is_given_back_after_the_visibility_timeout() -> None:
    require_redis()
    prefix, queue = f"test-{uuid.uuid4().hex}:", f"kombu-{uuid.uuid4().hex[:8]}"
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_CONSUMER, REDIS, prefix, queue],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert crashed.returncode == 1 and crashed.stdout == "taken\n", crashed.stderr

    async def scenario() -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(REDIS)
        broker = RedisBroker(REDIS, options={"global_keyprefix": prefix, "visibility_timeout": 1.0})
        try:
            assert await client.hlen(f"{prefix}unacked") == 1
            assert await broker.fetch([queue], 5, 0.2) == []  # not stale yet: a Celery worker may live
            await asyncio.sleep(1.2)
            broker._next_recovery = broker._next_kombu_sweep = 0.0  # the next poll sweeps at once
            got = await broker.fetch([queue], 5, 2.0)
            assert len(got) == 1
            envelope = json.loads(got[0].raw)
            assert envelope["headers"]["redelivered"] is True
            assert envelope["properties"]["delivery_info"]["redelivered"] is True
            assert json.loads(base64.b64decode(envelope["body"])) == {"hello": "celery"}
            assert await client.hlen(f"{prefix}unacked") == 0
            assert await client.zcard(f"{prefix}unacked_index") == 0
            await broker.ack(got)
        finally:
            await broker.close()
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started < 10
