"""Workflows on real worker processes (SQLite broker and backend): a large chord, a chord whose header
task dies with its worker, and the error path of a chord, each counted in a ledger the tasks write."""

from __future__ import annotations

import time
from typing import Any

import pytest

from celeriac import chord, group
from celeriac.exceptions import ChordError
from tests.integration import appmod
from tests.integration.conftest import ledger, log_of


def test_a_chord_of_1000_header_tasks(app: Any, start_worker: Any, sqlite_env: dict[str, str]) -> None:
    start_worker("-P", "threads", "-c", "8")
    result = chord([appmod.add.s(i, i) for i in range(1000)], appmod.total.s()).apply_async()
    assert result.get(timeout=120) == sum(2 * i for i in range(1000))
    assert ledger(sqlite_env)[f"body:{result.id}"] == 1


def test_a_header_task_killed_with_its_worker_completes_the_chord_once(
    app: Any, start_worker: Any, sqlite_env: dict[str, str]
) -> None:
    worker = start_worker("-P", "processes", "-c", "2")
    header = [appmod.work.s(i, 0.05) for i in range(30)] + [appmod.work.s(99, 3.0)]
    result = chord(header, appmod.total.s()).apply_async()
    slow = result.parent.results[-1].id
    deadline = time.monotonic() + 30
    while len(ledger(sqlite_env)) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    worker.kill()  # the slow header task dies mid-run with its worker; its message is redelivered
    assert ledger(sqlite_env)[slow] == 0
    start_worker("-P", "processes", "-c", "2", name="w2")
    assert result.get(timeout=60) == sum(range(30)) + 99
    ran = ledger(sqlite_env)
    assert ran[slow] == 1 and ran[f"body:{result.id}"] == 1


def test_a_failing_chain_in_a_chord_reaches_the_errback_exactly_once(
    app: Any, start_worker: Any, sqlite_env: dict[str, str]
) -> None:
    start_worker("-P", "threads", "-c", "4")
    add, boom = appmod.add, appmod.add.app.tasks["tests.integration.appmod.boom"]
    body = appmod.total.s()
    body.link_error(appmod.on_error.s())
    header = [group(add.s(1, 1) | boom.s() | add.s(1), add.s(2, 2) | add.s(2)), add.s(3, 3)]
    result = chord(header, body).apply_async()
    try:
        result.get(timeout=30)
        raise AssertionError("the chord's body must fail")
    except ChordError as exc:
        assert "boom" in str(exc)
    deadline = time.monotonic() + 10
    while ledger(sqlite_env)[f"errback:{result.id}"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a second errback, if any, would come now
    ran = ledger(sqlite_env)
    assert ran[f"errback:{result.id}"] == 1 and ran[f"body:{result.id}"] == 0


def test_a_follow_up_that_cannot_be_sent_never_runs_its_task_again(
    app: Any, start_worker: Any, sqlite_env: dict[str, str]
) -> None:
    worker = start_worker("-P", "processes", "-c", "2")
    callback = appmod.add.s(1).set(priority=999)  # out of range: sending it fails for good
    callback_id = callback.freeze().id
    sig = appmod.work.s(5)
    sig.link(callback)
    result = sig.apply_async()
    assert result.get(timeout=30) == 5
    with pytest.raises(ValueError, match="priority"):
        app.AsyncResult(callback_id).get(timeout=30)
    chained = (appmod.work.s(6) | appmod.add.s(1).set(priority=999) | appmod.add.s(2)).apply_async()
    with pytest.raises(ValueError, match="priority"):
        chained.get(timeout=30)
    time.sleep(1.5)  # past the lease (2 s in these tests): a requeued run would be under way by now
    ran = ledger(sqlite_env)
    assert ran[result.id] == 1
    assert sum(ran.values()) == 2
    log = log_of(worker)
    assert "could not be sent" in log and "dead-lettered" not in log and "goes back to the queue" not in log


def test_what_a_pool_child_cannot_send_as_it_is_still_reaches_the_caller(app: Any, start_worker: Any) -> None:
    start_worker("-P", "processes", "-c", "2")
    returned = appmod.returns_signature.delay().get(timeout=30)
    assert returned["task"] == "celery.chain" and returned["kwargs"]["tasks"][0]["task"] == appmod.add.name
    with pytest.raises(Exception, match="foo and bar") as failed:
        appmod.fails_unpickleably.delay().get(timeout=30)
    assert type(failed.value).__name__ == "NeedsTwo"  # its record, not "cannot be read from the pool"
    assert appmod.replaced_nesting.delay(2).get(timeout=30) == 2  # each replace counts one level deeper
