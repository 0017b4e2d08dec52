"""The Backend contract, run against every result backend: what results and the worker rely on."""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from celeriac import states
from celeriac.backends import ResultMeta
from celeriac.backends.base import ChordClaim, ChordPart
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


# -- saved groups -----------------------------------------------------------------------------------


def test_group_save_restore_forget_round_trip(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        group_id, parent, nested = backends.group_id(), backends.task_id(), backends.group_id()
        members = [[[backends.task_id(), None], None] for _ in range(3)]
        inner = [[nested, None], [[[backends.task_id(), None], None]]]
        saved = [[group_id, [[parent, None], None]], [*members, inner]]
        assert await backend.restore_group(group_id) is None
        await backend.save_group(group_id, saved)
        assert await backend.restore_group(group_id) == saved
        # Another client reads it; saving again replaces it.
        assert await backends.backend().restore_group(group_id) == saved
        again = [[group_id, None], members[:1]]
        await backend.save_group(group_id, again)
        assert await backend.restore_group(group_id) == again
        await backend.forget_group(group_id)
        assert await backend.restore_group(group_id) is None
        await backend.forget_group(group_id)  # forgetting twice is fine

    backends.run(scenario)


# -- the chord counter ------------------------------------------------------------------------------


def _failure(message: str) -> dict[str, Any]:
    return {"exc_type": "ValueError", "exc_message": [message], "exc_module": "builtins"}


def _header(group_id: str, size: int) -> list[ChordPart]:
    return [ChordPart(f"{group_id}-{n}", n, states.SUCCESS, {"n": n, "s": "ü"}) for n in range(size)]


def test_chord_completes_once_with_the_parts_in_header_order(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend, other = backends.backend(), backends.backend()
        group_id = backends.group_id()
        parts = _header(group_id, 6)
        parts[4] = ChordPart(parts[4].task_id, 4, states.FAILURE, _failure("boom"))
        arrival = [3, 5, 0, 4, 1]
        for n in arrival:
            assert await (backend if n % 2 else other).chord_part(group_id, parts[n], 6) is None
        claim = await other.chord_part(group_id, parts[2], 6)
        assert claim is not None and claim.group_id == group_id
        assert list(claim.parts) == parts  # by index, whatever the arrival order
        assert claim.values[4] == _failure("boom") and claim.parts[4].status == states.FAILURE
        # While the claim holds, nobody else gets the chord; after chord_done, late copies are ignored.
        assert await backend.chord_part(group_id, parts[2], 6) is None
        await backend.chord_done(claim)
        for part in parts:
            assert await other.chord_part(group_id, part, 6) is None

    backends.run(scenario)


def test_chord_counts_a_redelivered_part_once(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        group_id = backends.group_id()
        first, second, third = _header(group_id, 3)
        assert await backend.chord_part(group_id, first, 3) is None
        # The same task reported again (a redelivered message, with another result): not counted again.
        rerun = ChordPart(first.task_id, 0, states.SUCCESS, "another run")
        assert await backend.chord_part(group_id, rerun, 3) is None
        assert await backend.chord_part(group_id, second, 3) is None
        assert await backend.chord_part(group_id, second, 3) is None
        claim = await backend.chord_part(group_id, third, 3)
        assert claim is not None and list(claim.parts) == [first, second, third]
        await backend.chord_done(claim)

    backends.run(scenario)


def test_chord_parts_without_index_come_last_in_arrival_order(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        group_id = backends.group_id()
        indexed = _header(group_id, 2)
        loose = ChordPart(f"{group_id}-loose", None, states.SUCCESS, "x")
        assert await backend.chord_part(group_id, loose, 3) is None
        assert await backend.chord_part(group_id, indexed[1], 3) is None
        claim = await backend.chord_part(group_id, indexed[0], 3)
        assert claim is not None and list(claim.parts) == [*indexed, loose]
        await backend.chord_done(claim)

    backends.run(scenario)


def test_chord_claim_passes_on_when_its_lease_runs_out(backends: BackendKit) -> None:
    """A worker that claimed the chord and died: the redelivered part claims it again, once."""

    async def scenario() -> None:
        backend = backends.backend()
        group_id = backends.group_id()
        parts = _header(group_id, 2)
        assert await backend.chord_part(group_id, parts[0], 2, lease=0.3) is None
        lost = await backend.chord_part(group_id, parts[1], 2, lease=0.3)
        assert lost is not None
        assert await backend.chord_part(group_id, parts[1], 2, lease=0.3) is None  # the lease holds
        await asyncio.sleep(0.4)
        again = await backend.chord_part(group_id, parts[1], 2, lease=30.0)
        assert again is not None and again.parts == lost.parts and again.token != lost.token
        # The first claimant wakes up late: it cannot end a chord that is no longer its own.
        await backend.chord_done(lost)
        assert await backend.chord_part(group_id, parts[0], 2) is None  # still claimed by `again`
        await backend.chord_done(again)
        assert await backend.chord_part(group_id, parts[1], 2, lease=0.3) is None

    backends.run(scenario)


def test_chord_begin_lets_a_done_chord_run_again(backends: BackendKit) -> None:
    async def scenario() -> None:
        backend = backends.backend()
        group_id = backends.group_id()
        await backend.chord_begin(group_id, 1)
        [part] = _header(group_id, 1)
        first = await backend.chord_part(group_id, part, 1)
        assert first is not None
        await backend.chord_done(first)
        assert await backend.chord_part(group_id, part, 1) is None
        await backend.chord_begin(group_id, 1)  # the same frozen chord, applied again
        again = await backend.chord_part(group_id, part, 1)
        assert again is not None and again.parts == first.parts
        await backend.chord_done(again)

    backends.run(scenario)


def _race(backends: BackendKit, size: int, callers: int, copies: int) -> tuple[list[ChordClaim], float]:
    """Report ``size`` parts of one chord from ``callers`` threads at once (each its own backend and
    event loop), with ``copies`` parts reported a second time by another thread (redeliveries)."""
    group_id = backends.group_id()
    parts = _header(group_id, size)
    plan: list[list[ChordPart]] = [[] for _ in range(callers)]
    for n, part in enumerate(random.sample(parts, size)):
        plan[n % callers].append(part)
    for part in random.sample(parts, copies):
        plan[random.randrange(callers)].append(part)
    for mine in plan:
        random.shuffle(mine)
    claims: list[ChordClaim] = []
    errors: list[BaseException] = []
    ready = threading.Barrier(callers + 1)

    def caller(mine: list[ChordPart]) -> None:
        async def report() -> None:
            backend = backends.backend()
            try:
                await backend.restore_group(group_id)  # connected before the race starts
                ready.wait()
                for part in mine:
                    claim = await backend.chord_part(group_id, part, size)
                    if claim is not None:
                        claims.append(claim)
            finally:
                await backend.close()

        try:
            asyncio.run(report())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=caller, args=(mine,)) for mine in plan]
    for thread in threads:
        thread.start()
    ready.wait(timeout=30)
    started = time.monotonic()
    for thread in threads:
        thread.join(60)
    elapsed = time.monotonic() - started
    assert not errors, errors
    assert len(claims) == 1, f"{len(claims)} callers claimed the chord"
    assert list(claims[0].parts) == parts
    return claims, elapsed


def test_chord_concurrent_reports_complete_it_exactly_once(backends: BackendKit) -> None:
    for _ in range(2):
        claims, elapsed = _race(backends, size=200, callers=8, copies=40)
        print(f"{backends.kind}: 200 parts + 40 copies from 8 threads in {elapsed:.3f}s")

        async def finish(claim: ChordClaim = claims[0]) -> None:
            backend = backends.backend()
            await backend.chord_done(claim)
            assert await backend.chord_part(claim.group_id, claim.parts[0], 200) is None

        backends.run(finish)


@pytest.mark.chaos
def test_chord_concurrent_reports_many_rounds(backends: BackendKit) -> None:
    timings = [_race(backends, size=200, callers=8, copies=100)[1] for _ in range(15)]
    print(f"{backends.kind}: 15 rounds, slowest {max(timings):.3f}s, mean {sum(timings) / 15:.3f}s")
    small = [_race(backends, size=2, callers=2, copies=2)[1] for _ in range(100)]
    print(f"{backends.kind}: 100 two-part races, slowest {max(small):.3f}s")


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
