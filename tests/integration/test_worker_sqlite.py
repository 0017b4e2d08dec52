"""The worker as users run it: a real `celeriac worker` process on the embedded SQLite broker."""

from __future__ import annotations

import time

import pytest

from celeriac.exceptions import NotRegistered, TimeLimitExceeded
from celeriac.protocol import Message
from tests.integration import appmod
from tests.integration.conftest import ledger

pytestmark = pytest.mark.slow


def test_kill_9_loses_nothing(app, start_worker, sqlite_env):
    results = [appmod.work.delay(i, 0.02) for i in range(200)]
    worker = start_worker("-c", "2", "-P", "processes")
    deadline = time.monotonic() + 30
    while len(ledger(sqlite_env)) < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.kill()
    done_before = len(ledger(sqlite_env))
    assert 0 < done_before < 200, "the kill must land while tasks are queued and running"
    start_worker("-c", "2", "-P", "processes", name="w2")
    assert [r.get(timeout=60) for r in results] == list(range(200))
    ran = ledger(sqlite_env)
    assert set(ran) == {r.id for r in results}
    # at-least-once: only what was running at the kill may run twice
    assert sum(ran.values()) - 200 <= 2


def test_one_hour_countdown_survives_restart_and_stays_in_the_broker(app, start_worker):
    later = appmod.add.apply_async((1, 2), countdown=3600)
    now = appmod.add.delay(2, 2)
    worker = start_worker("-c", "1", "-P", "threads")
    assert now.get(timeout=30) == 4

    async def waiting() -> int:
        return await app.broker().size("celery")

    # size() counts messages that nobody holds; the delayed one is still there, not leased to the worker
    assert app.run(waiting()) == 1
    assert worker.terminate() == 0
    start_worker("-c", "1", "-P", "threads", name="w2")
    assert app.run(waiting()) == 1
    assert later.state == "PENDING"


def test_hard_time_limit_kills_only_its_child(app, start_worker):
    worker = start_worker("-c", "2", "-P", "processes")
    hung = appmod.hang.delay(30)
    slow = appmod.work.delay(7, 1.5)
    with pytest.raises(TimeLimitExceeded):
        hung.get(timeout=20)
    assert slow.get(timeout=20) == 7
    assert appmod.add.delay(1, 1).get(timeout=20) == 2
    assert worker.proc.poll() is None


def test_sigterm_drains_running_tasks_and_exits_0(app, start_worker):
    worker = start_worker("-c", "2", "-P", "processes")
    running = [appmod.work.delay(i, 1.0) for i in range(2)]
    waiting = [appmod.work.delay(i, 0) for i in range(2, 6)]
    worker.wait_for("received", timeout=20)
    time.sleep(0.3)
    assert worker.terminate() == 0
    assert [r.get(timeout=5) for r in running] == [0, 1]
    # what had not started went back to the broker and runs on the next worker
    start_worker("-c", "2", "-P", "threads", name="w2")
    assert [r.get(timeout=20) for r in waiting] == [2, 3, 4, 5]


BAD_MESSAGES = {
    "2-element body": (b"[[1, 2], {}]", {"task": "tests.integration.appmod.add"}, "without the third item"),
    "undecodable body": (b"{not json", {"task": "tests.integration.appmod.add"}, "JSON"),
    "unknown task": (b"[[1, 2], {}, {}]", {"task": "no.such.task"}, "unknown task"),
    "wrong argument count": (b"[[1], {}, {}]", {"task": "tests.integration.appmod.add"}, "wrong arguments"),
}


def test_bad_messages_are_dead_lettered_and_the_worker_keeps_serving(app, start_worker):
    async def send_bad() -> None:
        broker = app.broker()
        for n, (body, headers, _) in enumerate(BAD_MESSAGES.values()):
            headers = {"lang": "py", "id": f"bad-{n}", **headers}
            await broker.publish(
                "celery", Message(body=body, headers=headers, properties={"correlation_id": f"bad-{n}"})
            )
        oversized = b'[["' + b"x" * 2_000_000 + b'"], {}, {}]'
        await broker.publish(
            "celery",
            Message(
                body=oversized,
                headers={"lang": "py", "task": "tests.integration.appmod.add", "id": "bad-big"},
            ),
        )

    app.run(send_bad())
    start_worker("-c", "1", "-P", "threads")
    assert appmod.add.delay(20, 22).get(timeout=30) == 42

    async def dead() -> list:
        return await app.broker().dead_letters("celery")

    deadline = time.monotonic() + 10
    letters = app.run(dead())
    while len(letters) < 5 and time.monotonic() < deadline:
        time.sleep(0.1)
        letters = app.run(dead())
    reasons = " | ".join(d.reason for d in letters)
    assert len(letters) == 5, reasons
    for _, _, expected in BAD_MESSAGES.values():
        assert expected.lower() in reasons.lower()
    assert "over the task_message_max_bytes limit" in reasons
    # a caller waiting on a bad message's id gets an error, not a hang
    with pytest.raises(NotRegistered):
        app.AsyncResult("bad-2").get(timeout=5)
    assert appmod.add.delay(1, 1).get(timeout=30) == 2


def test_demo_command_runs_end_to_end():
    """The README's first command: retries, a failure, a countdown and async tasks on real processes."""
    import subprocess
    import sys

    from tests.integration.conftest import ROOT

    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "demo", "-n", "100"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "demo passed" in done.stdout


def test_a_task_in_a_child_process_sends_tasks(app, start_worker):
    start_worker("-c", "2", "-P", "processes")
    parent = appmod.spawner.delay(21)
    child_id = parent.get(timeout=30)
    assert app.AsyncResult(child_id).get(timeout=30) == 42
    assert [c.id for c in parent.children] == [child_id]


def test_task_log_lines_reach_the_worker_log_with_task_name_and_id(app, start_worker):
    worker = start_worker("-c", "1", "-P", "processes", "-l", "INFO")
    result = appmod.chatty.delay()
    result.get(timeout=30)
    worker.wait_for(f"tests.integration.appmod.chatty[{result.id}]: hello from a task", timeout=10)


def test_sigterm_to_the_whole_process_group_is_a_warm_shutdown(app, start_worker):
    """systemd's default sends SIGTERM to every process of the unit: children must not die of it."""
    import os
    import signal

    worker = start_worker("-c", "2", "-P", "processes")
    running = [appmod.work.delay(i, 1.0) for i in range(2)]
    worker.wait_for("received", timeout=20)
    time.sleep(0.3)
    os.killpg(worker.proc.pid, signal.SIGTERM)
    assert worker.proc.wait(30) == 0
    assert [r.get(timeout=5) for r in running] == [0, 1]
