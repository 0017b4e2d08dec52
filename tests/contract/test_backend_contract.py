"""The Backend contract, run against every result backend: what results and the worker rely on."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import states
from celeriac.backends import ResultMeta
from tests.contract.conftest import (
    REDIS_RESULTS,
    BackendKit,
    RedisBackendKit,
    _require_redis_results,
    run_in_thread,
)


def now() -> datetime:
    # Whole seconds: a table that Celery created on MySQL keeps no fractions of a second.
    return datetime.now(UTC).replace(microsecond=0)


def test_store_and_get_round_trip(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        ok_id, failed_id, child_id = backends.task_id(), backends.task_id(), backends.task_id()
        ok = ResultMeta(
            ok_id,
            states.SUCCESS,
            result={"total": 5, "parts": [2, 3], "note": "ünïcode"},
            date_done=now(),
            children=[[[child_id, None], None]],
            extended={
                "name": "proj.add",
                "args": [2, 3],
                "kwargs": {"x": 1},
                "worker": "w1@host",
                "retries": 1,
                "queue": "celery",
            },
        )
        failed = ResultMeta(
            failed_id,
            states.FAILURE,
            result={"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"},
            traceback='Traceback (most recent call last):\n  File "x.py"\nValueError: boom\n',
            date_done=now(),
        )
        await backend.store([ok, failed])
        assert await backend.get(ok_id) == ok
        assert await backend.get(failed_id) == failed
        # Another client of the same store reads the same records.
        assert await backends.backend().get_many([ok_id, failed_id]) == {ok_id: ok, failed_id: failed}

    backends.run(scenario)


def test_unknown_task_is_pending(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        unknown = backends.task_id()
        meta = await backend.get(unknown)
        assert (meta.task_id, meta.status, meta.result, meta.ready) == (unknown, states.PENDING, None, False)
        assert await backend.get_many([unknown]) == {}

    backends.run(scenario)


def test_store_many_at_once(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        metas = [ResultMeta(backends.task_id(), states.SUCCESS, result=n, date_done=now()) for n in range(50)]
        await backend.store(metas)
        found = await backend.get_many([m.task_id for m in metas] + [backends.task_id()])
        assert found == {m.task_id: m for m in metas}

    backends.run(scenario)


def test_store_replaces_the_previous_record(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        task_id = backends.task_id()
        await backend.store([ResultMeta(task_id, states.STARTED, result={"pid": 1, "hostname": "w1"})])
        assert (await backend.get(task_id)).status == states.STARTED
        done = ResultMeta(task_id, states.SUCCESS, result=[1, 2], date_done=now())
        await backend.store([done])
        assert await backend.get(task_id) == done
        # Two records of one task in one call: the last one wins.
        first, last = (
            ResultMeta(task_id, states.RETRY),
            ResultMeta(task_id, states.SUCCESS, 7, date_done=now()),
        )
        await backend.store([first, last])
        assert await backend.get(task_id) == last

    backends.run(scenario)


def test_forget_deletes_the_record(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        task_id = backends.task_id()
        await backend.store([ResultMeta(task_id, states.SUCCESS, result=1, date_done=now())])
        await backend.forget(task_id)
        assert (await backend.get(task_id)).status == states.PENDING
        await backend.forget(task_id)  # forgetting twice is fine

    backends.run(scenario)


def test_wait_returns_when_another_task_stores_the_result(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        task_id = backends.task_id()

        async def finish_later() -> None:
            await asyncio.sleep(0.2)
            await backend.store([ResultMeta(task_id, states.STARTED)])
            await asyncio.sleep(0.1)
            await backend.store([ResultMeta(task_id, states.SUCCESS, result="done", date_done=now())])

        finishing = asyncio.create_task(finish_later())
        started = time.monotonic()
        meta = await backend.wait(task_id, timeout=5.0)
        assert (meta.status, meta.result) == (states.SUCCESS, "done")
        assert 0.25 <= time.monotonic() - started < 1.5
        await finishing

    backends.run(scenario)


def test_wait_returns_when_another_thread_stores_the_result(backends: BackendKit) -> None:
    task_id = backends.task_id()

    async def finish_later() -> None:
        await asyncio.sleep(0.3)
        other = backends.backend()  # its own instance, on its own loop and thread
        await other.store(
            [
                ResultMeta(
                    task_id,
                    states.FAILURE,
                    result={"exc_type": "KeyError", "exc_message": ["k"], "exc_module": "builtins"},
                )
            ]
        )
        await other.close()

    async def scenario() -> None:
        backend = backends.backend()
        await backend.get(task_id)
        thread = run_in_thread(finish_later)
        started = time.monotonic()
        meta = await backend.wait(task_id, timeout=5.0)
        waited = time.monotonic() - started
        thread.join(5)
        assert meta.status == states.FAILURE and meta.result["exc_type"] == "KeyError"
        assert 0.25 <= waited < 1.5

    backends.run(scenario)


def test_wait_times_out(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        task_id = backends.task_id()
        await backend.store([ResultMeta(task_id, states.STARTED)])
        started = time.monotonic()
        with pytest.raises(TimeoutError, match=task_id):
            await backend.wait(task_id, timeout=0.3, interval=0.05)
        assert 0.25 <= time.monotonic() - started < 2.0

    backends.run(scenario)


# Redis expires records by itself (SET EX), so this applies to the stores that need a sweep; the Redis
# behaviour is test_redis_records_expire_on_their_own.
@pytest.mark.parametrize("backends", ["memory", "sqlite", "postgresql", "mysql"], indirect=True)
def test_cleanup_deletes_expired_results(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend(expires=3600.0)
        old, fresh, running = backends.task_id(), backends.task_id(), backends.task_id()
        await backend.store(
            [
                ResultMeta(old, states.SUCCESS, result=1, date_done=now() - timedelta(hours=2)),
                ResultMeta(fresh, states.SUCCESS, result=2, date_done=now() - timedelta(minutes=30)),
                ResultMeta(running, states.STARTED),
            ]
        )
        removed = await backend.cleanup()  # type: ignore[attr-defined]
        assert removed >= 1
        assert set(await backend.get_many([old, fresh, running])) == {fresh, running}

    backends.run(scenario)


# -- Redis only -------------------------------------------------------------------------------------


@pytest.fixture
def redis_results() -> Iterator[RedisBackendKit]:
    _require_redis_results()
    kit = RedisBackendKit()
    yield kit
    kit.clean()


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
            backend = redis_results.backend()
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

            assert [n for _, n in await admin.pubsub_numsub(*channels)] == [0] * len(channels)
            # The pub/sub connection is closed once nobody waits; closing the backends closes the rest.
            deadline = time.monotonic() + 2
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

    from celeriac.backends import redis as redis_backend

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
