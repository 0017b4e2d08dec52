"""Fault injection on real workers and the embedded SQLite broker: what at-least-once must survive.

Each run feeds two workers from a seeded plan, hurts them on a seeded schedule, then checks the ledger:
lost = 0 (every confirmed submit finished), duplicates within their bound, nothing unexpected. The
seed is printed; ``CHAOS_SEED=<seed>`` replays the plan and the schedule. The smoke size of the worker
kill runs in the default suite; the rest runs with ``./dev chaos`` (``pytest -m chaos``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from celeriac.exceptions import TimeLimitExceeded
from celeriac.protocol import Message
from tests.chaos import chaosapp, scenarios
from tests.chaos.conftest import LEASE_SECONDS
from tests.chaos.harness import (
    Cluster,
    Ledger,
    Nemesis,
    Producer,
    Send,
    WorkerProcess,
    check,
    children_of,
    group_members,
    is_pool_process,
    wait_until,
)
from tests.chaos.scenarios import (
    FULL,
    QUEUE,
    SMOKE,
    assert_accounted,
    dead_letters,
    pick,
    results,
    row,
    start_workers,
    statuses,
    step,
    steps,
)

# -- the SQLite part -------------------------------------------------------------------------------------


def raw(body: bytes, task: str = "tests.chaos.chaosapp.step", **message: Any) -> Callable[[str], object]:
    """Publish a message as it is, straight to the broker, past every check a client makes."""

    def publish(task_id: str) -> object:
        headers = {"lang": "py", "task": task, "id": task_id}
        bad = Message(body=body, headers=headers, properties={"correlation_id": task_id}, **message)

        async def send() -> None:
            await chaosapp.app.broker().publish(QUEUE, bad)

        return chaosapp.app.run(send())

    return publish


def backlog(env: dict[str, str]) -> int:
    """Messages still in the broker, leased or not: zero means no task can run (again)."""
    path = env["CELERIAC_BROKER_URL"].removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)) as conn:
        return int(conn.execute("SELECT count(*) FROM celeriac_message").fetchone()[0])


def sqlite(env: dict[str, str]) -> scenarios.Broker:
    return scenarios.Broker("sqlite", LEASE_SECONDS, lambda: backlog(env))


def settle(app: Any, ledger: Ledger, env: dict[str, str], timeout: float) -> str:
    return scenarios.settle(app, ledger, sqlite(env), timeout)


def zombie_children(pid: int) -> list[int]:
    zombies = []
    for child in children_of(pid):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                zombies.append(child)
    return zombies


# -- 1. worker SIGKILL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(SMOKE, id="smoke"),
        pytest.param(FULL, id="full", marks=[pytest.mark.chaos, pytest.mark.timeout(300)]),
    ],
)
def test_worker_sigkill_every_2s_loses_nothing(size, seed, app, ledger, cluster):
    scenarios.worker_kills(size, seed, app, ledger, cluster, sqlite(cluster.env))


# -- 2. pool child SIGKILL, the parent alive ------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_pool_child_sigkill_x20_loses_nothing(seed, app, ledger, cluster):
    began, nemesis = time.monotonic(), Nemesis(seed)
    concurrency = 4
    # Three deaths of one message's process would dead-letter it; this test is about requeueing.
    cluster.env["CELERIAC_BROKER_MAX_DELIVERIES"] = "10"
    start_workers(cluster, concurrency)
    refills: list[float] = []
    with Producer(ledger, steps(nemesis, 1200), rate=80) as producer:
        for _ in range(20):
            time.sleep(nemesis.rng.uniform(0.3, 0.6))
            worker, victim = pick_child(nemesis, cluster, ledger)
            os.kill(victim, signal.SIGKILL)
            killed = time.monotonic()
            nemesis.did("kill child", f"{worker.name}/{victim}")
            full = wait_until(lambda w=worker, v=victim: full_pool(w, v, concurrency), 5, 0.01)
            refills.append(time.monotonic() - killed if full else float("inf"))
        producer.join(30)
    unsettled = settle(app, ledger, cluster.env, timeout=LEASE_SECONDS + 60)
    parents = [(w.name, w.alive(), w.starts) for w in cluster]
    cluster.terminate_all()
    verdict = check(ledger)
    kills = nemesis.count("kill child")
    in_flight = sum(w.log_text().count("exited while running") for w in cluster)  # as the workers saw it
    summary = row(
        "2 pool child SIGKILL",
        seed,
        verdict,
        f"{kills} child kills ({in_flight} mid-task)",
        began,
        dead=len(dead_letters(app)),
        recovery=f"pool refilled <={max(refills):.2f}s",
        notes=f"dup bound {kills} {unsettled}".strip(),
    )
    assert parents == [("w1", True, 1), ("w2", True, 1)], f"a worker died; {summary}"
    assert in_flight >= kills // 2, f"most kills missed the running tasks; {summary}"
    assert_accounted(verdict, summary, max_dup=kills)
    assert not unsettled, summary
    assert max(refills) <= 1.0, f"pool back to full size after {max(refills):.2f}s; {summary}"
    assert statuses(app, ledger.submits("step")) == {states.SUCCESS: verdict.submitted}, summary


def pick_child(nemesis: Nemesis, cluster: Cluster, ledger: Ledger) -> tuple[WorkerProcess, int]:
    """A pool process of a seeded worker, preferably one running a task (looked for up to 0.5 s)."""
    worker = cluster.workers[nemesis.rng.choice(["w1", "w2"])]
    pool: list[int] = []
    for _ in range(25):
        pool = worker.pool_pids()
        busy = sorted(set(pool) & ledger.busy_pids())
        if busy:
            return worker, nemesis.rng.choice(busy)
        time.sleep(0.02)
    assert pool, f"{worker.name} has no pool processes; log:\n{worker.tail()}"
    return worker, nemesis.rng.choice(pool)


def full_pool(worker: WorkerProcess, victim: int, size: int) -> bool:
    pool = worker.pool_pids()
    return victim not in pool and len(pool) == size


# -- 3. a poison task that kills its process every time --------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_poison_task_is_dead_lettered_after_max_deliveries(seed, app, ledger, cluster):
    scenarios.poison_tasks(seed, app, ledger, cluster, sqlite(cluster.env))


# -- 4. hard time limits -------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_hard_time_limit_fails_the_task_in_time_and_leaves_no_process(seed, app, ledger, cluster):
    began, nemesis = time.monotonic(), Nemesis(seed)
    limit, concurrency = 1.0, 4
    plan = [
        step(3000, kind="slow", time_limit=limit)
        if nemesis.rng.random() < 0.05
        else step(nemesis.rng.uniform(5, 50), time_limit=limit)
        for _ in range(800)
    ]
    start_workers(cluster, concurrency)
    seen: dict[str, set[int]] = {w.name: set() for w in cluster}

    with Producer(ledger, plan, rate=80) as producer:

        def finished() -> bool:
            for worker in cluster:  # every pool process there was, killed ones too, is looked for at the end
                seen[worker.name].update(worker.pool_pids())
            return not producer.is_alive() and ledger.remaining("step") == 0

        done = wait_until(finished, 90, 0.05)
    slow = ledger.submits("slow")
    failed = done and wait_until(lambda: statuses(app, slow)[states.FAILURE] == len(slow), 30, 0.2)
    unsettled = settle(app, ledger, cluster.env, timeout=30)
    zombies = {w.name: zombie_children(w.pid) for w in cluster}
    pools = {w.name: len(w.pool_pids()) for w in cluster}
    groups = {w.name: w.pid for w in cluster}
    cluster.terminate_all()
    # After a clean exit no pool process may remain; multiprocessing's resource tracker leaves by
    # itself once its pipe closes, so the whole group gets a moment.
    pools_left = {n: [p for p in group_members(pgid) if is_pool_process(p)] for n, pgid in groups.items()}
    wait_until(lambda: not any(group_members(pgid) for pgid in groups.values()), 5)
    leftovers = {name: group_members(pgid) for name, pgid in groups.items()}
    verdict = check(ledger)
    found = results(app, slow)
    started = {run.task_id: run.started_at for run in ledger.runs(slow)}
    late = {
        t: round(found[t].date_done.timestamp() - started[t], 2)
        for t in slow
        if t in found and t in started and found[t].date_done is not None
    }
    attempts = Counter(run.task_id for run in ledger.runs(slow))
    summary = row(
        "4 hard time limit",
        seed,
        verdict,
        f"{len(slow)} over {limit:g}s",
        began,
        dead=len(dead_letters(app)),
        recovery=f"failed <={max(late.values(), default=0):.2f}s after start",
        notes=f"{sum(map(len, seen.values()))} pool processes seen, 0 left expected {unsettled}".strip(),
    )
    assert slow, f"no task over the limit in this plan; {summary}"
    assert failed, f"a task over its limit never failed; {summary}"
    assert_accounted(verdict, summary, max_dup=0)
    assert not unsettled, summary
    for task_id in slow:
        assert found[task_id].status == states.FAILURE, summary
        assert isinstance(app.AsyncResult(task_id).result, TimeLimitExceeded), summary
        assert attempts[task_id] == 1, f"{task_id} ran {attempts[task_id]} times; {summary}"
    assert max(late.values()) <= limit + 1, f"failed late: {late}; {summary}"
    assert zombies == {"w1": [], "w2": []}, f"unreaped children: {zombies}; {summary}"
    assert pools == {"w1": concurrency, "w2": concurrency}, f"pool sizes {pools}; {summary}"
    assert pools_left == {"w1": [], "w2": []}, f"pool processes outlived their worker; {summary}"
    assert leftovers == {"w1": [], "w2": []}, f"processes left after the workers exited; {summary}"
    for name, pids in seen.items():
        assert not [p for p in pids if Path(f"/proc/{p}").exists()], f"{name}: orphans; {summary}"


# -- 5. SIGTERM under load -------------------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_sigterm_under_load_exits_0_in_time_and_loses_nothing(seed, app, ledger, cluster):
    began, nemesis = time.monotonic(), Nemesis(seed)
    shutdown_timeout, concurrency = 5.0, 4
    # Prefetched messages make the warm shutdown hand back work that never started, too.
    options = ("--shutdown-timeout", str(shutdown_timeout), "--prefetch-multiplier", "4")
    start_workers(cluster, concurrency, *options)
    exits: list[tuple[str, int | None, float]] = []
    with Producer(ledger, steps(nemesis, 1200), rate=80) as producer:
        for _ in range(3):
            time.sleep(nemesis.rng.uniform(2.0, 3.5))
            victim = pick(nemesis, cluster)
            code, took = victim.terminate(timeout=shutdown_timeout + 15)
            nemesis.did("term", victim.name)
            exits.append((victim.name, code, round(took, 2)))
            victim.stop()  # nothing is left if it exited; one that hangs is killed
            victim.start(wait=False)
        producer.join(30)
    unsettled = settle(app, ledger, cluster.env, timeout=LEASE_SECONDS + 60)
    cluster.terminate_all()
    verdict = check(ledger)
    summary = row(
        "5 SIGTERM under load",
        seed,
        verdict,
        f"{len(exits)} SIGTERM",
        began,
        dead=len(dead_letters(app)),
        recovery=f"exit <={max(t for *_, t in exits):.2f}s",
        notes=f"exit codes {[c for _, c, _ in exits]} {unsettled}".strip(),
    )
    for name, code, took in exits:
        assert code == 0, f"{name} exited with {code}; {summary}"
        assert took <= shutdown_timeout + 2, f"{name} took {took}s to exit; {summary}"
    assert_accounted(verdict, summary, max_dup=0)
    assert not unsettled, summary
    assert statuses(app, ledger.submits("step")) == {states.SUCCESS: verdict.submitted}, summary


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_tasks_longer_than_the_shutdown_timeout_survive_rolling_restarts(seed, app, ledger, cluster):
    """Three deploys restart every worker while a 10 s task runs; the shutdown timeout (2 s) stops it
    each time and its message goes back to the queue. Those are not deaths the message caused
    (``broker_max_deliveries``: "times a message may kill its worker"), so the task must still finish."""
    began, nemesis = time.monotonic(), Nemesis(seed)
    shutdown_timeout, concurrency = 2.0, 2
    start_workers(cluster, concurrency, "--shutdown-timeout", str(shutdown_timeout))
    long = step(10_000)
    exits: list[tuple[str, int | None, float]] = []
    deploys = 0
    with Producer(ledger, [long, *steps(nemesis, 300)], rate=30) as producer:
        for _ in range(3):
            holder = running(cluster, ledger, long.task_id, timeout=15)
            if holder is None:
                break  # it finished or was set aside: the checks below say which
            time.sleep(nemesis.rng.uniform(0.2, 1.0))
            # rolling, the worker running the long task first; the other one serves meanwhile
            for worker in sorted(cluster, key=lambda w: w is not holder):
                code, took = worker.terminate(timeout=shutdown_timeout + 15)
                nemesis.did("term", worker.name)
                exits.append((worker.name, code, round(took, 2)))
                worker.stop()
                worker.start()
            deploys += 1
        producer.join(30)
    unsettled = settle(app, ledger, cluster.env, timeout=60)
    cluster.terminate_all()
    verdict = check(ledger)
    stopped = sum(1 for run in ledger.runs([long.task_id]) if run.finished_at is None)
    letters = dead_letters(app)
    summary = row(
        "5b deploys, task > shutdown timeout",
        seed,
        verdict,
        f"{deploys} rolling deploys, {len(exits)} SIGTERM",
        began,
        dead=len(letters),
        recovery=f"exit <={max((t for *_, t in exits), default=0):.2f}s",
        notes=f"10 s task stopped {stopped} times {unsettled}".strip(),
    )
    assert stopped >= 3, f"the deploys missed the long task; {summary}"
    for name, code, took in exits:
        assert code == 0, f"{name} exited with {code}; {summary}"
        assert took <= shutdown_timeout + 2, f"{name} took {took}s to exit; {summary}"
    assert not letters, f"dead-lettered: {[d.reason for d in letters]}; {summary}"
    assert_accounted(verdict, summary, max_dup=0)
    assert not unsettled, summary
    assert statuses(app, ledger.submits("step")) == {states.SUCCESS: verdict.submitted}, summary


def running(cluster: Cluster, ledger: Ledger, task_id: str, timeout: float) -> WorkerProcess | None:
    """The worker whose pool runs ``task_id`` now, waiting up to ``timeout`` s for one to take it."""
    found: list[WorkerProcess] = []

    def look() -> bool:
        pids = {run.pid for run in ledger.runs([task_id]) if run.finished_at is None}
        found[:] = [w for w in cluster if pids & set(w.pool_pids())]
        return bool(found)

    return found[0] if wait_until(look, timeout, 0.05) else None


# -- 6. malformed messages in the stream -------------------------------------------------------------

#: kind -> (how to publish one, what its dead letter's reason must say)
BAD: dict[str, tuple[Callable[[str], object], str]] = {
    "2-element body": (raw(b"[[1, 5], {}]"), "without the third item"),
    "bad JSON": (raw(b'[[1, 5], {}, {"call'), "invalid json"),
    "unknown task": (raw(b"[[1, 5], {}, {}]", task="tests.chaos.chaosapp.nope"), "unknown task"),
    "wrong argument count": (raw(b"[[1], {}, {}]"), "wrong arguments"),
    "pickle": (
        raw(
            pickle.dumps(([1, 5], {}, {})),
            content_type="application/x-python-serialize",
            content_encoding="binary",
        ),
        "not accepted",
    ),
}


@pytest.mark.chaos
@pytest.mark.timeout(240)
def test_malformed_messages_are_dead_lettered_and_the_worker_keeps_serving(seed, app, ledger, cluster):
    began, nemesis = time.monotonic(), Nemesis(seed)
    warmup = steps(nemesis, 100)
    mixed: list[Send] = []
    for _ in range(2000):
        if nemesis.rng.random() < 0.1:
            kind = nemesis.rng.choice(sorted(BAD))
            mixed.append(Send(kind, str(uuid.uuid4()), BAD[kind][0]))
        else:
            mixed += steps(nemesis, 1)
    start_workers(cluster, 2)
    with Producer(ledger, warmup + mixed, rate=100) as producer:
        # the baseline is taken once imports, caches and connections are warm
        assert wait_until(lambda: len(ledger.finishes()) >= len(warmup), 60, 0.1), "no warm-up"
        baseline = {w.name: w.rss_kib() for w in cluster}
        producer.join(60)
    bad_ids = {kind: ledger.submits(kind) for kind in BAD}
    every_bad = [t for ids in bad_ids.values() for t in ids]
    unsettled = settle(app, ledger, cluster.env, timeout=60)
    wait_until(lambda: len(dead_letters(app)) >= len(every_bad), 10, 0.2)
    growth = {w.name: (w.rss_kib() - baseline[w.name]) / 1024 for w in cluster}
    alive = [(w.name, w.alive(), w.starts) for w in cluster]
    cluster.terminate_all()
    verdict = check(ledger)
    letters = {d.message.task_id: d.reason for d in dead_letters(app) if d.message is not None}
    summary = row(
        "6 malformed 10%",
        seed,
        verdict,
        f"{len(every_bad)} bad ({', '.join(f'{len(v)} {k}' for k, v in bad_ids.items())})",
        began,
        dead=len(letters),
        notes=f"RSS growth {', '.join(f'{n} {g:+.1f} MB' for n, g in growth.items())} {unsettled}".strip(),
    )
    assert alive == [("w1", True, 1), ("w2", True, 1)], f"a worker exited; {summary}"
    assert_accounted(verdict, summary, max_dup=0)
    assert not unsettled, summary
    assert not ledger.runs(every_bad), f"a bad message ran; {summary}"
    assert letters.keys() == set(every_bad), summary
    for kind, ids in bad_ids.items():
        for task_id in ids:
            assert BAD[kind][1] in letters[task_id].lower(), f"{kind}: {letters[task_id]!r}"
    # no caller waits forever on a bad message: each one's result says it failed
    assert statuses(app, every_bad) == {states.FAILURE: len(every_bad)}, summary
    assert max(growth.values()) < 50, summary


# -- 7. a worker paused (SIGSTOP), sometimes inside a write transaction ------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(300)
def test_a_worker_paused_inside_a_write_blocks_the_file_loudly_and_loses_nothing(seed, app, ledger, cluster):
    """Pauses of 7 s (past the 5 s busy_timeout) of one worker while a producer sends: a pause that lands
    inside a write holds the file's lock (seen in /proc/locks) until the worker runs again. The other
    worker and the producer say which file is locked and by whom; nothing is lost."""
    from celeriac.sql._sqlite_lock import holders

    began, nemesis = time.monotonic(), Nemesis(seed)
    db = cluster.env["CELERIAC_BROKER_URL"].removeprefix("sqlite:///")
    # The producer gives up on a locked file after one try: its errors are what a caller sees.
    app.conf.update(task_publish_retry_policy={"max_retries": 0})
    start_workers(cluster, 2)
    pauses, in_write = 0, []
    with Producer(ledger, steps(nemesis, 3000), rate=60) as producer:
        while pauses < 12 and len(in_write) < 2:
            time.sleep(nemesis.rng.uniform(0.5, 1.5))
            victim = pick(nemesis, cluster)
            other = next(w for w in cluster if w is not victim)
            os.kill(victim.pid, signal.SIGSTOP)
            nemesis.did("stop", victim.name)
            pauses += 1
            try:
                time.sleep(0.3)
                if any(pid == victim.pid for pid, _ in holders(db)):
                    in_write.append((victim, other, time.monotonic()))
                time.sleep(6.7)
            finally:
                os.kill(victim.pid, signal.SIGCONT)
        producer.stop()
    unsettled = settle(app, ledger, cluster.env, timeout=LEASE_SECONDS + 60)
    fenced = sum(w.log_text().count("lost its message's lease") for w in cluster)
    cluster.terminate_all()
    verdict = check(ledger)
    summary = row(
        "7 SIGSTOP 7 s",
        seed,
        verdict,
        f"{pauses} pauses, {len(in_write)} inside a write",
        began,
        notes=f"{len(producer.errors)} publish errors, {fenced} late runs fenced {unsettled}".strip(),
    )
    for victim, other, _ in in_write:
        text = other.log_text()
        assert f"{db} has been locked" in text and f"pid {victim.pid} (stopped)" in text, summary
    for error in producer.errors:
        assert "stayed locked" in error and db in error, error
    if in_write:
        assert producer.errors, f"no caller was told of the locked file; {summary}"
    # Each pause lets the other worker take the paused one's leased tasks (lease 2 s): run twice.
    assert_accounted(verdict, summary, max_dup=pauses * 2 * 2)
    assert not unsettled, summary
