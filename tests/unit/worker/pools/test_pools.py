"""The pools: each runs tasks, says how they ended, keeps to its concurrency and to time limits; the
processes pool also outlives its children."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from celeriac import states
from celeriac.exceptions import (
    ConfigurationError,
    Retry,
    SoftTimeLimitExceeded,
    TimeLimitExceeded,
    WorkerLostError,
)
from celeriac.task import Task
from celeriac.worker.pools import pool_class
from celeriac.worker.pools.asyncio import AsyncPool
from celeriac.worker.pools.base import Job, Outcome, Pool
from celeriac.worker.pools.processes import ProcessPool
from celeriac.worker.pools.solo import SoloPool
from celeriac.worker.pools.threads import ThreadPool
from tests.unit.worker.pools import poolapp

APP_PATH = "tests.unit.worker.pools.poolapp"
POOLS = ["processes", "threads", "async", "solo"]
T = TypeVar("T")


def job(
    task: Task[Any, Any], *args: Any, time_limit: float | None = None, soft_time_limit: float | None = None
) -> Job:
    task_id = str(uuid.uuid4())
    return Job(
        task_id,
        task.name,
        list(args),
        {},
        request={"id": task_id, "task": task.name, "args": list(args), "kwargs": {}},
        time_limit=time_limit,
        soft_time_limit=soft_time_limit,
    )


def make_pool(kind: str, concurrency: int = 1, **options: Any) -> Pool:
    return pool_class(kind)(
        poolapp.app, concurrency, app_path=APP_PATH if kind == "processes" else None, **options
    )


def in_pool(pool: Pool, scenario: Callable[[Any], Awaitable[T]]) -> T:
    async def main() -> T:
        await pool.start()
        try:
            return await scenario(pool)
        finally:
            await pool.stop()

    return asyncio.run(main())


def run_one(kind: str, one: Job) -> Outcome:
    async def scenario(pool: Pool) -> Outcome:
        return await pool.run(one)

    return in_pool(make_pool(kind), scenario)


async def full_strength(
    pool: ProcessPool, *, without: set[int] | frozenset[int] = frozenset(), within: float = 10.0
) -> list[int]:
    """The pids of a pool back at full size, none of them in ``without``; fails after ``within`` (a bound
    for a loaded machine, where a fresh interpreter can take seconds to start: not a speed test)."""
    deadline = time.monotonic() + within
    while True:
        pids: list[int] = pool.info()["processes"]
        if len(pids) == pool.concurrency and not without & set(pids):
            return pids
        assert time.monotonic() < deadline, f"pool not back to full strength in {within}s: {pids}"
        await asyncio.sleep(0.01)


def alive(pid: int) -> bool:
    """Whether a process exists, zombies included (a zombie is a child nobody reaped)."""
    return os.path.exists(f"/proc/{pid}")


# -- every pool ------------------------------------------------------------------------------------


def test_pool_class_finds_every_pool_by_name() -> None:
    assert pool_class("processes") is ProcessPool
    assert pool_class("prefork") is ProcessPool
    assert pool_class("threads") is ThreadPool
    assert pool_class("async") is AsyncPool
    assert pool_class("solo") is SoloPool
    with pytest.raises(ConfigurationError, match=r"processes.*threads.*async.*solo"):
        pool_class("gevent")


@pytest.mark.parametrize("kind", POOLS)
def test_success_returns_the_value(kind: str) -> None:
    outcome = run_one(kind, job(poolapp.add, 2, 3))
    assert (outcome.status, outcome.value, outcome.worker_lost) == (states.SUCCESS, 5, False)


@pytest.mark.parametrize("kind", POOLS)
def test_failure_carries_the_exception_and_its_traceback(kind: str) -> None:
    outcome = run_one(kind, job(poolapp.fail, "boom"))
    assert outcome.status == states.FAILURE
    assert type(outcome.exc) is ValueError and outcome.exc.args == ("boom",)
    assert outcome.traceback is not None
    assert "raise ValueError(message)" in outcome.traceback and "ValueError: boom" in outcome.traceback


@pytest.mark.parametrize("kind", POOLS)
def test_retry_ends_in_state_retry(kind: str) -> None:
    outcome = run_one(kind, job(poolapp.retrying))
    assert outcome.status == states.RETRY
    assert isinstance(outcome.exc, Retry) and outcome.exc.when == 5


@pytest.mark.parametrize("kind", POOLS)
def test_async_task_is_awaited(kind: str) -> None:
    outcome = run_one(kind, job(poolapp.async_add, 2, 3))
    assert (outcome.status, outcome.value) == (states.SUCCESS, 5)


@pytest.mark.parametrize("kind", POOLS)
def test_on_start_is_called_once_before_the_outcome(kind: str) -> None:
    calls: list[str] = []

    async def scenario(pool: Pool) -> Outcome:
        outcome = await pool.run(job(poolapp.sleepy, 0.1), lambda: calls.append("started"))
        calls.append("done")
        return outcome

    assert in_pool(make_pool(kind), scenario).status == states.SUCCESS
    assert calls == ["started", "done"]


@pytest.mark.parametrize(
    ("kind", "concurrency", "parallel"),
    [
        ("processes", 4, True),
        ("threads", 4, True),
        ("async", 4, True),
        ("processes", 1, False),
        ("threads", 1, False),
        ("async", 1, False),
        ("solo", 4, False),
    ],
)
def test_concurrency_is_respected(kind: str, concurrency: int, parallel: bool) -> None:
    async def scenario(pool: Pool) -> float:
        started = time.monotonic()
        outcomes = await asyncio.gather(*(pool.run(job(poolapp.sleepy, 0.3)) for _ in range(4)))
        assert all(o.status == states.SUCCESS for o in outcomes)
        return time.monotonic() - started

    elapsed = in_pool(make_pool(kind, concurrency), scenario)
    if parallel:
        assert elapsed < 1.0
    else:  # the solo pool runs one at a time whatever it is asked
        assert elapsed >= 1.2


@pytest.mark.parametrize("kind", POOLS)
def test_soft_time_limit_raises_inside_a_sync_task(kind: str) -> None:
    async def scenario(pool: Pool) -> list[Outcome]:
        return list(
            await asyncio.gather(
                pool.run(job(poolapp.soft_limited, 5, soft_time_limit=0.2)),
                pool.run(job(poolapp.sleepy, 5, soft_time_limit=0.2)),
            )
        )

    started = time.monotonic()
    cleaned, unhandled = in_pool(make_pool(kind, 2), scenario)
    assert (cleaned.status, cleaned.value) == (states.SUCCESS, "cleaned")
    assert unhandled.status == states.FAILURE and isinstance(unhandled.exc, SoftTimeLimitExceeded)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("kind", POOLS)
def test_hard_time_limit_ends_a_sync_task(kind: str) -> None:
    async def scenario(pool: Pool) -> tuple[Outcome, float]:
        started = time.monotonic()
        outcome = await pool.run(job(poolapp.sleepy, 10, time_limit=0.5))
        return outcome, time.monotonic() - started

    outcome, elapsed = in_pool(make_pool(kind), scenario)
    assert outcome.status == states.FAILURE and isinstance(outcome.exc, TimeLimitExceeded)
    assert str(outcome.exc) == "Time limit (0.5s) exceeded"
    assert elapsed < 1.5


@pytest.mark.parametrize("kind", POOLS)
def test_time_limits_cancel_an_async_task(kind: str) -> None:
    async def scenario(pool: Pool) -> tuple[list[Outcome], float]:
        started = time.monotonic()
        outcomes = await asyncio.gather(
            pool.run(job(poolapp.async_sleepy, 10, soft_time_limit=0.2)),
            pool.run(job(poolapp.async_sleepy, 10, time_limit=0.3)),
        )
        return list(outcomes), time.monotonic() - started

    (soft, hard), elapsed = in_pool(make_pool(kind, 2), scenario)
    assert soft.status == states.FAILURE and isinstance(soft.exc, SoftTimeLimitExceeded)
    assert hard.status == states.FAILURE and isinstance(hard.exc, TimeLimitExceeded)
    assert elapsed < 1.5


def test_thread_stuck_in_c_code_is_abandoned_at_the_hard_limit() -> None:
    async def scenario(pool: Pool) -> None:
        started = time.monotonic()
        outcome = await pool.run(job(poolapp.stuck, 1.5, time_limit=0.3))
        assert isinstance(outcome.exc, TimeLimitExceeded)
        assert time.monotonic() - started < 1.3
        assert pool.busy == 1  # the thread still sleeps: its slot is not free
        while pool.busy:
            await asyncio.sleep(0.05)
        assert time.monotonic() - started >= 1.5
        assert (await pool.run(job(poolapp.add, 1, 1))).value == 2

    in_pool(make_pool("threads"), scenario)


# -- async def tasks on the loop (threads and async pools) -------------------------------------------
# Without a time limit the job runs in the caller's own task; with one, in a task of its own.

on_the_loop = pytest.mark.parametrize(
    ("kind", "limit"), [(kind, limit) for kind in ("threads", "async") for limit in (None, 30.0)]
)


async def idle(pool: Pool) -> None:
    for _ in range(100):
        if not pool.busy:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{pool.busy} slot(s) still busy")


@on_the_loop
def test_a_cold_stop_ends_a_running_async_task_as_worker_lost(kind: str, limit: float | None) -> None:
    async def scenario(pool: Pool) -> Outcome:
        running = asyncio.ensure_future(pool.run(job(poolapp.async_sleepy, 10, time_limit=limit)))
        await asyncio.sleep(0.1)
        await pool.stop(cold=True)
        outcome = await running
        await idle(pool)
        return outcome

    outcome = in_pool(make_pool(kind), scenario)
    assert outcome.status == states.FAILURE and outcome.worker_lost
    assert isinstance(outcome.exc, WorkerLostError)


@on_the_loop
def test_a_warm_stop_lets_a_running_async_task_finish(kind: str, limit: float | None) -> None:
    async def scenario(pool: Pool) -> Outcome:
        running = asyncio.ensure_future(pool.run(job(poolapp.async_sleepy, 0.3, time_limit=limit)))
        await asyncio.sleep(0.05)
        await pool.stop()  # had it not waited, the job would be cancelled: a FAILURE
        return await running

    outcome = in_pool(make_pool(kind), scenario)
    assert outcome.status == states.SUCCESS and outcome.value == 0.3


@on_the_loop
def test_a_cancelled_caller_cancels_its_async_task_and_frees_the_slot(kind: str, limit: float | None) -> None:
    async def scenario(pool: Pool) -> None:
        running = asyncio.ensure_future(pool.run(job(poolapp.async_sleepy, 10, time_limit=limit)))
        await asyncio.sleep(0.1)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
        await idle(pool)
        assert (await pool.run(job(poolapp.async_add, 1, 2))).value == 3

    in_pool(make_pool(kind), scenario)


@on_the_loop
def test_an_async_task_raising_cancelled_error_itself_fails(kind: str, limit: float | None) -> None:
    async def scenario(pool: Pool) -> Outcome:
        outcome = await pool.run(job(poolapp.async_gives_up, time_limit=limit))
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
        return outcome

    outcome = in_pool(make_pool(kind), scenario)
    assert outcome.status == states.FAILURE and not outcome.worker_lost
    assert isinstance(outcome.exc, asyncio.CancelledError)
    assert outcome.exc.args == ("the task's own cancellation",)


# -- the processes pool ----------------------------------------------------------------------------


def test_hard_time_limit_kills_only_that_child() -> None:
    async def scenario(pool: ProcessPool) -> None:
        before = await full_strength(pool)
        started = time.monotonic()
        limited = asyncio.ensure_future(pool.run(job(poolapp.sleepy, 10, time_limit=0.5)))
        other = asyncio.ensure_future(pool.run(job(poolapp.sleepy, 1.0)))
        outcome = await limited
        assert isinstance(outcome.exc, TimeLimitExceeded) and outcome.worker_lost
        assert time.monotonic() - started < 1.5
        finished = await other
        assert finished.status == states.SUCCESS and finished.value in before
        after = await full_strength(pool)
        assert finished.value in after and len(set(after) - set(before)) == 1

    in_pool(make_pool("processes", 2), scenario)


@pytest.mark.parametrize(
    ("task", "reason"), [(poolapp.crash, "exitcode 3"), (poolapp.self_kill, "signal 9 (SIGKILL)")]
)
def test_child_dying_mid_task_is_worker_lost_and_replaced(task: Task[Any, Any], reason: str) -> None:
    async def scenario(pool: ProcessPool) -> None:
        [before] = await full_strength(pool)
        outcome = await pool.run(job(task))
        assert outcome.status == states.FAILURE and outcome.worker_lost
        assert isinstance(outcome.exc, WorkerLostError)
        assert str(outcome.exc) == f"Worker exited prematurely: {reason}"
        [after] = await full_strength(pool, without={before})
        assert (await pool.run(job(poolapp.pid))).value == after

    in_pool(make_pool("processes"), scenario)


def test_children_killed_while_idle_are_replaced_promptly() -> None:
    # Six kills per slot in quick succession: past ``restart_burst`` (5) starts in a second, a start waits
    # for the rest of that second (the crash-loop brake), plus the time a fresh interpreter takes (seconds
    # on a loaded machine). What fails this is a brake that waits far longer, or a slot never refilled.
    allowed = 1.0 + 5.0

    async def scenario(pool: ProcessPool) -> None:
        pids = await full_strength(pool)
        for kill in range(12):
            victim = pids[kill % 2]
            os.kill(victim, signal.SIGKILL)
            pids = await full_strength(pool, without={victim}, within=allowed)
        assert (await pool.run(job(poolapp.add, 1, 2))).value == 3

    in_pool(make_pool("processes", 2), scenario)


def test_an_idle_pool_gives_one_job_after_another_to_the_same_child() -> None:
    """The child that became idle last takes the next job (as Celery's prefork gives an idle pool's jobs to
    its first child): task code that keeps state on its Task instance between retries sees it again."""

    async def scenario(pool: ProcessPool) -> tuple[list[int], list[Any]]:
        pids = await full_strength(pool)
        return pids, [(await pool.run(job(poolapp.pid))).value for _ in range(6)]

    pids, ran_in = in_pool(make_pool("processes", 3), scenario)
    assert len(set(ran_in)) == 1 and ran_in[0] in pids


def test_max_tasks_per_child_recycles_the_child() -> None:
    async def scenario(pool: ProcessPool) -> list[Any]:
        return [(await pool.run(job(poolapp.pid))).value for _ in range(5)]

    pids = in_pool(make_pool("processes", max_tasks_per_child=2), scenario)
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4]


def test_max_memory_per_child_recycles_the_child_after_its_outcome() -> None:
    async def scenario(pool: ProcessPool) -> list[Any]:
        return [
            (await pool.run(one)).value for one in (job(poolapp.pid), job(poolapp.hog, 120), job(poolapp.pid))
        ]

    small, hog, after = in_pool(make_pool("processes", max_memory_per_child=100_000), scenario)
    assert small == hog != after


def test_unpicklable_return_value_is_a_failure_naming_the_task() -> None:
    outcome = run_one("processes", job(poolapp.unpicklable_return))
    assert outcome.status == states.FAILURE and isinstance(outcome.exc, TypeError)
    assert poolapp.unpicklable_return.name in str(outcome.exc)
    assert "return value cannot be sent from the pool process" in str(outcome.exc)


def test_unpicklable_exception_is_rebuilt_from_its_record() -> None:
    outcome = run_one("processes", job(poolapp.unpicklable_exception))
    assert outcome.status == states.FAILURE
    assert type(outcome.exc) is poolapp.Unpicklable and outcome.exc.args == ("cannot travel",)
    assert outcome.traceback is not None and "Unpicklable: cannot travel" in outcome.traceback


def test_job_that_cannot_cross_to_the_child_fails_alone() -> None:
    async def scenario(pool: ProcessPool) -> list[Outcome]:
        return [
            await pool.run(job(poolapp.add, lambda: 1, 1)),  # cannot be pickled here
            await pool.run(job(poolapp.add, poolapp.LoadsBadly(), 1)),  # cannot be unpickled there
            await pool.run(job(poolapp.add, 1, 1)),
        ]

    unpicklable, unloadable, fine = in_pool(make_pool("processes"), scenario)
    assert unpicklable.status == states.FAILURE and not unpicklable.worker_lost
    assert unloadable.status == states.FAILURE and not unloadable.worker_lost
    assert "cannot read the job" in str(unloadable.exc)
    assert fine.value == 2


def test_app_that_cannot_be_loaded_fails_start() -> None:
    pool = ProcessPool(poolapp.app, 2, app_path="tests.unit.worker.pools.no_such_module")
    started = time.monotonic()
    with pytest.raises(ConfigurationError, match="no_such_module"):
        asyncio.run(pool.start())
    assert time.monotonic() - started < 5
    assert multiprocessing.active_children() == []


@pytest.mark.parametrize("cold", [False, True])
def test_stop_leaves_no_child_behind(cold: bool) -> None:
    async def scenario(pool: ProcessPool) -> tuple[list[int], Outcome]:
        pids = await full_strength(pool)
        running = asyncio.ensure_future(pool.run(job(poolapp.sleepy, 0.5 if not cold else 10)))
        await asyncio.sleep(0.1)
        await pool.stop(cold=cold)
        return pids, await running

    pids, outcome = in_pool(make_pool("processes", 2), scenario)
    if cold:
        assert outcome.worker_lost and isinstance(outcome.exc, WorkerLostError)
    else:
        assert outcome.status == states.SUCCESS  # a warm stop lets the running job finish
    assert multiprocessing.active_children() == []
    assert not any(alive(pid) for pid in pids)


def test_forked_children_inherit_the_app_when_no_app_path_is_given() -> None:
    async def scenario(pool: ProcessPool) -> None:
        [before] = await full_strength(pool)
        assert (await pool.run(job(poolapp.add, 2, 2))).value == 4
        assert (await pool.run(job(poolapp.crash))).worker_lost
        await full_strength(pool, without={before})
        assert (await pool.run(job(poolapp.add, 3, 3))).value == 6

    in_pool(ProcessPool(poolapp.app, 1), scenario)


def test_crash_loop_restarts_are_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario(pool: ProcessPool) -> float:
        started = time.monotonic()
        for _ in range(ProcessPool.restart_burst + 2):
            assert (await pool.run(job(poolapp.crash))).worker_lost
        return time.monotonic() - started

    with caplog.at_level(logging.WARNING, "celeriac.worker.pools.processes"):
        elapsed = in_pool(ProcessPool(poolapp.app, 1), scenario)  # forked: restarts are quick
    assert "restarting too often" in caplog.text
    assert elapsed >= 1.0
