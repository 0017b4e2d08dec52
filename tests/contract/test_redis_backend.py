"""The Redis result backend beyond the contract suite: Celery's keys, expiry by Redis itself, and one
pub/sub connection shared by every wait."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from celeriac import states
from celeriac.backends import ResultMeta
from celeriac.redis.testkit import RedisBackendKit
from tests.contract.conftest import REDIS_RESULTS


def now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _admin() -> Any:
    import redis.asyncio

    return redis.asyncio.Redis.from_url(REDIS_RESULTS[3])


def test_redis_records_expire_on_their_own(redis_results: RedisBackendKit) -> None:
    async def scenario() -> None:
        admin = _admin()
        try:
            backend = redis_results.backend(expires=3600.0)
            kept = redis_results.backend(expires=None)
            done_id, kept_id = redis_results.task_id(), redis_results.task_id()
            await backend.store([ResultMeta(done_id, states.SUCCESS, result=1, date_done=now())])
            await kept.store([ResultMeta(kept_id, states.SUCCESS, result=2, date_done=now())])
            # Celery's key and JSON layout, under the configured global_keyprefix.
            key = f"{redis_results.prefix}celery-task-meta-{done_id}"
            assert json.loads(await admin.get(key))["status"] == states.SUCCESS
            assert 3590 < await admin.ttl(key) <= 3600
            assert await admin.ttl(f"{redis_results.prefix}celery-task-meta-{kept_id}") == -1
            assert await backend.cleanup() == 0  # type: ignore[attr-defined]
        finally:
            await admin.aclose()

    redis_results.run(scenario)


async def _clients(admin: Any, name: str) -> list[dict[str, Any]]:
    return [c for c in await admin.client_list() if c.get("name") == name]


def test_redis_concurrent_waits_share_one_subscription_and_leave_none(redis_results: RedisBackendKit) -> None:
    async def scenario() -> None:
        admin = _admin()
        try:
            backend = redis_results.backend(options={"pubsub_linger": 0.3})
            writer = redis_results.backend()
            ids = [redis_results.task_id() for _ in range(50)]
            lost = redis_results.task_id()  # a wait that times out
            channels = [f"{redis_results.prefix}celery-task-meta-{t}" for t in [*ids, lost]]
            waits = [asyncio.create_task(backend.wait(t, timeout=10.0)) for t in ids]
            timing_out = asyncio.create_task(backend.wait(lost, timeout=0.5))
            deadline = time.monotonic() + 5
            while [n for _, n in await admin.pubsub_numsub(*channels)] != [1] * len(channels):
                assert time.monotonic() < deadline, "the waits did not all subscribe"
                await asyncio.sleep(0.01)
            subscribers = [c for c in await _clients(admin, redis_results.client_name) if "P" in c["flags"]]
            assert len(subscribers) == 1  # one pub/sub connection for all the waits

            await writer.store(
                [ResultMeta(t, states.SUCCESS, result=n, date_done=now()) for n, t in enumerate(ids)]
            )
            metas = await asyncio.wait_for(asyncio.gather(*waits), timeout=5)
            assert [m.result for m in metas] == list(range(50))
            with pytest.raises(TimeoutError):
                await timing_out

            deadline = time.monotonic() + 2
            while [n for _, n in await admin.pubsub_numsub(*channels)] != [0] * len(channels):
                assert time.monotonic() < deadline, "channels were left subscribed"
                await asyncio.sleep(0.01)
            # The pub/sub connection stays open for the next wait a little (pubsub_linger), then closes;
            # closing the backends closes the rest.
            while any("P" in c["flags"] for c in await _clients(admin, redis_results.client_name)):
                assert time.monotonic() < deadline, "the pub/sub connection was left open"
                await asyncio.sleep(0.01)
            await backend.close()
            await writer.close()
            while await _clients(admin, redis_results.client_name):
                assert time.monotonic() < deadline, "connections were left open"
                await asyncio.sleep(0.01)
        finally:
            await admin.aclose()

    redis_results.run(scenario)


def test_redis_wait_polls_when_pubsub_is_refused(
    redis_results: RedisBackendKit, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.exceptions import NoPermissionError

    from celeriac.redis import backend as redis_backend

    async def refuse(*args: Any) -> asyncio.Event:
        raise NoPermissionError("this user has no permissions to run the 'subscribe' command")

    monkeypatch.setattr(redis_backend._Listener, "subscribe", refuse)

    async def scenario() -> None:
        backend = redis_results.backend()
        task_id = redis_results.task_id()

        async def finish_later() -> None:
            await asyncio.sleep(0.2)
            await backend.store([ResultMeta(task_id, states.SUCCESS, result="polled", date_done=now())])

        finishing = asyncio.create_task(finish_later())
        meta = await backend.wait(task_id, timeout=5.0, interval=0.05)
        assert meta.result == "polled"
        await finishing
        with pytest.raises(TimeoutError):
            await backend.wait(redis_results.task_id(), timeout=0.2, interval=0.05)

    redis_results.run(scenario)


def test_redis_wait_reads_a_ready_result_once_and_reuses_its_subscriber_connection(
    redis_results: RedisBackendKit,
) -> None:
    """A result already stored needs no subscription; one wait after another (within pubsub_linger)
    reuses one pub/sub connection, and the record comes from the published message."""

    async def scenario() -> None:
        admin = _admin()
        try:
            backend = redis_results.backend(options={"pubsub_linger": 5.0})
            writer = redis_results.backend()
            done = redis_results.task_id()
            await writer.store([ResultMeta(done, states.SUCCESS, result="early", date_done=now())])
            assert (await backend.wait(done, timeout=5.0)).result == "early"
            assert not [c for c in await _clients(admin, redis_results.client_name) if "P" in c["flags"]]

            seen: list[str] = []
            for n in range(3):
                task_id = redis_results.task_id()
                waiting = asyncio.create_task(backend.wait(task_id, timeout=5.0))
                channel = f"{redis_results.prefix}celery-task-meta-{task_id}"
                while (await admin.pubsub_numsub(channel))[0][1] != 1:
                    await asyncio.sleep(0.005)
                subscribers = [
                    c for c in await _clients(admin, redis_results.client_name) if "P" in c["flags"]
                ]
                seen += [c["id"] for c in subscribers]
                await writer.store([ResultMeta(task_id, states.SUCCESS, result=n, date_done=now())])
                assert (await asyncio.wait_for(waiting, 5)).result == n
            assert len(seen) == 3 and len(set(seen)) == 1, seen
        finally:
            await admin.aclose()

    redis_results.run(scenario)
