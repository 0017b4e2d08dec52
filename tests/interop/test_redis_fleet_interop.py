"""A real Celery 5.7 and celeriac on one Redis: clients, workers and results, both ways.

Broker and results are Redis db 13 on both sides (kombu's lists, ``celery-task-meta-<id>``). The
real ``celery worker`` runs as a subprocess (``tests/interop/celery_redis_app.py``), once for the
module; celeriac's worker runs in-process per test (``celeriac.testing.start_worker``), or as a
``celeriac worker`` subprocess for the mixed fleet. The same task names are registered on both sides
(``redis_fleet_tasks``); tasks that record themselves append ``{"id", "kind", "time"}`` to a Redis list
with their own connection, so a test sees which kind of worker ran what, and when.

What is proved, each way (Celery client -> celeriac worker, celeriac client -> Celery worker):
results come back through the other side's ``AsyncResult.get()``; a task's exception is re-raised
with its own type; retries, countdown, expiry and priority behave the same. A mixed fleet drains one
queue with every task run exactly once.
Everything this module writes carries one token and is deleted afterwards.
"""

from __future__ import annotations

import itertools
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery  # type: ignore[import-untyped]
from celery.exceptions import TaskRevokedError as CeleryTaskRevokedError  # type: ignore[import-untyped]

from celeriac import Celeriac
from celeriac.exceptions import TaskRevokedError
from celeriac.redis.broker import RedisBroker
from celeriac.testing import start_worker
from celeriac.worker import Worker
from tests.interop import celeriac_redis_app, celery_redis_app
from tests.interop.conftest import close_celery, require_redis
from tests.interop.redis_fleet import WAIT, FleetProcess, Space
from tests.interop.redis_fleet_tasks import FAIL, FLAKY, WORK, InteropError

REDIS = "redis://127.0.0.1:6379/13"
pytestmark = [
    # Celery 5.7's Redis backend still calls redis-py's SETEX, which redis-py 8 marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]

#: What a worker of either kind stores as the result of a task it did not run because it expired.
EXPIRED = {"exc_type": "TaskRevokedError", "exc_message": ["expired"], "exc_module": "celery.exceptions"}
#: The fields of a result record, as Celery 5.7 writes them (without ``result_extended``).
RECORD_FIELDS = ["children", "date_done", "result", "status", "task_id", "traceback"]


class Fleet:
    """This module's Redis key space, its Celery worker, and the worker processes tests start."""

    def __init__(self, space: Space, tmp: Path) -> None:
        self.space = space
        self.tmp = tmp
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERIAC_", "CELERY_"))}
        self.env["INTEROP_REDIS_URL"] = REDIS
        self.celery_queue = space.name("celery")
        self.mixed_queue = space.name("mixed")
        self.procs: list[FleetProcess] = []

    def start(self, proc: FleetProcess) -> FleetProcess:
        self.procs.append(proc)
        return proc.start()

    def celery_worker(self, queues: list[str], **options: int) -> FleetProcess:
        log = self.tmp / f"celery-{len(self.procs)}.log"
        return self.start(FleetProcess.celery(queues, log, self.env, **options))

    def celeriac_worker(self, queues: list[str], **options: int) -> FleetProcess:
        log = self.tmp / f"celeriac-{len(self.procs)}.log"
        return self.start(FleetProcess.celeriac(queues, log, self.env, **options))

    def interop_logs(self) -> list[tuple[str, str]]:
        """Worker logs for the report of a failing test (see conftest)."""
        return [(f"{p.kind} worker {' '.join(p.args[-9:])}", p.text()) for p in self.procs]

    def why(self) -> str:
        return "".join(f"\n--- {name}:\n{text[-5000:]}" for name, text in self.interop_logs())


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_redis()
    fleet = Fleet(Space(REDIS), tmp_path_factory.mktemp("redis-fleet"))
    try:
        fleet.celery_worker([fleet.celery_queue, fleet.mixed_queue])
        yield fleet
    finally:
        for proc in reversed(fleet.procs):
            proc.stop()
        fleet.space.clean()


@pytest.fixture(scope="module")
def celery_client(fleet: Fleet) -> Iterator[Celery]:
    app = celery_redis_app.build(REDIS)
    yield app
    close_celery(app)


@pytest.fixture(scope="module")
def ours(fleet: Fleet) -> Iterator[Celeriac]:
    app = celeriac_redis_app.build(REDIS)
    yield app
    app.close()


StartOurs = Callable[..., AbstractContextManager[Worker]]


@pytest.fixture
def start_ours() -> Iterator[StartOurs]:
    """Start celeriac's worker in this process: ``with start_ours(queue, concurrency=, prefetch=)``."""
    with ExitStack() as stack:

        @contextmanager
        def start(queue: str, *, concurrency: int = 2, prefetch: int = 1) -> Iterator[Worker]:
            app = celeriac_redis_app.build(REDIS)
            stack.callback(app.close)
            with start_worker(
                app, queues=[queue], concurrency=concurrency, prefetch_multiplier=prefetch
            ) as worker:
                yield worker

        yield start


def kinds(entries: list[dict[str, Any]]) -> set[str]:
    return {entry["kind"] for entry in entries}


# -- results, both ways -------------------------------------------------------------------------------


def test_celery_client_tasks_run_on_our_worker(
    fleet: Fleet, celery_client: Celery, start_ours: StartOurs
) -> None:
    """Celery's ``send_task`` and ``delay`` reach our worker; Celery's ``AsyncResult.get()`` reads back."""
    space = fleet.space
    queue, ledger = space.name("ours"), space.name("ledger")
    routed = celery_redis_app.build(REDIS, task_routes={WORK: {"queue": queue}})
    try:
        with start_ours(queue):
            sent = celery_client.send_task(WORK, (ledger, 7), queue=queue, task_id=space.task_id())
            delayed = routed.tasks[WORK].delay(ledger, 8)
            space.track(delayed.id)
            assert sent.get(timeout=WAIT) == 7
            assert delayed.get(timeout=WAIT) == 8
            assert sent.state == delayed.state == "SUCCESS"
    finally:
        close_celery(routed)
    ran = sorted((e["id"], e["kind"]) for e in space.ledger(ledger))
    assert ran == sorted([(sent.id, "celeriac"), (delayed.id, "celeriac")])


def test_our_client_tasks_run_on_celery_worker(fleet: Fleet, ours: Celeriac) -> None:
    """Our ``send_task`` and ``delay`` reach a real Celery worker; our ``AsyncResult.get()`` reads back."""
    space, queue = fleet.space, fleet.celery_queue
    ledger = space.name("ledger")
    routed = celeriac_redis_app.build(REDIS, task_routes={WORK: {"queue": queue}})
    try:
        sent = ours.send_task(WORK, (ledger, 7), queue=queue, task_id=space.task_id())
        delayed = routed.tasks[WORK].delay(ledger, 8)
        space.track(delayed.id)
        assert sent.get(timeout=WAIT) == 7
        assert delayed.get(timeout=WAIT) == 8
        assert sent.state == delayed.state == "SUCCESS"
    finally:
        routed.close()
    ran = sorted((e["id"], e["kind"]) for e in space.ledger(ledger))
    assert ran == sorted([(sent.id, "celery"), (delayed.id, "celery")])


def test_mixed_fleet_drains_one_queue_exactly_once(
    fleet: Fleet, celery_client: Celery, ours: Celeriac
) -> None:
    """One Celery worker (threads, 2) and one celeriac worker process (threads, 2) share one queue.

    300 tasks, half sent by each client: every id runs exactly once, both kinds of worker run some,
    and both clients read every result.
    """
    space, queue = fleet.space, fleet.mixed_queue
    ledger = space.name("ledger")
    ours_worker = fleet.celeriac_worker([queue])
    try:
        sent: dict[str, int] = {}
        for n in range(300):
            task_id = space.task_id()
            args = (ledger, n, 0.005)
            if n % 2:
                celery_client.send_task(WORK, args, queue=queue, task_id=task_id)
            else:
                ours.send_task(WORK, args, queue=queue, task_id=task_id)
            sent[task_id] = n
        entries = space.wait_ledger(ledger, len(sent), timeout=40, why=fleet.why)
        time.sleep(0.3)  # a duplicate would show up now
        entries = space.ledger(ledger)
        runs = Counter(entry["id"] for entry in entries)
        assert set(runs) == set(sent)
        assert [tid for tid, count in runs.items() if count != 1] == []
        ran_by = Counter(entry["kind"] for entry in entries)
        assert ran_by["celery"] > 0 and ran_by["celeriac"] > 0, ran_by
        assert space.client.llen(queue) == 0
    finally:
        code = ours_worker.stop()
    assert code == 0, fleet.why()
    for task_id, n in sent.items():
        assert celery_client.AsyncResult(task_id).get(timeout=WAIT) == n
        assert ours.AsyncResult(task_id).get(timeout=WAIT) == n


# -- failures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("error", [ValueError, InteropError])
def test_failure_on_our_worker_is_reraised_by_celery(
    fleet: Fleet, celery_client: Celery, start_ours: StartOurs, error: type[Exception]
) -> None:
    space = fleet.space
    queue = space.name("ours")
    with start_ours(queue):
        result = celery_client.send_task(FAIL, (error.__name__, "boom"), queue=queue, task_id=space.task_id())
        with pytest.raises(error) as raised:
            result.get(timeout=WAIT, propagate=True)
    assert type(raised.value) is error
    assert raised.value.args == (("boom", 42) if error is InteropError else ("boom",))
    assert result.state == "FAILURE"
    assert error.__name__ in result.traceback and "redis_fleet_tasks.py" in result.traceback
    record = space.raw_result(result.id)
    assert sorted(record) == RECORD_FIELDS
    assert record["result"]["exc_module"] == error.__module__


@pytest.mark.parametrize("error", [ValueError, InteropError])
def test_failure_on_celery_worker_is_reraised_by_ours(
    fleet: Fleet, ours: Celeriac, error: type[Exception]
) -> None:
    space = fleet.space
    result = ours.send_task(FAIL, (error.__name__, "boom"), queue=fleet.celery_queue, task_id=space.task_id())
    with pytest.raises(error) as raised:
        result.get(timeout=WAIT, propagate=True)
    assert type(raised.value) is error
    assert raised.value.args == (("boom", 42) if error is InteropError else ("boom",))
    if isinstance(raised.value, InteropError):
        assert raised.value.code == 42
    assert result.state == "FAILURE"
    assert result.traceback is not None
    assert error.__name__ in result.traceback and "redis_fleet_tasks.py" in result.traceback
    record = space.raw_result(result.id)
    assert sorted(record) == RECORD_FIELDS
    assert record["result"]["exc_module"] == error.__module__


# -- retries -----------------------------------------------------------------------------------------


def test_retries_on_our_worker_for_a_celery_client(
    fleet: Fleet, celery_client: Celery, start_ours: StartOurs
) -> None:
    space = fleet.space
    queue, ledger = space.name("ours"), space.name("ledger")
    with start_ours(queue):
        result = celery_client.send_task(FLAKY, (ledger, 2, 0.2), queue=queue, task_id=space.task_id())
        assert result.get(timeout=WAIT) == {"runs": 3, "retries": 2, "kind": "celeriac"}
    runs = space.ledger(ledger)
    assert [(e["id"], e["retries"]) for e in runs] == [(result.id, 0), (result.id, 1), (result.id, 2)]
    assert all(b["time"] - a["time"] >= 0.19 for a, b in itertools.pairwise(runs))


def test_retries_on_celery_worker_for_our_client(fleet: Fleet, ours: Celeriac) -> None:
    space = fleet.space
    ledger = space.name("ledger")
    result = ours.send_task(FLAKY, (ledger, 2, 0.2), queue=fleet.celery_queue, task_id=space.task_id())
    assert result.get(timeout=WAIT) == {"runs": 3, "retries": 2, "kind": "celery"}
    runs = space.ledger(ledger)
    assert [(e["id"], e["retries"]) for e in runs] == [(result.id, 0), (result.id, 1), (result.id, 2)]
    assert all(b["time"] - a["time"] >= 0.19 for a, b in itertools.pairwise(runs))


def test_retry_state_reads_alike_on_both_sides(
    fleet: Fleet, celery_client: Celery, ours: Celeriac, start_ours: StartOurs
) -> None:
    """While a task waits for its retry, both clients read RETRY and ``result`` None, as Celery does."""
    space = fleet.space
    queue, ledger = space.name("ours"), space.name("ledger")
    with start_ours(queue):
        by_celery = ours.send_task(FLAKY, (ledger, 1, 1.0), queue=fleet.celery_queue, task_id=space.task_id())
        by_ours = celery_client.send_task(FLAKY, (ledger, 1, 1.0), queue=queue, task_id=space.task_id())
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            states = [space.client.get(f"celery-task-meta-{r.id}") or b"" for r in (by_celery, by_ours)]
            if all(b'"RETRY"' in state for state in states):
                break
            time.sleep(0.02)
        records = {kind: space.raw_result(r.id) for kind, r in (("celery", by_celery), ("ours", by_ours))}
        seen = {
            (kind, reader): (handle.state, handle.result)
            for kind, task_id in (("celery", by_celery.id), ("ours", by_ours.id))
            for reader, handle in (
                ("celery", celery_client.AsyncResult(task_id)),
                ("ours", ours.AsyncResult(task_id)),
            )
        }
        by_celery.get(timeout=WAIT)
        by_ours.get(timeout=WAIT)
    assert [record["status"] for record in records.values()] == ["RETRY", "RETRY"]
    assert seen == dict.fromkeys(seen, ("RETRY", None))
    assert records["ours"]["result"] is None and "Retry" in (records["ours"]["traceback"] or "")


# -- countdown ---------------------------------------------------------------------------------------


def test_celery_countdown_waits_in_our_brokers_delayed_store(
    fleet: Fleet, celery_client: Celery, start_ours: StartOurs
) -> None:
    """A Celery message with an ETA 2 s ahead goes to ``celeriac.delayed``, not to a worker's memory."""
    space = fleet.space
    queue, ledger, task_id = space.name("ours"), space.name("ledger"), space.task_id()
    with start_ours(queue) as worker:
        before = time.time()
        result = celery_client.send_task(WORK, (ledger, 1), queue=queue, task_id=task_id, countdown=2)
        assert isinstance(worker.broker, RedisBroker)
        own = f"celeriac.processing.{worker.broker.consumer_id}"

        def held_by_worker() -> bool:
            return any(task_id.encode() in v for v in space.client.hvals(own))

        # The worker parks the message in the delayed store first and lets go of it after (never lost
        # in between), so for a moment both hold it.
        deadline = time.monotonic() + 1.5
        while (not space.delayed_holding(task_id) or held_by_worker()) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert space.delayed_holding(task_id), "the ETA message never reached celeriac.delayed"
        assert not held_by_worker(), "the worker still holds the ETA message"
        assert space.processing_holding(task_id) == []
        assert space.ledger(ledger) == []
        assert result.get(timeout=WAIT) == 1
    [run] = space.ledger(ledger)
    assert run["kind"] == "celeriac"
    assert run["time"] >= before + 2, "ran before its countdown"
    assert run["time"] < before + 2 + 2, "ran far later than its countdown"
    assert not space.delayed_holding(task_id)


def test_our_countdown_runs_on_celery_worker_beside_a_celeriac_worker(
    fleet: Fleet, ours: Celeriac, start_ours: StartOurs
) -> None:
    """celeriac's client keeps a countdown message in ``celeriac.delayed``; any celeriac worker on the
    same Redis moves it to its list when due (whatever queue it serves), and the Celery worker runs it,
    or revokes it when it expired while it waited."""
    space, queue = fleet.space, fleet.celery_queue
    ledger = space.name("ledger")
    with start_ours(space.name("elsewhere")):
        before = time.time()
        result = ours.send_task(WORK, (ledger, 1), queue=queue, task_id=space.task_id(), countdown=1.5)
        expired = ours.send_task(
            WORK, (ledger, 2), queue=queue, task_id=space.task_id(), countdown=1.5, expires=1
        )
        assert result.get(timeout=WAIT) == 1
        with pytest.raises(TaskRevokedError, match="expired"):
            expired.get(timeout=WAIT)
    [run] = space.ledger(ledger)
    assert run["kind"] == "celery"
    assert before + 1.5 <= run["time"] < before + 1.5 + 2
    assert expired.state == "REVOKED"
    record = space.raw_result(expired.id)
    assert (record["status"], record["result"], record["traceback"]) == ("REVOKED", EXPIRED, None)


def test_our_countdown_runs_on_a_celery_only_fleet_with_eta_on_queue(fleet: Fleet) -> None:
    """With the broker option ``eta_on_queue`` our client sends delayed tasks as Celery does (on the
    queue, with the eta header), so a fleet of Celery workers only runs them, on time."""
    space = fleet.space
    client = celeriac_redis_app.build(REDIS, broker_transport_options={"eta_on_queue": True})
    ledger, task_id = space.name("ledger"), space.task_id()
    before = time.time()
    try:
        client.send_task(WORK, (ledger, 1), queue=fleet.celery_queue, task_id=task_id, countdown=1)
        [run] = space.wait_ledger(ledger, 1, timeout=WAIT)
    finally:
        space.clean_delayed(task_id)
        client.close()
    assert run["kind"] == "celery"
    assert run["time"] >= before + 1


def test_our_countdown_waits_in_the_delayed_store_by_default(fleet: Fleet, ours: Celeriac) -> None:
    """Without the option a delayed task waits in Redis (celeriac.delayed), not on the queue, until a
    celeriac worker promotes it when due: with Celery workers only, it waits (docs/redis.md)."""
    space = fleet.space
    ledger, task_id = space.name("ledger"), space.task_id()
    ours.send_task(WORK, (ledger, 1), queue=fleet.celery_queue, task_id=task_id, countdown=1)
    try:
        delayed = space.client.zrange("celeriac.delayed", 0, -1)
        assert [m for m in delayed if task_id.encode() in m], "not in the delayed store"
        time.sleep(2.0)
        assert space.ledger(ledger) == []
    finally:
        space.clean_delayed(task_id)


# -- expiry ------------------------------------------------------------------------------------------


def test_expired_celery_messages_are_revoked_by_our_worker(
    fleet: Fleet, celery_client: Celery, start_ours: StartOurs
) -> None:
    """Expired on arrival, and expired while waiting for its ETA: REVOKED, never run."""
    space = fleet.space
    queue, ledger = space.name("ours"), space.name("ledger")
    with start_ours(queue):
        past = celery_client.send_task(
            WORK,
            (ledger, 1),
            queue=queue,
            task_id=space.task_id(),
            expires=datetime.now(UTC) - timedelta(seconds=10),
        )
        short = celery_client.send_task(
            WORK, (ledger, 2), queue=queue, task_id=space.task_id(), expires=1, countdown=2
        )
        for result in (past, short):
            with pytest.raises(CeleryTaskRevokedError, match="expired"):
                result.get(timeout=WAIT)
            assert result.state == "REVOKED"
    assert space.ledger(ledger) == []
    for result in (past, short):
        record = space.raw_result(result.id)
        assert sorted(record) == RECORD_FIELDS
        assert (record["status"], record["result"], record["traceback"]) == ("REVOKED", EXPIRED, None)


def test_expired_celeriac_message_is_revoked_by_celery_worker(fleet: Fleet, ours: Celeriac) -> None:
    space = fleet.space
    ledger = space.name("ledger")
    result = ours.send_task(
        WORK,
        (ledger, 1),
        queue=fleet.celery_queue,
        task_id=space.task_id(),
        expires=datetime.now(UTC) - timedelta(seconds=10),
    )
    with pytest.raises(TaskRevokedError, match="expired"):
        result.get(timeout=WAIT)
    assert result.state == "REVOKED"
    assert space.ledger(ledger) == []
    record = space.raw_result(result.id)
    assert sorted(record) == RECORD_FIELDS
    assert (record["status"], record["result"], record["traceback"]) == ("REVOKED", EXPIRED, None)


# -- priority ----------------------------------------------------------------------------------------

#: (priority, how many) in the order they are sent: lowest priority first, so FIFO alone would run
#: them in the wrong order. On Redis a lower number runs first; with kombu's default steps
#: [0, 3, 6, 9], 0 goes to ``<queue>``, 5 to ``<queue>\x06\x163`` and 9 to ``<queue>\x06\x169``.
PRIORITIES = [(9, 3), (5, 3), (0, 3)]
BUCKETS = {0: "", 5: "\x06\x163", 9: "\x06\x169"}


def _send_by_priority(send: Callable[..., Any], queue: str, ledger: str, space: Space) -> list[int]:
    """Send the PRIORITIES; returns the task numbers in the order they must run."""
    expected: dict[int, list[int]] = {}
    n = 0
    for priority, count in PRIORITIES:
        for _ in range(count):
            send(WORK, (ledger, n), queue=queue, task_id=space.task_id(), priority=priority)
            expected.setdefault(priority, []).append(n)
            n += 1
    for priority, count in PRIORITIES:
        assert space.client.llen(queue + BUCKETS[priority]) == count, f"priority {priority} bucket"
    return [n for priority in sorted(expected) for n in expected[priority]]


def test_celery_priorities_are_kept_by_our_worker(
    fleet: Fleet, celery_client: Celery, start_ours: StartOurs
) -> None:
    """Celery's client buckets priorities into kombu's lists; our worker (concurrency 1, prefetch 1),
    started once all are queued, takes them highest first and FIFO within one priority."""
    space = fleet.space
    queue, ledger = space.name("prio"), space.name("ledger")
    order = _send_by_priority(celery_client.send_task, queue, ledger, space)
    with start_ours(queue, concurrency=1, prefetch=1):
        runs = space.wait_ledger(ledger, len(order), why=fleet.why)
    assert [run["n"] for run in runs] == order
    assert kinds(runs) == {"celeriac"}


def test_our_priorities_are_kept_by_celery_worker(fleet: Fleet, ours: Celeriac) -> None:
    """Our client buckets priorities exactly as kombu does; a Celery worker (concurrency 1, prefetch 1)
    started once all are queued runs them highest first and FIFO within one priority."""
    space = fleet.space
    queue, ledger = space.name("prio"), space.name("ledger")
    order = _send_by_priority(ours.send_task, queue, ledger, space)
    worker = fleet.celery_worker([queue], concurrency=1, prefetch=1)
    try:
        runs = space.wait_ledger(ledger, len(order), why=fleet.why)
    finally:
        worker.stop()
    assert [run["n"] for run in runs] == order
    assert kinds(runs) == {"celery"}
