"""Remote control of an in-process worker on the memory broker: inspect, revoke, limits, queues,
custom commands, destinations, and messages the worker must survive."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.control.mailbox import COMMANDS, command_message
from celeriac.exceptions import TaskRevokedError
from celeriac.memory import backend as memory_backend
from celeriac.memory import broker as memory_broker
from celeriac.protocol.message import Message
from celeriac.testing import start_worker
from celeriac.worker import Worker

RELEASE = threading.Event()
#: Naming the node makes a call return as soon as it answered, rather than after the timeout.
W1 = ["w1@mem"]


@pytest.fixture
def app() -> Iterator[Celeriac]:
    store = f"memory://control-{uuid.uuid4().hex[:12]}"
    app = Celeriac("ctl", broker=store, backend=store)

    @app.task(name="ctl.add", rate_limit="100/s")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="ctl.wait")
    def wait(seconds: float) -> str:
        RELEASE.wait(seconds)
        return "done"

    @app.control.inspect_command()
    def answer(state: Any, question: str = "", **_: Any) -> dict[str, str]:
        return {"ok": f"{state.hostname} says 42 to {question}"}

    RELEASE.clear()
    yield app
    RELEASE.set()
    app.close()
    memory_broker.reset(store)
    memory_backend.reset(store)


@contextlib.contextmanager
def released() -> Iterator[None]:
    """Let the blocked ``ctl.wait`` tasks finish when the block ends, so the worker stops at once."""
    try:
        yield
    finally:
        RELEASE.set()


def listening(worker: Worker) -> Worker:
    assert worker.control is not None
    deadline = time.monotonic() + 10
    while not worker.control.listening.is_set():
        assert time.monotonic() < deadline, "remote control never subscribed"
        time.sleep(0.01)
    return worker


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_ping_registered_stats_and_a_custom_command(app: Celeriac) -> None:
    with start_worker(app, hostname="w1@mem") as worker:
        listening(worker)
        assert app.control.inspect(W1).ping() == {"w1@mem": {"ok": "pong"}}
        assert app.control.ping(W1) == [{"w1@mem": {"ok": "pong"}}]
        registered = app.control.inspect(W1).registered()
        assert registered == {"w1@mem": ["ctl.add [rate_limit=100/s]", "ctl.wait"]}
        stats = app.control.inspect(W1).stats()["w1@mem"]
        assert stats["pid"] == worker.pid
        assert stats["pool"]["max-concurrency"] == 2
        assert stats["prefetch_count"] == 2
        assert isinstance(stats["rusage"]["maxrss"], int)
        assert app.send_task("ctl.add", (1, 2)).get(timeout=10) == 3
        assert app.control.inspect(W1).stats()["w1@mem"]["total"] == {"ctl.add": 1}
        assert app.control.inspect(W1).request("answer", question="q") == {
            "w1@mem": {"ok": "w1@mem says 42 to q"}
        }
        assert app.control.inspect(W1).clock()["w1@mem"]["clock"] > 0
        assert "celeriac" in app.control.inspect(W1).report()["w1@mem"]["ok"]
        assert app.control.inspect(W1).conf()["w1@mem"]["broker_url"].startswith("memory://")


def test_active_reserved_and_query_task(app: Celeriac) -> None:
    with released(), start_worker(app, hostname="w1@mem", concurrency=1, prefetch_multiplier=2) as worker:
        listening(worker)
        running = app.send_task("ctl.wait", (30,))
        waiting = app.send_task("ctl.wait", (30,))
        wait_until(lambda: len(worker.active_items()) == 1 and len(worker.waiting_items()) == 1)
        [active] = app.control.inspect(W1).active()["w1@mem"]
        assert active["id"] == running.id
        assert active["name"] == active["type"] == "ctl.wait"
        assert active["args"] == [30] and active["kwargs"] == {}
        assert active["hostname"] == "w1@mem"
        assert active["time_start"] > time.time() - 60
        assert active["acknowledged"] is False
        assert active["delivery_info"]["routing_key"] == "celery"
        assert active["worker_pid"] == worker.pid
        [reserved] = app.control.inspect(W1).reserved()["w1@mem"]
        assert reserved["id"] == waiting.id and reserved["time_start"] is None
        assert app.control.inspect(W1).query_task(running.id, waiting.id)["w1@mem"] == {
            running.id: ["active", active | {"time_start": active["time_start"]}],
            waiting.id: ["reserved", reserved],
        }
        RELEASE.set()
        assert running.get(timeout=10) == waiting.get(timeout=10) == "done"


def test_revoke_by_stamped_headers_skips_the_stamped_tasks(app: Celeriac) -> None:
    add = app.tasks["ctl.add"]
    with start_worker(app, hostname="w1@mem") as worker:
        listening(worker)
        replies = app.control.revoke_by_stamped_headers({"tenant": ["bad", "worse"]}, W1, reply=True)
        assert replies == [
            {"w1@mem": {"ok": "headers {'tenant': ['bad', 'worse']} flagged as revoked, but not terminated"}}
        ]
        skipped = add.s(1, 1).stamp(tenant="worse").apply_async()
        kept = add.s(2, 2).stamp(tenant="good").apply_async()
        assert kept.get(timeout=10) == 4
        with pytest.raises(TaskRevokedError):
            skipped.get(timeout=10)
        assert skipped.state == states.REVOKED
        # Celery's command line form: "stamp=value" strings.
        app.control.broadcast("revoke_by_stamped_headers", {"headers": ["tenant=cli"]}, W1, reply=True)
        with pytest.raises(TaskRevokedError):  # Celery's direct form of a stamped call
            app.send_task("ctl.add", (3, 3), stamped_headers=["tenant"], tenant="cli").get(timeout=10)
        assert worker.total["ctl.add"] == 1


def test_a_revoke_leaves_the_state_of_a_task_started_elsewhere(app: Celeriac) -> None:
    from celeriac.backends.base import ResultMeta

    started, progress, waiting = (f"rv-{n}-{uuid.uuid4().hex[:6]}" for n in range(3))

    async def store() -> None:
        await app.backend().store([ResultMeta(started, "STARTED"), ResultMeta(progress, "PROGRESS")])

    app.run(store())
    with start_worker(app, hostname="w1@mem") as worker:
        listening(worker)
        # as Celery's client revokes: no record of its own, the workers write it
        app.control.broadcast("revoke", {"task_id": [started, progress, waiting]}, W1, reply=True)
        assert app.AsyncResult(waiting).state == states.REVOKED
        assert app.AsyncResult(started).state == "STARTED" and app.AsyncResult(progress).state == "PROGRESS"


def test_revoke_drops_held_and_eta_tasks_at_once(app: Celeriac) -> None:
    # ETA messages on the queue (as Celery clients send them), held by the worker until due.
    app.conf.update(worker_eta_horizon=60.0, broker_transport_options={"eta_on_queue": True})
    with released(), start_worker(app, hostname="w1@mem", concurrency=1, prefetch_multiplier=4) as worker:
        listening(worker)
        blocker = app.send_task("ctl.wait", (30,))
        held = app.send_task("ctl.add", (1, 1))
        later = app.send_task("ctl.add", (2, 2), countdown=30)
        wait_until(lambda: len(worker.waiting_items()) == 2)
        assert [e["request"]["id"] for e in app.control.inspect(W1).scheduled()["w1@mem"]] == [later.id]
        replies = app.control.revoke([held.id, later.id], W1, reply=True)
        assert replies is not None and list(replies[0]) == ["w1@mem"]
        assert replies[0]["w1@mem"]["ok"].endswith("flagged as revoked")
        wait_until(lambda: not worker.waiting_items())
        assert held.state == later.state == states.REVOKED
        assert set(app.control.inspect(W1).revoked()["w1@mem"]) == {held.id, later.id}
        queued = app.send_task("ctl.add", (3, 3))
        app.control.revoke(queued.id)
        RELEASE.set()
        assert blocker.get(timeout=10) == "done"
        assert app.send_task("ctl.add", (4, 4)).get(timeout=10) == 8
        assert queued.state == states.REVOKED
        assert worker.total["ctl.add"] == 1


def test_destination_limits_who_answers(app: Celeriac) -> None:
    with start_worker(app, hostname="w1@mem") as w1, start_worker(app, hostname="w2@mem") as w2:
        listening(w1), listening(w2)
        assert set(app.control.inspect().ping()) == {"w1@mem", "w2@mem"}
        assert app.control.inspect(destination=["w2@mem"]).ping() == {"w2@mem": {"ok": "pong"}}
        assert app.control.inspect(destination="w1@mem").ping() == {"ok": "pong"}
        assert app.control.inspect(pattern="w2@*", matcher="glob").ping() == {"w2@mem": {"ok": "pong"}}
        assert app.control.inspect(destination=["nobody@mem"], timeout=0.3).ping() is None


def test_limits_queues_and_pool_commands(app: Celeriac) -> None:
    with start_worker(app, hostname="w1@mem") as worker:
        listening(worker)

        def one(command: str, **arguments: Any) -> Any:
            return app.control.broadcast(command, arguments, W1, reply=True)[0]["w1@mem"]  # type: ignore[index]

        assert one("rate_limit", task_name="ctl.add", rate_limit="5/m") == {
            "ok": "new rate limit set successfully"
        }
        assert app.tasks["ctl.add"].rate_limit == "5/m"
        assert one("rate_limit", task_name="ctl.add", rate_limit=0) == {
            "ok": "rate limit disabled successfully"
        }
        assert one("rate_limit", task_name="nope", rate_limit="1/s") == {"error": "unknown task"}
        assert one("rate_limit", task_name="ctl.add", rate_limit="fast")["error"].startswith(
            "Invalid rate limit string: ValueError("
        )
        assert one("time_limit", task_name="ctl.wait", soft=1, hard=2) == {
            "ok": "time limits set successfully"
        }
        assert (app.tasks["ctl.wait"].soft_time_limit, app.tasks["ctl.wait"].time_limit) == (1, 2)
        assert one("add_consumer", queue="extra") == {"ok": "add consumer extra"}
        assert worker.queues == ["celery", "extra"]
        names = [q["name"] for q in app.control.inspect(W1).active_queues()["w1@mem"]]
        assert names == ["celery", "extra"]
        assert app.send_task("ctl.add", (5, 5), queue="extra").get(timeout=10) == 10
        assert one("cancel_consumer", queue="extra") == {"ok": "no longer consuming from extra"}
        assert worker.queues == ["celery"]
        assert one("pool_grow", n=2) == {"ok": "pool will grow"}
        stats = app.control.inspect(W1).stats()["w1@mem"]  # type: ignore[index]
        assert (stats["pool"]["max-concurrency"], stats["pool"]["threads"]) == (4, 4)
        assert stats["prefetch_count"] == 4 and worker.concurrency == 4
        assert one("pool_shrink", n=3) == {"ok": "pool will shrink"}
        assert app.control.inspect(W1).stats()["w1@mem"]["pool"]["max-concurrency"] == 1  # type: ignore[index]
        assert "at least one slot" in one("pool_shrink")["error"]
        assert worker.concurrency == 1
        assert one("autoscale", max=3, min=1) == {"error": "ValueError('Autoscale not enabled')"}
        assert one("enable_events") == {"ok": "task events enabled"}
        assert worker.events.enabled
        assert one("enable_events") == {"ok": "task events already enabled"}
        assert one("disable_events") == {"ok": "task events disabled"}
        assert not worker.events.enabled


def test_unknown_commands_and_bad_messages_leave_the_worker_serving(app: Celeriac) -> None:
    with start_worker(app, hostname="w1@mem") as worker:
        listening(worker)
        assert app.control.broadcast("no_such_cmd", destination=W1, reply=True) == [
            {"w1@mem": {"error": "KeyError('no_such_cmd')"}}
        ]

        async def send_garbage() -> None:
            broker = app.broker()
            await broker.broadcast(COMMANDS, Message(body=b"{not json", headers={}))
            await broker.broadcast(COMMANDS, Message(body=b'["a list"]', headers={}))
            await broker.broadcast(
                COMMANDS, Message(body=b"\x80\x04", headers={}, content_type="application/x-python-serialize")
            )
            expired = command_message("shutdown", expires=time.time() - 5)
            await broker.broadcast(COMMANDS, expired)

        app.run(send_garbage())
        assert app.control.inspect(W1).ping() == {"w1@mem": {"ok": "pong"}}
        assert app.send_task("ctl.add", (1, 1)).get(timeout=10) == 2


def test_shutdown_stops_the_worker_without_a_reply(app: Celeriac) -> None:
    with start_worker(app, hostname="w1@mem") as worker:
        listening(worker)
        assert app.control.broadcast("shutdown", reply=True, timeout=0.5) == []
        wait_until(lambda: worker._stopped.is_set())


@pytest.mark.parametrize("pool", ["threads", "async", "solo"])
def test_terminate_stops_a_running_task_on_the_pools_without_processes(app: Celeriac, pool: str) -> None:
    @app.task(name="ctl.spin")
    def spin(seconds: float) -> str:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.01)  # short sleeps: the exception raised in the thread lands between two
        return "finished"

    @app.task(name="ctl.asleep")
    async def asleep(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "finished"

    with start_worker(app, pool=pool, concurrency=1, hostname="w1@mem") as worker:
        listening(worker)
        for task in (spin, asleep):
            result = task.delay(30)
            wait_until(lambda: app.control.inspect(W1).active()["w1@mem"])  # type: ignore[index]
            began = time.monotonic()
            replies = app.control.revoke(result.id, W1, terminate=True, signal="SIGUSR1", reply=True)
            assert replies == [{"w1@mem": {"ok": f"terminate: {result.id}"}}]
            wait_until(lambda: result.state == states.REVOKED, 5)  # noqa: B023
            assert time.monotonic() - began < 1.0
            wait_until(lambda: not app.control.inspect(W1).active()["w1@mem"])  # type: ignore[index]
        assert app.send_task("ctl.add", (1, 2)).get(timeout=10) == 3  # the slot serves again


def test_autoscale_grows_under_backlog_and_shrinks_when_quiet(app: Celeriac) -> None:
    app.conf.worker_autoscaler_keepalive = 1.0
    with start_worker(app, autoscale=(4, 1), hostname="w1@mem") as worker, released():
        listening(worker)
        assert worker.concurrency == 1
        results = [app.send_task("ctl.wait", (30,)) for _ in range(4)]
        wait_until(lambda: worker.concurrency == 4 and worker.pool.busy == 4, 10)
        stats = app.control.inspect(W1).stats()["w1@mem"]  # type: ignore[index]
        assert stats["autoscaler"] == {"max": 4, "min": 1, "current": 4, "qty": 4}
        assert stats["pool"]["max-concurrency"] == 4
        one = app.control.broadcast("pool_grow", {"n": 1}, W1, reply=True)[0]["w1@mem"]  # type: ignore[index]
        assert one == {"error": "pool_grow is not supported with autoscale. Adjust autoscale range instead."}
        RELEASE.set()
        assert [r.get(timeout=10) for r in results] == ["done"] * 4
        wait_until(lambda: worker.concurrency == 1, 10)  # quiet for a keepalive: back to the minimum
        replies = app.control.broadcast("autoscale", {"max": 6, "min": 2}, W1, reply=True)
        assert replies == [{"w1@mem": {"ok": "autoscale now max=6 min=2"}}]
        assert worker.concurrency == 2  # brought up to the new minimum at once
        replies = app.control.broadcast("autoscale", {"max": 1, "min": 3}, W1, reply=True)
        assert "min <= max" in replies[0]["w1@mem"]["error"]  # type: ignore[index]
