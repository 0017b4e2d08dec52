"""Fault injection on real workers and a private redis-server per test (AOF, ``appendfsync always``).

The same scenarios as on SQLite (``scenarios.py``), plus what only a server broker has: the server
itself crashing and coming back. Each run prints its seed (``CHAOS_SEED=<seed>`` replays it) and adds
a row to the table printed at the end of the session. Smoke sizes run in the default suite; the full
ones with ``./dev chaos`` (``pytest -m chaos``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
import redis as redis_py

from celeriac import states
from tests.chaos import scenarios
from tests.chaos.harness import Cluster, Ledger, Nemesis, Producer, check, wait_until
from tests.chaos.scenarios import (
    FULL,
    QUEUE,
    Size,
    assert_accounted,
    row,
    start_workers,
    statuses,
    step,
    steps,
)
from tests.servers import RedisServer

LEASE_SECONDS = 3.0
WEDGE_SECONDS = 5.0
DELAYED = "celeriac.delayed"


@pytest.fixture
def redis(redis_server: Callable[..., RedisServer]) -> RedisServer:
    # A confirmed write is on disk before Redis answers, so a crash loses nothing that was confirmed.
    return redis_server(appendonly="yes", appendfsync="always")


@pytest.fixture
def chaos_env(tmp_path: Path, redis: RedisServer) -> dict[str, str]:
    """Overrides the SQLite environment of ``conftest.py``: broker and results on the private server."""
    settings = {
        "CELERIAC_BROKER_URL": redis.url(),
        "CELERIAC_RESULT_BACKEND": redis.url(),
        "CELERIAC_BROKER_LEASE_SECONDS": str(LEASE_SECONDS),
        "CELERIAC_WORKER_WEDGE_TIMEOUT": str(WEDGE_SECONDS),
    }
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    return {**inherited, **settings, "LEDGER_DB": str(tmp_path / "ledger.sqlite3"), "PYTHONUNBUFFERED": "1"}


@pytest.fixture
def client(redis: RedisServer) -> Iterator[redis_py.Redis]:
    """A plain client to look inside the server (it reconnects by itself after a restart)."""
    conn = redis_py.Redis.from_url(redis.url())
    yield conn
    conn.close()


def backlog(conn: redis_py.Redis) -> int:
    """Messages still in Redis for the queue: waiting (every priority list), leased, or delayed."""
    lists = [QUEUE, *(f"{QUEUE}\x06\x16{step}" for step in range(1, 10))]
    waiting = sum(int(conn.llen(name)) for name in lists)
    leased = sum(int(conn.hlen(key)) for key in conn.scan_iter("celeriac.processing.*"))
    return waiting + leased + int(conn.zcard(DELAYED))


def holders(conn: redis_py.Redis) -> dict[str, int]:
    """Where the messages still in Redis are (for a failure message): key -> how many."""
    found = {f"list {QUEUE}": int(conn.llen(QUEUE)), DELAYED: int(conn.zcard(DELAYED))}
    for key in conn.scan_iter("celeriac.processing.*"):
        consumer = key.decode().rsplit(".", 1)[1]
        beating = conn.exists(f"celeriac.heartbeat.{consumer}")
        found[f"{key.decode()} (heartbeat {'on' if beating else 'off'})"] = int(conn.hlen(key))
    return {key: n for key, n in found.items() if n}


def on_redis(conn: redis_py.Redis) -> scenarios.Broker:
    return scenarios.Broker("redis", LEASE_SECONDS, lambda: backlog(conn))


# -- 1. worker SIGKILL ----------------------------------------------------------------------------------

SMOKE = Size(tasks=200, rate=50, concurrency=2, max_kills=1)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(SMOKE, id="smoke"),
        pytest.param(FULL, id="full", marks=[pytest.mark.chaos, pytest.mark.timeout(300)]),
    ],
)
def test_worker_sigkill_every_2s_loses_nothing(
    size: Size, seed: int, app: Any, ledger: Ledger, cluster: Cluster, client: redis_py.Redis
) -> None:
    scenarios.worker_kills(size, seed, app, ledger, cluster, on_redis(client))


# -- 3. a poison task --------------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_poison_task_is_dead_lettered_after_max_deliveries(
    seed: int, app: Any, ledger: Ledger, cluster: Cluster, client: redis_py.Redis
) -> None:
    scenarios.poison_tasks(seed, app, ledger, cluster, on_redis(client))


# -- 6. the Redis server crashes and comes back -------------------------------------------------------------


@dataclass(frozen=True)
class Outages:
    tasks: int
    rate: float
    restarts: int
    downtime: tuple[float, float]  # seconds down, drawn from this range
    # SIGKILL (a crash) or SIGTERM (a clean shutdown, which sends the replies of what it executed).
    # A crash can lose a fetch's reply after Redis ran it: a live consumer then holds messages it never
    # received, until it stops (RedisBroker.fetch is not idempotent over a lost reply).
    kill: bool


RESTART_SMOKE = Outages(tasks=100, rate=20, restarts=1, downtime=(1.5, 1.5), kill=False)
RESTART_FULL = Outages(tasks=2000, rate=50, restarts=3, downtime=(2.0, 5.0), kill=True)


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(RESTART_SMOKE, id="smoke"),
        pytest.param(RESTART_FULL, id="full", marks=[pytest.mark.chaos, pytest.mark.timeout(300)]),
    ],
)
def test_redis_crash_and_restart_mid_run_loses_nothing(
    size: Outages,
    seed: int,
    app: Any,
    ledger: Ledger,
    cluster: Cluster,
    redis: RedisServer,
    client: redis_py.Redis,
) -> None:
    """Stop the server mid-run (a crash in the full run), keep it down a few seconds, start it on the
    same port with the same AOF. Workers wait it out (backoff, never exiting), reconnect, and every
    confirmed task finishes, with nothing left held in Redis."""
    began, nemesis = time.monotonic(), Nemesis(seed)
    concurrency = 2
    start_workers(cluster, concurrency)
    recoveries: list[float] = []
    with Producer(ledger, steps(nemesis, size.tasks), size.rate) as producer:
        spacing = size.tasks / size.rate / (size.restarts + 1)
        for _ in range(size.restarts):
            time.sleep(nemesis.rng.uniform(0.4, 0.6) * spacing)
            down = nemesis.rng.uniform(*size.downtime)
            redis.restart(downtime=down, kill=size.kill)
            back = nemesis.did("redis restart", f"down {down:.1f}s")
            resumed: list[float] = []

            def ran_again(since: float = back, found: list[float] = resumed) -> bool:
                first = started_since(ledger, since)
                found[:] = [] if first is None else [first - since]
                return bool(found)

            assert wait_until(ran_again, 60, 0.05), "nothing ran after the restart"
            recoveries += resumed
        producer.join(size.tasks / size.rate + 60)
    broker = on_redis(client)
    unsettled = scenarios.settle(app, ledger, broker, timeout=LEASE_SECONDS + 60)
    held = holders(client) if unsettled else {}
    restarts = nemesis.count("redis restart")
    # an idle worker may still be in its backoff (at most 5 s) when the others drained the queue
    wait_until(lambda: all(said_recovered(w.log_text(), redis.url()) for w in cluster), 10, 0.1)
    alive = [(w.name, w.alive(), w.starts) for w in cluster]
    logs = {w.name: w.log_text() for w in cluster}
    cluster.terminate_all()
    verdict = check(ledger)
    # In flight when the server died: each worker's running tasks, whose heartbeat may have run out
    # while the server was down; and a publish whose reply was lost may have been retried.
    bound = restarts * (2 * concurrency + 1)
    summary = row(
        f"redis: 6 redis-server {'SIGKILL' if size.kill else 'SIGTERM'} + restart "
        f"({'full' if size is RESTART_FULL else 'smoke'})",
        seed,
        verdict,
        f"{restarts} restarts, down {', '.join(e[2].split()[1] for e in nemesis.events)}",
        began,
        dead=len(scenarios.dead_letters(app)),
        recovery=f"first task <={max(recoveries):.1f}s after restart",
        notes=f"dup bound {bound}; unknown {verdict.unknown} {unsettled}".strip(),
    )
    assert not unsettled, f"{summary}; held in {held}"
    assert alive == [("w1", True, 1), ("w2", True, 1)], f"a worker exited; {summary}"
    assert_accounted(verdict, summary, max_dup=bound)
    assert statuses(app, ledger.submits("step")) == {states.SUCCESS: verdict.submitted}, summary
    for name, text in logs.items():
        assert OUTAGE.search(text), f"{name} never said Redis was unreachable"
        assert said_recovered(text, redis.url()), f"{name} never said the broker answers again"
    assert max(recoveries) <= 15, summary


#: What a worker logs when Redis is gone, whatever it was doing: fetching, or (every slot busy) storing
#: results and acking.
OUTAGE = re.compile(r"could not (fetch from|store \d+ result\(s\) on|ack \d+ message\(s\) on) redis://")


def said_recovered(log: str, url: str) -> bool:
    """Whether every failed fetch in ``log`` was followed by the line that says the broker is back."""
    failed = log.rfind(f"could not fetch from {url}")
    return failed < 0 or log.find(f"broker {url} answers again", failed) > failed


def started_since(ledger: Ledger, when: float) -> float | None:
    """When the first run that started after ``when`` finished (a fetch made after a restart)."""
    done = [r.finished_at for r in ledger.runs() if r.started_at >= when and r.finished_at is not None]
    return min(done) if done else None


# -- 7. ETA and countdown across restarts -------------------------------------------------------------------


def delayed_members(conn: redis_py.Redis, task_id: str) -> list[tuple[bytes, float]]:
    """The delayed-set entries that carry ``task_id`` (with their due times)."""
    found = []
    entries = cast(list[tuple[bytes, float]], conn.zrange(DELAYED, 0, -1, withscores=True))
    for member, score in entries:
        envelope = json.loads(member.partition(b"\n")[2])
        if envelope["headers"]["id"] == task_id:
            found.append((member, float(score)))
    return found


@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_countdowns_survive_worker_and_redis_restarts_and_run_once(
    seed: int,
    app: Any,
    ledger: Ledger,
    cluster: Cluster,
    redis: RedisServer,
    client: redis_py.Redis,
) -> None:
    """A one-week countdown stays in the broker's delayed set, exactly once, through worker kills and
    a server crash, and never runs early; a 15 s countdown sent alongside runs exactly once, on time,
    after the same restarts."""
    began = time.monotonic()
    week = step(10, kind="week", countdown=7 * 86400)
    soon = step(10, kind="soon", countdown=15)
    start_workers(cluster, 2)
    week.publish(week.task_id)
    ledger.submitted(week.task_id, week.kind, confirmed=True)
    sent = time.time()
    soon.publish(soon.task_id)
    ledger.submitted(soon.task_id, soon.kind, confirmed=True)
    due_week = delayed_members(client, week.task_id)
    assert len(due_week) == 1 and abs(due_week[0][1] - (sent + 7 * 86400)) < 5, due_week
    # workers die, the server crashes, everything comes back; all before the short countdown is due
    time.sleep(1.0)
    for worker in cluster:
        worker.kill()
    redis.restart(downtime=2.0, kill=True)
    for worker in cluster:
        worker.start(wait=False)
    for worker in cluster:
        worker.wait_ready()
    assert time.time() < sent + 15, "the restarts took longer than the short countdown"
    ran = wait_until(lambda: ledger.remaining("soon") == 0, 40, 0.1)
    time.sleep(LEASE_SECONDS + 1)  # a duplicate would come now, after a lease
    runs = ledger.runs([soon.task_id])
    after = delayed_members(client, week.task_id)
    cluster.terminate_all()
    verdict = check(ledger, kind="soon")
    summary = row(
        "redis: 7 countdowns across restarts",
        seed,
        verdict,
        "2 worker kills, 1 redis SIGKILL",
        began,
        dead=len(scenarios.dead_letters(app)),
        recovery=f"15 s countdown ran {runs[0].started_at - sent:.1f}s after sending"
        if runs
        else "never ran",
        notes=f"week-long: {len(after)} in the delayed set, {len(ledger.runs([week.task_id]))} runs",
    )
    assert ran, summary
    assert [r.finished_at is not None for r in runs] == [True], f"ran {len(runs)} times; {summary}"
    assert runs[0].started_at >= sent + 15 - 0.5, f"ran early; {summary}"
    assert after == due_week, f"the week-long countdown moved or multiplied: {after}; {summary}"
    assert not ledger.runs([week.task_id]), summary
    assert app.AsyncResult(soon.task_id).state == states.SUCCESS
    assert app.AsyncResult(week.task_id).state == states.PENDING
