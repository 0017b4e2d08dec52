"""Plans, observations and the fault scenarios that every broker's chaos tests share.

A scenario takes the broker-specific part as a ``Broker`` description (how many messages it still
holds, how long its lease is) and runs the same plan, faults and checks on any of them.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from celeriac import states
from celeriac.exceptions import WorkerLostError
from tests.chaos import chaosapp
from tests.chaos.harness import (
    Cluster,
    Ledger,
    Nemesis,
    Producer,
    Send,
    Verdict,
    WorkerProcess,
    check,
    report,
    wait_until,
)

QUEUE = "celery"


@dataclass(frozen=True)
class Broker:
    """What a scenario needs to know of the broker under test."""

    name: str
    lease: float  # seconds a dead worker's messages stay leased
    backlog: Callable[[], int]  # messages still in the broker, leased or not


# -- plans ---------------------------------------------------------------------------------------------


def steps(nemesis: Nemesis, count: int, **options: Any) -> list[Send]:
    """``count`` calls of ``step`` that sleep 5-50 ms each."""
    return [step(nemesis.rng.uniform(5, 50), **options) for _ in range(count)]


def step(ms: float, kind: str = "step", **options: Any) -> Send:
    def publish(task_id: str) -> object:
        return chaosapp.step.apply_async((0, round(ms, 1)), task_id=task_id, **options)

    return Send(kind, str(uuid.uuid4()), publish)


def poison() -> Send:
    return Send("poison", str(uuid.uuid4()), lambda tid: chaosapp.poison.apply_async(task_id=tid))


# -- observing -----------------------------------------------------------------------------------------


def start_workers(cluster: Cluster, concurrency: int, *args: str) -> None:
    for name in ("w1", "w2"):
        cluster.start(name, "-c", str(concurrency), "-P", "processes", *args, wait=False)
    for worker in cluster:
        worker.wait_ready()


def settle(app: Any, ledger: Ledger, broker: Broker, timeout: float) -> str:
    """Wait until every confirmed ``step`` finished and the broker is empty; say what never happened.

    Tasks whose result is already final (a failure) will not run again: the wait stops early for them.
    """

    def over() -> bool:
        left = ledger.unfinished("step")
        if not left or len(left) > 100:
            return not left
        found = results(app, left)
        return len(found) == len(left) and all(meta.ready for meta in found.values())

    if not wait_until(over, timeout, 0.2):
        return f"{ledger.remaining('step')} unfinished after {timeout:g}s"
    if ledger.remaining("step"):
        return f"{ledger.remaining('step')} ended without finishing"
    if not wait_until(lambda: broker.backlog() == 0, broker.lease + 10, 0.1):
        return f"{broker.backlog()} message(s) never left the broker"
    return ""


def results(app: Any, task_ids: Sequence[str]) -> dict[str, Any]:
    async def get_many() -> dict[str, Any]:
        found: dict[str, Any] = await app.backend().get_many(list(task_ids))
        return found

    found: dict[str, Any] = app.run(get_many())
    return found


def statuses(app: Any, task_ids: Sequence[str]) -> Counter[str]:
    found = results(app, task_ids)
    return Counter(found[t].status if t in found else states.PENDING for t in task_ids)


def dead_letters(app: Any) -> list[Any]:
    async def read() -> list[Any]:
        letters: list[Any] = await app.broker().dead_letters(QUEUE, limit=100_000)
        return letters

    letters: list[Any] = app.run(read())
    return letters


def row(name: str, seed: int, verdict: Verdict, faults: str, began: float, **extra: object) -> str:
    return report(
        run=name,
        seed=seed,
        tasks=verdict.submitted,
        faults=faults,
        lost=len(verdict.lost),
        dup=verdict.dup,
        unexp=len(verdict.unexpected),
        wall=f"{time.monotonic() - began:.1f}s",
        **extra,
    )


def assert_accounted(verdict: Verdict, summary: str, max_dup: int) -> None:
    assert not verdict.lost, f"lost {len(verdict.lost)}, e.g. {verdict.lost[:5]}; {summary}"
    assert verdict.dup <= max_dup, f"{verdict.dup} duplicate run(s), bound {max_dup}; {summary}"
    assert not verdict.unexpected, f"ran but never submitted: {verdict.unexpected[:5]}; {summary}"


def lost_runs(ledger: Ledger, verdict: Verdict) -> str:
    """For a failure message: how many times each lost task started (0: never handed to a task)."""
    if not verdict.lost:
        return ""
    started = Counter(run.task_id for run in ledger.runs(verdict.lost))
    return f"; lost tasks started {[started[t] for t in verdict.lost[:10]]} time(s)"


def pick(nemesis: Nemesis, cluster: Cluster) -> WorkerProcess:
    """A seeded worker; the other one if that one is still starting (a kill there would hit nothing)."""
    planned = cluster.workers[nemesis.rng.choice(["w1", "w2"])]
    return planned if planned.ready() else next(w for w in cluster if w is not planned)


# -- 1. worker SIGKILL every 2 s ---------------------------------------------------------------------


@dataclass(frozen=True)
class Size:
    tasks: int
    rate: float  # publishes per second
    concurrency: int
    max_kills: int


SMOKE = Size(tasks=200, rate=30, concurrency=2, max_kills=3)
FULL = Size(tasks=2000, rate=100, concurrency=4, max_kills=30)


def worker_kills(
    size: Size, seed: int, app: Any, ledger: Ledger, cluster: Cluster, broker: Broker
) -> tuple[Verdict, int, float]:
    """Kill -9 a seeded worker every 1.5-2.5 s while ``size.tasks`` run; restart it at once, as a
    supervisor would. Checks lost = 0, dup <= kills x concurrency, and that the last task finished
    within the lease + 5 s of the last kill. Returns the verdict, the kills and that recovery time."""
    began, nemesis = time.monotonic(), Nemesis(seed)
    plan = steps(nemesis, size.tasks)
    start_workers(cluster, size.concurrency)
    with Producer(ledger, plan, size.rate) as producer:
        for _ in range(size.max_kills):
            time.sleep(nemesis.rng.uniform(1.5, 2.5))
            if not producer.is_alive() and ledger.remaining("step") <= 2 * size.concurrency:
                break  # the rest drains in well under a second: a kill now would test only the lease
            victim = pick(nemesis, cluster)
            victim.kill()
            nemesis.did("kill", victim.name)
            victim.start(wait=False)
        producer.join(size.tasks / size.rate + 30)
    kills = nemesis.count("kill")
    unsettled = settle(app, ledger, broker, timeout=broker.lease + 60)
    recovery = (ledger.done_at("step") or 0.0) - nemesis.last
    cluster.terminate_all()
    verdict = check(ledger)
    summary = row(
        f"{broker.name}: 1 worker SIGKILL ({'full' if size is FULL else 'smoke'})",
        seed,
        verdict,
        f"{kills} kills (C={size.concurrency})",
        began,
        dead=len(dead_letters(app)),
        recovery=f"{recovery:.1f}s after last kill",
        notes=f"dup bound {kills * size.concurrency}; unknown {verdict.unknown} {unsettled}".strip()
        + lost_runs(ledger, verdict),
    )
    assert kills >= min(2, size.max_kills), f"the nemesis hardly acted; {summary}"
    assert_accounted(verdict, summary, max_dup=kills * size.concurrency)
    assert not unsettled, summary
    assert recovery <= broker.lease + 5, f"done {recovery:.1f}s after the last kill; {summary}"
    assert statuses(app, ledger.submits("step")) == {states.SUCCESS: verdict.submitted}, summary
    return verdict, kills, recovery


# -- 3. a poison task that kills its process every time ----------------------------------------------


def poison_tasks(
    seed: int, app: Any, ledger: Ledger, cluster: Cluster, broker: Broker, tasks: int = 400
) -> None:
    """Four tasks that SIGKILL their pool process each time, among ``tasks`` good ones: each poison runs
    exactly ``broker_max_deliveries`` (3) times and is dead-lettered; the workers live; nothing is lost."""
    began, nemesis = time.monotonic(), Nemesis(seed)
    plan = steps(nemesis, tasks)
    for _ in range(4):
        plan.insert(nemesis.rng.randrange(len(plan)), poison())
    start_workers(cluster, 2)  # broker_max_deliveries stays at its default, 3
    with Producer(ledger, plan, rate=100) as producer:
        producer.join(60)
    poisons = ledger.submits("poison")
    failed = wait_until(lambda: statuses(app, poisons)[states.FAILURE] == len(poisons), 60, 0.2)
    unsettled = settle(app, ledger, broker, timeout=30)
    alive = [(w.name, w.alive(), w.starts) for w in cluster]
    cluster.terminate_all()
    verdict = check(ledger)
    letters = {d.message.task_id: d.reason for d in dead_letters(app) if d.message is not None}
    attempts = Counter(run.task_id for run in ledger.runs(poisons))
    summary = row(
        f"{broker.name}: 3 poison task",
        seed,
        verdict,
        f"{len(poisons)} poison",
        began,
        dead=len(letters),
        notes=f"runs per poison {sorted(attempts.values())} {unsettled}".strip(),
    )
    assert failed, f"a poison task's result never became FAILURE; {summary}"
    assert alive == [("w1", True, 1), ("w2", True, 1)], f"a worker died; {summary}"
    assert_accounted(verdict, summary, max_dup=0)
    assert not unsettled, summary
    assert letters.keys() == set(poisons), summary
    for task_id in poisons:
        assert "broker_max_deliveries=3" in letters[task_id], letters[task_id]
        assert attempts[task_id] == 3, f"{task_id} ran {attempts[task_id]} times; {summary}"
        assert isinstance(app.AsyncResult(task_id).result, WorkerLostError), summary
