"""The seam between middleware and worker: the fate a middleware gives a message is what the worker
does with it, before the task runs (``after_fetch``, ``before_start``) and after (``after_outcome``)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from celeriac import states
from celeriac.app import Celeriac
from celeriac.brokers.base import DeadLetter
from celeriac.exceptions import TaskRevokedError
from celeriac.middleware import Fate, Middleware, Skip, WorkItem, default_middleware
from celeriac.protocol.message import TaskCall
from celeriac.testing import start_worker
from celeriac.worker import Worker
from celeriac.worker.pools.base import Outcome


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def dead_letters(app: Celeriac) -> list[DeadLetter]:
    async def read() -> list[DeadLetter]:
        return await app.broker().dead_letters()

    return asyncio.run(read())


def waiting(app: Celeriac) -> int:
    async def read() -> int:
        return await app.broker().size("celery")

    return asyncio.run(read())


def idle(app: Celeriac, worker: Worker) -> bool:
    """Nothing waits in the queue and the worker handles no message."""
    return waiting(app) == 0 and not worker._waiting and not worker._running


class Recorder(Middleware):
    """Records what the worker tells the middleware after the hook under test."""

    def __init__(self) -> None:
        self.abandoned: list[tuple[str, str, BaseException]] = []
        self.outcomes: list[tuple[str, Fate]] = []
        self.lock = threading.Lock()

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append((outcome.status, item.fate))

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        with self.lock:
            self.abandoned.append((call.id, status, exc))


class SettleOnFetch(Middleware):
    """Settles the n-th fetched message (from 1) of every task with ``fate``."""

    def __init__(self, fate: Fate, *, times: int = 1, **settle: Any) -> None:
        self.fate, self.times, self.settle = fate, times, settle
        self.deliveries: list[int] = []

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        for item in items:
            self.deliveries.append(item.delivery.deliveries)
            if len(self.deliveries) <= self.times:
                item.settle(self.fate, f"settled {self.fate.name} by a test", **self.settle)


def echo_task(app: Celeriac, runs: list[int]) -> Any:
    @app.task
    def echo(x: int) -> int:
        runs.append(x)
        return x

    return echo


def test_a_message_settled_acked_on_fetch_does_not_run_and_what_waits_on_it_is_told(
    celeriac_app: Celeriac,
) -> None:
    runs: list[int] = []
    echo = echo_task(celeriac_app, runs)
    revoked = TaskRevokedError("revoked by a test")
    recorder = Recorder()
    settle = SettleOnFetch(Fate.ACK, abandon=(states.REVOKED, revoked))
    with start_worker(celeriac_app, middleware=[settle, *default_middleware(), recorder]) as worker:
        sent = echo.delay(1)
        eventually(lambda: bool(recorder.abandoned))
        eventually(lambda: idle(celeriac_app, worker))
        assert recorder.abandoned == [(sent.id, states.REVOKED, revoked)]
        assert runs == [] and recorder.outcomes == []
        assert dead_letters(celeriac_app) == []
        assert worker.stats["received"] == 1 and worker.stats["succeeded"] == 0


def test_a_message_settled_dead_letter_on_fetch_is_set_aside_with_its_reason(celeriac_app: Celeriac) -> None:
    runs: list[int] = []
    echo = echo_task(celeriac_app, runs)
    with start_worker(celeriac_app, middleware=[SettleOnFetch(Fate.DEAD_LETTER), *default_middleware()]):
        echo.delay(1)
        eventually(lambda: bool(dead_letters(celeriac_app)))
    [dead] = dead_letters(celeriac_app)
    assert dead.reason == "settled DEAD_LETTER by a test"
    assert runs == []


def test_a_message_released_on_fetch_comes_back_uncounted_and_then_runs(celeriac_app: Celeriac) -> None:
    runs: list[int] = []
    echo = echo_task(celeriac_app, runs)
    settle = SettleOnFetch(Fate.RELEASE)
    with start_worker(celeriac_app, middleware=[settle, *default_middleware()]):
        assert echo.delay(7).get(timeout=10) == 7
    assert settle.deliveries == [1, 1]  # released: the first delivery did not count
    assert runs == [7]


def test_later_after_fetch_hooks_see_only_the_items_still_to_run(celeriac_app: Celeriac) -> None:
    echo = echo_task(celeriac_app, [])
    first, second = SettleOnFetch(Fate.ACK), SettleOnFetch(Fate.ACK, times=0)
    with start_worker(celeriac_app, middleware=[first, second, *default_middleware()]):
        sent = echo.delay(1)
        eventually(lambda: bool(first.deliveries))
        eventually(lambda: waiting(celeriac_app) == 0)
        assert second.deliveries == []
        assert sent.state == states.PENDING


def test_skip_from_before_start_settles_the_message_with_its_fate(celeriac_app: Celeriac) -> None:
    runs: list[int] = []
    echo = echo_task(celeriac_app, runs)

    class Refuse(Middleware):
        async def before_start(self, worker: Worker, item: WorkItem) -> None:
            raise Skip(Fate.DEAD_LETTER, "refused before it started")

    with start_worker(celeriac_app, middleware=[Refuse(), *default_middleware()]):
        echo.delay(1)
        eventually(lambda: bool(dead_letters(celeriac_app)))
    assert [d.reason for d in dead_letters(celeriac_app)] == ["refused before it started"]
    assert runs == []


def test_a_run_settled_requeue_does_not_count_and_runs_again(celeriac_app: Celeriac) -> None:
    runs: list[int] = []
    echo = echo_task(celeriac_app, runs)
    followed: list[int] = []

    @celeriac_app.task
    def follow(x: int) -> None:
        followed.append(x)

    deliveries: list[int] = []

    class RequeueFirstRun(Middleware):
        async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
            if item.call.id == "the-echo":
                deliveries.append(item.delivery.deliveries)
                if item.delivery.deliveries == 1:
                    item.settle(Fate.REQUEUE, "lost by a test")

    # Before Results and Continuation, as the worker's own requeue of a lost run comes before them.
    with start_worker(celeriac_app, middleware=[RequeueFirstRun(), *default_middleware()]) as worker:
        sent = echo.apply_async((3,), link=follow.s(), task_id="the-echo")
        assert sent.get(timeout=10) == 3
        eventually(lambda: bool(followed))
        eventually(lambda: idle(celeriac_app, worker))
        assert worker.stats["requeued"] == 1
    assert runs == [3, 3]
    assert deliveries == [1, 2]  # requeued: counted towards broker_max_deliveries
    assert followed == [3]  # the lost run sent no callback


def test_a_run_whose_finishing_fails_is_final_and_the_rest_still_finish_it(
    celeriac_app: Celeriac, caplog: pytest.LogCaptureFixture
) -> None:
    runs: list[int] = []
    echo = echo_task(celeriac_app, runs)
    recorder = Recorder()

    class BrokenFinish(Middleware):
        async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
            raise RuntimeError("a bug in a middleware")

    with start_worker(celeriac_app, middleware=[recorder, BrokenFinish(), *default_middleware()]) as worker:
        assert echo.delay(5).get(timeout=10) == 5  # the middleware after the broken one still stored it
        eventually(lambda: idle(celeriac_app, worker))
        assert worker.stats["requeued"] == 0
    assert runs == [5]  # the outcome was reached: the task is never run again for it
    assert recorder.outcomes == [(states.SUCCESS, Fate.RUN)]
    assert "internal error in BrokenFinish after the task ran" in caplog.text


def test_a_run_settled_dead_letter_after_its_outcome_is_set_aside(celeriac_app: Celeriac) -> None:
    echo = echo_task(celeriac_app, [])

    class Quarantine(Middleware):
        async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
            item.settle(Fate.DEAD_LETTER, "quarantined after its run")

    with start_worker(celeriac_app, middleware=[*default_middleware(), Quarantine()]):
        assert echo.delay(2).get(timeout=10) == 2
        eventually(lambda: bool(dead_letters(celeriac_app)))
    assert [d.reason for d in dead_letters(celeriac_app)] == ["quarantined after its run"]
    assert waiting(celeriac_app) == 0


def test_skip_needs_a_fate_that_is_not_run() -> None:
    with pytest.raises(ValueError, match="other than RUN"):
        Skip(Fate.RUN)


def test_a_worker_has_all_its_attributes_before_it_runs_and_no_writer(celeriac_app: Celeriac) -> None:
    worker = Worker(celeriac_app, pool="threads", concurrency=3)
    assert worker.broker is None and worker.backend is None
    assert worker.pool.concurrency == 3
    with pytest.raises(RuntimeError, match="not running"):
        worker.writer  # noqa: B018 - the property is what is tested


def test_a_hook_a_middleware_says_is_not_live_is_not_called_until_it_is_and_the_worker_rehooks(
    celeriac_app: Celeriac,
) -> None:
    echo = echo_task(celeriac_app, [])

    class Switched(Recorder):
        on = False

        def live(self, worker: Worker, hook: str) -> bool:
            return self.on

    switched = Switched()
    with start_worker(celeriac_app, middleware=[*default_middleware(), switched]) as worker:
        assert echo.delay(1).get(timeout=10) == 1
        switched.on = True
        assert echo.delay(2).get(timeout=10) == 2
        assert switched.outcomes == []  # its answer is kept until the worker asks again
        worker.rehook()
        assert echo.delay(3).get(timeout=10) == 3
        eventually(lambda: len(switched.outcomes) == 1)
    assert switched.outcomes == [(states.SUCCESS, Fate.RUN)]


def test_without_task_events_or_signal_receivers_their_middleware_hooks_are_not_live(
    celeriac_app: Celeriac, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celeriac import signals
    from celeriac.middleware.events import Events
    from celeriac.middleware.signals import Signals

    for signal in (signals.task_received, signals.task_revoked):  # receivers other tests left behind
        monkeypatch.setattr(signal, "_receivers", [])
    worker = Worker(celeriac_app, task_events=False)
    hooks = ("after_fetch", "on_start", "after_outcome", "on_refused", "on_abandoned")
    assert not [mw for hook in hooks for mw in worker._hooked(hook) if isinstance(mw, Events)]
    assert not [
        mw
        for hook in ("after_fetch", "on_abandoned")
        for mw in worker._hooked(hook)
        if isinstance(mw, Signals)
    ]
    worker.events.enable()  # what remote control's enable_events does: the worker asks again
    assert all(any(isinstance(mw, Events) for mw in worker._hooked(hook)) for hook in hooks)

    def receiver(**kwargs: Any) -> None:
        pass

    signals.task_received.connect(receiver)
    try:
        assert any(isinstance(mw, Signals) for mw in worker._hooked("after_fetch"))
    finally:
        signals.task_received.disconnect(receiver)
    assert not any(isinstance(mw, Signals) for mw in worker._hooked("after_fetch"))
