"""Signals sent by an in-process worker (threads, async and solo pools) and by the client, with Celery's
senders and keyword arguments; ``update_state`` progress read while the task runs."""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac import Celeriac, signals, states
from celeriac._request import Context
from celeriac.exceptions import ExceptionInfo, NotRegistered
from celeriac.middleware import Middleware, default_middleware
from celeriac.protocol.message import Message
from celeriac.signals import Signal
from celeriac.testing import start_worker
from celeriac.worker import tracer
from celeriac.worker._logging import setup_logging

Record = tuple[Any, dict[str, Any]]


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celeriac]:
    url = f"memory://signals-{request.node.name}"
    app = Celeriac("sigs", broker=url, backend=url)
    yield app
    app.close()


@pytest.fixture
def record() -> Iterator[Callable[[Signal], list[Record]]]:
    """Connects a recorder to a signal for the test's length; returns what it sees, (sender, kwargs)."""
    connected: list[tuple[Signal, Callable[..., None]]] = []

    def connect(sig: Signal) -> list[Record]:
        seen: list[Record] = []

        def receiver(sender: Any, signal: Signal, **kwargs: Any) -> None:
            seen.append((sender, kwargs))

        sig.connect(receiver, weak=False)
        connected.append((sig, receiver))
        return seen

    yield connect
    for sig, receiver in connected:
        sig.disconnect(receiver)


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("pool", ["threads", "solo", "async"])
def test_a_tasks_run_sends_prerun_success_and_postrun_with_celerys_arguments(
    app: Celeriac, record: Callable[[Signal], list[Record]], pool: str
) -> None:
    @app.task(name="sigs.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="sigs.aadd")
    async def aadd(x: int, y: int) -> int:
        return x + y

    prerun, success, postrun = (
        record(signals.task_prerun),
        record(signals.task_success),
        record(signals.task_postrun),
    )
    received = record(signals.task_received)
    with start_worker(app, pool=pool, concurrency=1) as worker:
        first = add.delay(2, 3)
        assert first.get(timeout=10) == 5
        second = aadd.delay(1, 1)
        assert second.get(timeout=10) == 2
        eventually(lambda: len(postrun) == 2)
    assert prerun[0] == (add, {"task_id": first.id, "task": add, "args": [2, 3], "kwargs": {}})
    assert success[0] == (add, {"result": 5})
    assert postrun[0] == (
        add,
        {"task_id": first.id, "task": add, "args": [2, 3], "kwargs": {}, "retval": 5, "state": "SUCCESS"},
    )
    assert prerun[1][0] is aadd and success[1] == (aadd, {"result": 2})
    sender, kwargs = received[0]
    assert sender is worker and isinstance(kwargs["request"], Context)
    assert (kwargs["request"].id, kwargs["request"].task, kwargs["request"].args) == (
        first.id,
        "sigs.add",
        [2, 3],
    )


def test_failure_and_retry_send_their_signals(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    @app.task(name="sigs.boom")
    def boom() -> None:
        raise ValueError("boom")

    @app.task(name="sigs.flaky", bind=True, max_retries=1, default_retry_delay=0)
    def flaky(self: Any) -> str:
        if self.request.retries == 0:
            raise self.retry(exc=KeyError("again"))
        return "done"

    failure, retry, postrun = (
        record(signals.task_failure),
        record(signals.task_retry),
        record(signals.task_postrun),
    )
    with start_worker(app):
        failed = boom.delay()
        with pytest.raises(ValueError):
            failed.get(timeout=10)
        assert flaky.delay().get(timeout=10) == "done"
        eventually(lambda: len(postrun) == 3)
    sender, kwargs = failure[0]
    assert sender is boom and kwargs["task_id"] == failed.id
    assert isinstance(kwargs["exception"], ValueError) and (kwargs["args"], kwargs["kwargs"]) == ([], {})
    assert kwargs["traceback"] is not None and "ValueError: boom" in kwargs["einfo"]
    sender, kwargs = retry[0]
    assert sender is flaky and isinstance(kwargs["request"], Context) and kwargs["request"].retries == 0
    assert "again" in str(kwargs["reason"]) and "KeyError" in kwargs["einfo"]
    assert sorted(kw["state"] for _, kw in postrun) == ["FAILURE", "RETRY", "SUCCESS"]


def test_a_receiver_that_raises_is_logged_and_the_task_still_succeeds(
    app: Celeriac, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="sigs.ok")
    def ok() -> str:
        return "fine"

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    for sig in (signals.task_prerun, signals.task_success, signals.task_postrun, signals.task_received):
        sig.connect(broken)
    try:
        with caplog.at_level(logging.ERROR, logger="celeriac.signals"), start_worker(app):
            assert ok.delay().get(timeout=10) == "fine"
            assert ok.delay().get(timeout=10) == "fine"  # the worker lives on
    finally:
        for sig in (signals.task_prerun, signals.task_success, signals.task_postrun, signals.task_received):
            sig.disconnect(broken)
    assert caplog.text.count("receiver bug") >= 6 and "Traceback" in caplog.text


def test_the_worker_sends_its_life_and_unknown_rejected_and_revoked_messages(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    @app.task(name="sigs.noop")
    def noop() -> None:
        pass

    lives = {
        name: record(getattr(signals, name))
        for name in ("celeryd_init", "celeryd_after_setup", "worker_init", "worker_ready", "worker_shutdown")
    }
    unknown, rejected, revoked = (
        record(signals.task_unknown),
        record(signals.task_rejected),
        record(signals.task_revoked),
    )
    with start_worker(app) as worker:
        missing = app.send_task("sigs.missing", (1,))
        expired = noop.apply_async(expires=0.0)
        asyncio.run(_publish_garbage(app))
        eventually(lambda: bool(unknown and rejected and revoked))
        noop.delay().get(timeout=10)
    assert lives["celeryd_init"][0][0] == worker.hostname
    assert lives["celeryd_init"][0][1]["instance"] is worker and "options" in lives["celeryd_init"][0][1]
    assert lives["celeryd_after_setup"][0] == (worker.hostname, {"instance": worker, "conf": app.conf})
    for name in ("worker_init", "worker_ready", "worker_shutdown"):
        assert lives[name] == [(worker, {})], name
    sender, kwargs = unknown[0]
    assert sender is worker and (kwargs["name"], kwargs["id"]) == ("sigs.missing", missing.id)
    assert isinstance(kwargs["exc"], NotRegistered) and isinstance(kwargs["message"], Message)
    assert rejected[0][0] is worker and rejected[0][1]["message"].body == b"not json"
    sender, kwargs = revoked[0]
    assert sender is noop and kwargs["request"].id == expired.id
    assert (kwargs["terminated"], kwargs["signum"], kwargs["expired"]) == (False, None, True)


async def _publish_garbage(app: Celeriac) -> None:
    message = Message(body=b"not json", headers={"task": "sigs.noop", "id": "garbage-1"})
    await app.broker().publish("celery", message)
    await app.aclose()


def test_publishing_sends_before_and_after_task_publish_with_the_tasks_name(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    @app.task(name="sigs.mul")
    def mul(x: int, y: int) -> int:
        return x * y

    before, after = record(signals.before_task_publish), record(signals.after_task_publish)

    def stamp(headers: dict[str, Any], **kwargs: Any) -> None:
        headers["x-stamp"] = "yes"  # a change made before publishing goes on the wire

    signals.before_task_publish.connect(stamp, sender="sigs.mul", weak=False)
    try:
        with start_worker(app):
            result = mul.delay(6, 7)
            assert result.get(timeout=10) == 42
    finally:
        signals.before_task_publish.disconnect(stamp, sender="sigs.mul")
    sender, kwargs = before[0]
    assert sender == "sigs.mul" and kwargs["headers"]["id"] == result.id
    assert kwargs["body"] == [[6, 7], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]
    assert (kwargs["exchange"], kwargs["routing_key"], kwargs["declare"]) == ("", "celery", [])
    assert set(kwargs["retry_policy"]) >= {"max_retries", "interval_start"}
    sender, kwargs = after[0]
    assert sender == "sigs.mul" and kwargs["headers"]["x-stamp"] == "yes"
    assert kwargs["routing_key"] == "celery"


@pytest.mark.parametrize("pool", ["threads", "async"])
def test_update_state_progress_is_read_while_the_task_runs_and_its_end_overwrites_it(
    app: Celeriac, pool: str
) -> None:
    go = threading.Event()

    @app.task(name="sigs.steps", bind=True)
    def steps(self: Any, total: int) -> str:
        self.update_state(state="PROGRESS", meta={"current": 1, "total": total})
        go.wait(10)
        return "done"

    @app.task(name="sigs.asteps", bind=True)
    async def asteps(self: Any, total: int) -> str:
        await self.aupdate_state(state="PROGRESS", meta={"current": 1, "total": total})
        await asyncio.to_thread(go.wait, 10)
        return "done"

    task = asteps if pool == "async" else steps
    with start_worker(app, pool=pool):
        result = task.delay(5)
        eventually(lambda: result.state == "PROGRESS")
        assert result.info == {"current": 1, "total": 5}
        go.set()
        assert result.get(timeout=10) == "done"
        assert result.state == states.SUCCESS and result.info == "done"


def test_update_state_needs_a_state_and_a_task_id_and_stores_nothing_when_eager(app: Celeriac) -> None:
    @app.task(name="sigs.eager", bind=True)
    def eager(self: Any) -> str:
        self.update_state(state="PROGRESS", meta={"current": 1})
        return "ok"

    assert eager.apply().get() == "ok"
    with pytest.raises(ValueError, match="needs a task id"):
        eager.update_state(state="PROGRESS")
    with pytest.raises(ValueError, match="needs a state"):
        eager.update_state(task_id="some-id")
    eager.update_state(task_id="other", state="CUSTOM", meta={"n": 1})  # any task's record
    other = app.AsyncResult("other")
    assert (other.state, other.info) == ("CUSTOM", {"n": 1})


def test_failure_einfo_is_an_exception_info_that_reads_as_its_traceback(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    @app.task(name="sigs.boom2")
    def boom() -> None:
        raise ValueError("boom")

    failure = record(signals.task_failure)
    with start_worker(app):
        with pytest.raises(ValueError):
            boom.delay().get(timeout=10)
        eventually(lambda: bool(failure))
    einfo = failure[0][1]["einfo"]
    assert isinstance(einfo, ExceptionInfo) and not einfo.internal
    assert einfo.exception is failure[0][1]["exception"] and einfo.type is ValueError
    assert einfo.tb is failure[0][1]["traceback"]
    assert str(einfo) == einfo.traceback and einfo.traceback.startswith("Traceback (most recent call last)")
    assert "ValueError: boom" in einfo and "ValueError: boom" in str(einfo)
    assert einfo.exc_info == (ValueError, einfo.exception, einfo.tb)


def test_a_failure_of_celeriac_itself_sends_task_internal_error(
    app: Celeriac, record: Callable[[Signal], list[Record]], monkeypatch: pytest.MonkeyPatch
) -> None:
    @app.task(name="sigs.fine")
    def fine(x: int) -> int:
        return x

    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug in celeriac")

    monkeypatch.setattr(tracer, "_finish", broken)  # stands for a bug around the task's run
    internal, failure = record(signals.task_internal_error), record(signals.task_failure)
    with start_worker(app):
        result = fine.delay(7)
        with pytest.raises(RuntimeError, match="a bug in celeriac"):
            result.get(timeout=10)
    [(sender, kwargs)] = internal
    assert sender is fine and kwargs["task_id"] == result.id
    assert (kwargs["args"], kwargs["kwargs"]) == ([7], {})
    assert isinstance(kwargs["request"], Context) and kwargs["request"].id == result.id
    assert isinstance(kwargs["exception"], RuntimeError) and kwargs["traceback"] is not None
    assert isinstance(kwargs["einfo"], ExceptionInfo) and kwargs["einfo"].internal
    assert "a bug in celeriac" in kwargs["einfo"]
    assert failure == []  # the task itself did not fail


def test_the_worker_sends_import_modules_and_shutting_down(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    imports, shutting = record(signals.import_modules), record(signals.worker_shutting_down)
    with start_worker(app) as worker:
        assert imports == [(app, {})]
        assert shutting == []
    assert shutting == [(worker.hostname, {"sig": None, "how": "Warm", "exitcode": 0})]


def test_a_terminated_task_sends_task_revoked_with_terminated_and_its_signal(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    @app.task(name="sigs.asleep")
    async def asleep() -> None:
        await asyncio.sleep(30)

    revoked = record(signals.task_revoked)
    with start_worker(app, pool="async", hostname="sig@mem") as worker:
        assert worker.control is not None
        eventually(worker.control.listening.is_set)
        result = asleep.delay()
        eventually(lambda: bool(worker.active_items()))
        app.control.revoke(result.id, ["sig@mem"], terminate=True, signal="SIGUSR1", reply=True)
        eventually(lambda: result.state == states.REVOKED)
        eventually(lambda: bool(revoked))
    [(sender, kwargs)] = revoked
    assert sender is asleep and kwargs["request"].id == result.id
    assert (kwargs["terminated"], kwargs["signum"], kwargs["expired"]) == (True, signal.SIGUSR1, False)


def test_setting_up_logging_sends_after_setup_task_logger(record: Callable[[Signal], list[Record]]) -> None:
    task_logger = record(signals.after_setup_task_logger)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        setup_logging("INFO", "%(message)s", "%(task_name)s %(message)s", hijack=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    [(sender, kwargs)] = task_logger
    assert sender is None and kwargs["logger"] is logging.getLogger()
    assert (kwargs["loglevel"], kwargs["format"]) == (logging.INFO, "%(task_name)s %(message)s")
    assert (kwargs["logfile"], kwargs["colorize"]) == (None, False)


def test_a_failure_of_the_worker_finishing_a_task_sends_task_internal_error(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    @app.task(name="sigs.once")
    def once() -> str:
        return "ran"

    class BrokenOnce(Middleware):
        """Fails finishing the first task it sees, as a bug in a middleware would."""

        failed = False

        async def after_outcome(self, worker: Any, item: Any, outcome: Any) -> None:
            if not self.failed:
                self.failed = True
                raise RuntimeError("a bug while finishing")

    internal = record(signals.task_internal_error)
    with start_worker(app, middleware=[*default_middleware(), BrokenOnce()]):
        result = once.delay()
        assert result.get(timeout=10) == "ran"  # its message went back to the queue, and it ran again
    [(sender, kwargs)] = internal
    assert sender is once and kwargs["task_id"] == result.id and kwargs["request"].id == result.id
    assert isinstance(kwargs["exception"], RuntimeError) and kwargs["einfo"].internal


def test_a_receiver_connected_while_the_worker_runs_gets_task_received(
    app: Celeriac, record: Callable[[Signal], list[Record]]
) -> None:
    @app.task(name="sigs.late")
    def late() -> None:
        pass

    with start_worker(app):
        late.delay().get(timeout=10)  # no receiver yet: the worker does not even look
        received = record(signals.task_received)
        sent = late.delay()
        sent.get(timeout=10)
    assert [kwargs["request"].id for _, kwargs in received] == [sent.id]
