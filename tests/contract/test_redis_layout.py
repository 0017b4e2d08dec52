"""The Redis broker keeps kombu's layout, so Celery workers and producers share its queues."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid

import pytest

from celeriac.protocol import Message
from celeriac.redis.broker import RedisBroker
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


def test_broadcasts_use_kombus_channels_skip_garbage_and_leave_no_subscription(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Channels are kombu's ``<prefix>/<db>.<exchange>[/<routing key>]`` with its envelope; an unreadable
    broadcast is logged and skipped; leaving the subscription removes its patterns from Redis."""
    _require("redis")
    prefix = f"test-{uuid.uuid4().hex}:"
    url = SERVERS["redis"][3]  # database 15

    async def scenario() -> None:
        import redis.asyncio as aioredis

        broker = RedisBroker(url, options={"global_keyprefix": prefix})
        client = aioredis.Redis.from_url(url)
        raw = client.pubsub()
        try:
            await raw.psubscribe(f"{prefix}/15.celery*")
            await raw.get_message(timeout=1)
            patterns_before = await client.pubsub_numpat()
            async with broker.subscribe("celery.pidbox") as messages:
                assert await client.pubsub_numpat() == patterns_before + 2
                await client.publish(f"{prefix}/15.celery.pidbox", b"not an envelope")
                await broker.broadcast("celery.pidbox", Message(body=b"{}", headers={"id": "ping-1"}))
                got = await asyncio.wait_for(anext(messages), 5)
                assert got.headers["id"] == "ping-1"
            assert await client.pubsub_numpat() == patterns_before
            seen: list[tuple[bytes, bytes]] = []
            while len(seen) < 2:
                reply = await raw.get_message(timeout=1)
                assert reply is not None
                if reply["type"] == "pmessage":
                    seen.append((reply["channel"], reply["data"]))
            channel, data = seen[1]
            assert channel == f"{prefix}/15.celery.pidbox".encode()
            envelope = json.loads(data)
            assert envelope["properties"]["delivery_info"] == {"exchange": "celery.pidbox", "routing_key": ""}
            assert envelope["headers"]["id"] == "ping-1"
        finally:
            await raw.aclose()  # type: ignore[no-untyped-call]
            await broker.close()
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="celeriac.brokers"):
        asyncio.run(scenario())
    assert "skipped an unreadable broadcast on 'celery.pidbox'" in caplog.text


def test_a_fetch_whose_reply_was_lost_hands_out_what_it_took_on_the_next_fetch() -> None:
    """The fetch script ran but its reply never came (the connection dropped): the next fetch gets those
    same messages, not new ones, so nothing stays held, unseen, by a live consumer."""
    _require("redis")
    import redis.exceptions

    prefix = f"test-{uuid.uuid4().hex}:"

    async def scenario() -> None:
        import redis.asyncio as aioredis

        broker = RedisBroker(SERVERS["redis"][3], options={"global_keyprefix": prefix})
        client = aioredis.Redis.from_url(SERVERS["redis"][3])
        try:
            for n in range(5):
                await broker.publish("q", Message(body=b"[[], {}, {}]", headers={"id": f"m-{n}"}))
            await broker.connect()
            real, calls = broker._scripts["fetch"], 0

            async def reply_lost_once(**kwargs: object) -> object:
                nonlocal calls
                calls += 1
                result = await real(**kwargs)  # type: ignore[arg-type]
                if calls == 1:
                    raise redis.exceptions.ConnectionError("Connection closed by server.")
                return result

            broker._scripts["fetch"] = reply_lost_once  # type: ignore[assignment]
            with pytest.raises(redis.exceptions.ConnectionError):
                await broker.fetch(["q"], 3, 0.5)
            again = await broker.fetch(["q"], 3, 0.5)
            assert [d.message.headers["id"] for d in again if d.message] == ["m-0", "m-1", "m-2"]
            assert [d.deliveries for d in again] == [1, 1, 1]
            assert await client.hlen(f"{prefix}celeriac.processing.{broker.consumer_id}") == 3
            rest = await broker.fetch(["q"], 5, 0.5)
            assert [d.message.headers["id"] for d in rest if d.message] == ["m-3", "m-4"]
            await broker.ack([*again, *rest])
        finally:
            await broker.close()
            keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
            if keys:
                await client.delete(*keys)
            await client.aclose()

    asyncio.run(scenario())
