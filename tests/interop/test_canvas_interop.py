"""Workflows across the wire: Celery 5.7's canvas on our worker, ours on Celery's, and a chord shared by both.

Broker and results are Redis db 12 on both sides. Each scenario runs twice (the ``side`` fixture):

* ``celery->celeriac``: Celery's client builds the workflow; celeriac's worker (in this process) runs it;
  Celery's ``get()`` reads the results.
* ``celeriac->celery``: our client builds it; a real ``celery worker`` subprocess runs it; our ``get()``
  reads the results.

A worker sends a workflow's next messages (chain steps, chord bodies, callbacks) to its own app's
default queue, as Celery does, so each side's client and worker share a default queue.

The mixed chord puts a Celery worker and ours on one queue: the header is split between them, and the
body, sent by whichever worker completes the header, runs exactly once (it INCRs a counter).
Queues and ledgers carry this module's token; the result keys of the workflows are deleted afterwards
(the results of callbacks, whose ids the workers make, expire after ``result_expires``, 600 s).
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celery  # type: ignore[import-untyped]
import celery.exceptions  # type: ignore[import-untyped]
import pytest

import celeriac
from celeriac.exceptions import ChordError
from celeriac.testing import start_worker
from tests.interop import canvas_tasks as tasks
from tests.interop.conftest import close_celery, require_redis
from tests.interop.redis_fleet import WAIT, FleetProcess, Space

REDIS = "redis://127.0.0.1:6379/12"
pytestmark = [
    # Celery 5.7's Redis backend still calls redis-py's SETEX, which redis-py 8 marks deprecated.
    pytest.mark.filterwarnings("ignore:Call to deprecated setex:DeprecationWarning"),
]


@dataclass
class Side:
    """One direction: the client app that builds workflows, its canvas, and who runs them."""

    name: str
    client: Any
    canvas: Any  # the module with chain, group, chord: ``celery`` or ``celeriac``
    worker_kind: str
    chord_error: type[BaseException]
    space: Space
    ids: list[str] = field(default_factory=list)

    def sig(self, name: str, *args: Any) -> Any:
        return self.client.tasks[name].s(*args)

    def task(self, name: str) -> Any:
        return self.client.tasks[name]

    def keep(self, result: Any) -> Any:
        """Remember a result's ids (and its parents' and members') to delete their keys afterwards."""
        todo = [result]
        while todo:
            node = todo.pop()
            if node is None:
                continue
            self.ids.append(node.id)
            todo.append(node.parent)
            todo.extend(getattr(node, "results", None) or ())
        return result


class Canvas:
    """This module's key space, its Celery worker subprocess and its in-process celeriac worker."""

    def __init__(self, space: Space, tmp: Path) -> None:
        self.space, self.tmp = space, tmp
        self.celery_queue = space.name("celery")
        self.ours_queue = space.name("ours")
        self.mixed_queue = space.name("mixed")
        self.procs: list[FleetProcess] = []
        self.ids: list[str] = []

    def celery_worker(self) -> FleetProcess:
        """A ``celery worker`` (threads, 2) on its own queue and the mixed one; it sends to its own."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERIAC_", "CELERY_"))}
        env.update(INTEROP_CANVAS_REDIS_URL=REDIS, INTEROP_CANVAS_QUEUE=self.celery_queue)
        args = [
            sys.executable, "-m", "celery", "-A", "tests.interop.canvas_tasks:celery_app", "worker",
            "-P", "threads", "-c", "2", "--prefetch-multiplier", "1",
            "-Q", f"{self.celery_queue},{self.mixed_queue}", "-n", f"celery-{uuid.uuid4().hex[:6]}@canvas",
            "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info",
        ]  # fmt: skip
        proc = FleetProcess("celery", args, self.tmp / f"celery-{len(self.procs)}.log", env)
        self.procs.append(proc)
        return proc.start()

    def interop_logs(self) -> list[tuple[str, str]]:
        return [(f"{p.kind} worker", p.text()) for p in self.procs]

    def clean(self) -> None:
        keys = [f"celery-task-meta-{i}" for i in self.ids]
        keys += [f"celery-taskset-meta-{i}{s}" for i in self.ids for s in ("", ".j", ".t", ".s", ".d", ".c")]
        for start in range(0, len(keys), 500):
            self.space.client.delete(*keys[start : start + 500])
        self.space.clean()


@pytest.fixture(scope="module")
def canvas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Canvas]:
    require_redis()
    made = Canvas(Space(REDIS), tmp_path_factory.mktemp("canvas-interop"))
    try:
        made.celery_worker()
        yield made
    finally:
        for proc in made.procs:
            proc.stop()
        made.clean()


@pytest.fixture(scope="module", params=["celery->celeriac", "celeriac->celery"])
def side(request: pytest.FixtureRequest, canvas: Canvas) -> Iterator[Side]:
    with ExitStack() as stack:
        if request.param == "celery->celeriac":
            worker_app = tasks.build_celeriac(REDIS, task_default_queue=canvas.ours_queue)
            stack.callback(worker_app.close)
            stack.enter_context(start_worker(worker_app, queues=[canvas.ours_queue], concurrency=2))
            client = tasks.build_celery(REDIS, task_default_queue=canvas.ours_queue)
            stack.callback(close_celery, client)
            made = Side(request.param, client, celery, "celeriac", celery.exceptions.ChordError, canvas.space)
        else:
            ours = tasks.build_celeriac(REDIS, task_default_queue=canvas.celery_queue)
            stack.callback(ours.close)
            made = Side(request.param, ours, celeriac, "celery", ChordError, canvas.space)
        try:
            yield made
        finally:
            canvas.ids += made.ids


# -- chains and groups ------------------------------------------------------------------------------


def test_chain_of_three(side: Side) -> None:
    add, mul = tasks.ADD, tasks.MUL
    result = side.keep((side.sig(add, 1, 2) | side.sig(add, 3) | side.sig(mul, 10)).apply_async())
    assert result.get(timeout=WAIT) == 60
    assert result.parent.get(timeout=WAIT) == 6
    assert result.parent.parent.get(timeout=WAIT) == 3


def test_group_of_ten(side: Side) -> None:
    result = side.keep(side.canvas.group(side.sig(tasks.ADD, i, i) for i in range(10)).apply_async())
    assert result.get(timeout=WAIT) == [2 * i for i in range(10)]
    assert len(result.results) == 10


def test_chord_of_ten(side: Side) -> None:
    ledger, counter = side.space.name("ledger"), side.space.name("counter")
    header = [side.sig(tasks.PART, i, ledger) for i in range(10)]
    result = side.keep(side.canvas.chord(header, side.sig(tasks.BODY, counter)).apply_async())
    assert result.get(timeout=WAIT) == {"sum": 45, "runs": 1, "kind": side.worker_kind}
    assert result.parent.get(timeout=WAIT) == list(range(10))
    parts = side.space.ledger(ledger)
    assert sorted(p["value"] for p in parts) == list(range(10))
    assert {p["kind"] for p in parts} == {side.worker_kind}


def test_chain_with_a_group_becomes_a_chord(side: Side) -> None:
    """``add | group | tsum``: the group and the step after it travel as a ``celery.chord``."""
    group = side.canvas.group(side.sig(tasks.ADD, i) for i in range(3))
    workflow = side.canvas.chain(side.sig(tasks.ADD, 1, 1), group, side.sig(tasks.TSUM))
    result = side.keep(workflow.apply_async())
    assert result.get(timeout=WAIT) == 2 + 3 + 4
    assert result.parent.get(timeout=WAIT) == [2, 3, 4]


def test_group_of_chains(side: Side) -> None:
    chains = [side.sig(tasks.ADD, i, i) | side.sig(tasks.MUL, 2) for i in range(4)]
    result = side.keep(side.canvas.group(chains).apply_async())
    assert result.get(timeout=WAIT) == [0, 4, 8, 12]


def test_chord_of_chains(side: Side) -> None:
    chains = [side.sig(tasks.ADD, i, i) | side.sig(tasks.MUL, 2) for i in range(4)]
    result = side.keep(side.canvas.chord(chains, side.sig(tasks.TSUM)).apply_async())
    assert result.get(timeout=WAIT) == 0 + 4 + 8 + 12


def test_a_chain_ending_in_a_group_in_a_chord_header_gives_the_body_the_groups_list(side: Side) -> None:
    """Celery's client freezes the group's tasks into the chord (each reports to it) and saves the
    header's shape; the body gets the group's results as one list, in its place."""
    fan_out = side.canvas.group(side.sig(tasks.ADD, 1), side.sig(tasks.ADD, 2))
    member = side.canvas.chain(side.sig(tasks.ADD, 20, 20), fan_out)
    header = [member, side.sig(tasks.ADD, 3, 3)]
    result = side.keep(side.canvas.chord(header, side.sig(tasks.IDENT)).apply_async())
    assert result.get(timeout=WAIT) == [[41, 42], 6]


# -- chunks, map, starmap ---------------------------------------------------------------------------


def test_chunks(side: Side) -> None:
    result = side.keep(side.task(tasks.ADD).chunks([(i, i) for i in range(10)], 3).apply_async())
    assert result.get(timeout=WAIT) == [[0, 2, 4], [6, 8, 10], [12, 14, 16], [18]]


def test_map_and_starmap(side: Side) -> None:
    mapped = side.keep(side.task(tasks.TSUM).map([[1, 2], [3, 4, 5]]).apply_async())
    starmapped = side.keep(side.task(tasks.ADD).starmap([(1, 2), (3, 4)]).apply_async())
    assert mapped.get(timeout=WAIT) == [3, 12]
    assert starmapped.get(timeout=WAIT) == [3, 7]


# -- errors and callbacks ---------------------------------------------------------------------------


def _wait_ready(result: Any) -> None:
    deadline = time.monotonic() + WAIT
    while not result.ready():
        assert time.monotonic() < deadline, f"{result.id} never became ready"
        time.sleep(0.02)


def test_chord_with_a_failing_header_task_fails_its_body(side: Side) -> None:
    """The body never runs; its result is a ChordError naming the failed task, in each side's class."""
    counter = side.space.name("counter")
    header = [side.sig(tasks.ADD, 1, 1), side.sig(tasks.FAIL, "x"), side.sig(tasks.ADD, 2, 2)]
    result = side.keep(side.canvas.chord(header, side.sig(tasks.BODY, counter)).apply_async())
    _wait_ready(result)
    failed_id = result.parent.results[1].id
    assert result.state == "FAILURE"
    assert type(result.result) is side.chord_error
    assert failed_id in str(result.result) and "ValueError" in str(result.result)
    # Celery's get() re-raises a failed parent's own error first; the body's error is the ChordError.
    get: Callable[..., Any] = result.get
    kwargs = {"follow_parents": False} if side.worker_kind == "celeriac" else {}
    with pytest.raises(side.chord_error):
        get(timeout=WAIT, **kwargs)
    assert side.space.client.get(counter) is None
    stored = side.space.raw_result(result.id)["result"]
    assert (stored["exc_module"], stored["exc_type"]) == ("celery.exceptions", "ChordError")


def test_link_and_link_error_callbacks(side: Side) -> None:
    ledger = side.space.name("ledger")
    done = side.keep(side.task(tasks.ADD).apply_async((2, 3), link=side.sig(tasks.RECORD, ledger)))
    failed = side.keep(side.task(tasks.FAIL).apply_async(("x",), link_error=side.sig(tasks.ERRBACK, ledger)))
    assert done.get(timeout=WAIT) == 5
    with pytest.raises(ValueError, match="fail"):
        failed.get(timeout=WAIT)
    entries = side.space.wait_ledger(ledger, 2)
    time.sleep(0.2)  # a duplicate callback would show up now
    entries = side.space.ledger(ledger)
    assert sorted(str(e["value"]) for e in entries) == sorted(["5", failed.id])
    assert {e["kind"] for e in entries} == {side.worker_kind}


# -- a chord shared by both kinds of worker -----------------------------------------------------------


@pytest.mark.parametrize("client_kind", ["celery", "celeriac"])
def test_mixed_chord_body_runs_exactly_once(canvas: Canvas, client_kind: str) -> None:
    """A Celery worker and ours consume one queue; the header is split between them; the body runs once."""
    space, queue = canvas.space, canvas.mixed_queue
    ledger, counter = space.name("ledger"), space.name("counter")
    size = 30
    with ExitStack() as stack:
        worker_app = tasks.build_celeriac(REDIS, task_default_queue=queue)
        stack.callback(worker_app.close)
        stack.enter_context(start_worker(worker_app, queues=[queue], concurrency=2, prefetch_multiplier=1))
        if client_kind == "celery":
            client: Any = tasks.build_celery(REDIS, task_default_queue=queue)
            stack.callback(close_celery, client)
            make_chord: Any = celery.chord
        else:
            client = tasks.build_celeriac(REDIS, task_default_queue=queue)
            stack.callback(client.close)
            make_chord = celeriac.chord
        part = client.tasks[tasks.PART]
        header = [part.s(i, ledger, 0.03) for i in range(size)]
        result = make_chord(header, client.tasks[tasks.BODY].s(counter)).apply_async()
        canvas.ids += [result.id, result.parent.id, *(r.id for r in result.parent.results)]
        outcome = result.get(timeout=WAIT * 2)
        time.sleep(0.5)  # a second run of the body would show up now
    parts = space.ledger(ledger)
    assert sorted(p["value"] for p in parts) == list(range(size)), "every header task ran once"
    ran_by = Counter(p["kind"] for p in parts)
    assert ran_by["celery"] > 0 and ran_by["celeriac"] > 0, ran_by
    assert outcome["sum"] == sum(range(size))
    assert int(space.client.get(counter) or 0) == 1
    assert outcome["runs"] == 1
