"""Signals and progress with real ``celeriac worker`` processes: receivers run in the process that runs
the task (the pool children under ``-P processes``), a raising receiver fails nothing, and a task's
``update_state`` is read by a client while the task runs, on every kind of result backend."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import states
from tests.contract.conftest import SERVERS, _require
from tests.contract.test_rpc_backend import AMQP, require_rabbitmq
from tests.integration.conftest import WorkerProcess, log_of, wait_until
from tests.servers import RedisServer

pytestmark = pytest.mark.slow


def noted(env: dict[str, str]) -> list[dict[str, Any]]:
    """The signals the receivers of ``signalapp`` noted, in order."""
    path = Path(env["SIGNAL_LOG"])
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def sig_env(worker_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {"SIGNAL_LOG": str(tmp_path / "signals.jsonl"), "GO_PATH": str(tmp_path / "go")}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**worker_env, **values}


@pytest.fixture
def sigapp(sig_env: dict[str, str]) -> Iterator[Any]:
    from celeriac.config import Settings
    from tests.integration import signalapp

    signalapp.app.conf = Settings()  # read the test's CELERIAC_* variables
    signalapp.app._router = None
    signalapp.app._brokers.clear()
    signalapp.app._backends.clear()
    yield signalapp
    signalapp.app.close()


@pytest.fixture
def start(sig_env: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start_worker(*args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        worker = WorkerProcess(
            env or sig_env,
            ["-n", "sig@test", *args],
            tmp_path / "worker.log",
            app="tests.integration.signalapp",
        )
        started.append(worker)
        return worker.start()

    yield start_worker
    for worker in started:
        worker.stop()


@pytest.mark.parametrize("pool", ["processes", "threads"])
def test_task_signals_fire_in_the_process_that_runs_the_task_with_celerys_arguments(
    sigapp: Any, start: Callable[..., WorkerProcess], sig_env: dict[str, str], pool: str
) -> None:
    worker = start("-P", pool, "-c", "1")
    added = sigapp.add.delay(2, 3)
    assert added.get(timeout=30) == 5
    failed = sigapp.boom.delay()
    with pytest.raises(ValueError):
        failed.get(timeout=30)
    retried = sigapp.flaky.delay()
    assert retried.get(timeout=30) == "recovered"
    guarded = sigapp.guarded.delay()
    assert guarded.get(timeout=30) == "guarded"  # its task_success receiver raised
    assert worker.terminate() == 0
    assert worker.proc is not None
    parent = worker.proc.pid
    seen = noted(sig_env)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for entry in seen:
        by_name.setdefault(entry["signal"], []).append(entry)

    runner = {e["pid"] for e in by_name["task_prerun"]}
    if pool == "processes":
        assert parent not in runner and len(runner) == 1
        (child,) = runner
        assert [e["pid"] for e in by_name["worker_process_init"]] == [child]
        assert [e["given_pid"] for e in by_name["worker_process_shutdown"]] == [child]
        assert seen.index(by_name["worker_process_init"][0]) < seen.index(by_name["task_prerun"][0])
    else:
        assert runner == {parent} and "worker_process_init" not in by_name
    (child,) = runner

    prerun = next(e for e in by_name["task_prerun"] if e["task_id"] == added.id)
    assert (prerun["sender"], prerun["task"], prerun["args"], prerun["kwargs"]) == (
        sigapp.add.name,
        sigapp.add.name,
        [2, 3],
        {},
    )
    postrun = {e["task_id"]: e for e in by_name["task_postrun"]}
    assert (postrun[added.id]["retval"], postrun[added.id]["state"]) == (5, states.SUCCESS)
    assert postrun[failed.id]["state"] == states.FAILURE
    assert {e["sender"]: e["result"] for e in by_name["task_success"]} == {
        sigapp.add.name: 5,
        sigapp.flaky.name: "recovered",
        sigapp.guarded.name: "guarded",
    }
    assert [(e["task_id"], e["exception"]) for e in by_name["task_failure"]] == [
        (failed.id, "ValueError('boom')")
    ]
    assert [(e["task_id"], "again" in e["reason"]) for e in by_name["task_retry"]] == [(retried.id, True)]
    assert all(
        e["pid"] == child for n in ("task_postrun", "task_success", "task_failure") for e in by_name[n]
    )
    # the worker's own process: what it received, its start and its stop
    assert {e["task_id"] for e in by_name["task_received"]} >= {added.id, failed.id, guarded.id}
    assert {e["pid"] for n in ("task_received", "worker_ready", "worker_shutdown") for e in by_name[n]} == {
        parent
    }
    assert "filtered_out" not in by_name
    text = log_of(worker)
    assert "receiver bug in a pool process" in text and "Traceback" in text
    # get_task_logger's records name the task, in the worker's task log format
    assert f"{sigapp.add.name}[{added.id}]: adding 2 and 3" in text


def test_a_setup_logging_receiver_takes_logging_over_in_the_worker_and_its_pool_processes(
    sigapp: Any, start: Callable[..., WorkerProcess], sig_env: dict[str, str]
) -> None:
    env = {**sig_env, "SIGAPP_OWN_LOGGING": "1"}
    worker = start("-P", "processes", "-c", "1", env=env)
    added = sigapp.add.delay(1, 1)
    assert added.get(timeout=30) == 2
    assert wait_until(lambda: "OWN INFO adding 1 and 1" in log_of(worker), 10), log_of(worker)
    assert worker.terminate() == 0
    assert worker.proc is not None
    pids = {e["pid"] for e in noted(sig_env) if e["signal"] == "setup_logging"}
    assert worker.proc.pid in pids and len(pids) == 2  # the worker and its one pool process
    assert "[20" not in log_of(worker)  # none of the worker's own format ("[2026-..: INFO/...]")


async def _delete_queue(name: str) -> None:
    from celeriac.amqp.client import connect_plain

    connection = await connect_plain(AMQP, {}, what="the signals test")
    try:
        channel = await connection.channel()
        await channel.queue_delete(name)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "redis", "postgresql", "rpc"])
def progress_env(
    request: pytest.FixtureRequest,
    sig_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    redis_server: Callable[..., RedisServer],
) -> Iterator[dict[str, str]]:
    values: dict[str, str] = {}
    queue = ""
    if request.param == "redis":
        url = redis_server().url()
        values = {"CELERIAC_BROKER_URL": url, "CELERIAC_RESULT_BACKEND": url}
    elif request.param == "postgresql":
        _require("postgresql")
        values = {"CELERIAC_RESULT_BACKEND": "db+" + SERVERS["postgresql"][3]}
    elif request.param == "rpc":
        require_rabbitmq()
        queue = f"sig-it-{uuid.uuid4().hex[:10]}"
        values = {
            "CELERIAC_BROKER_URL": AMQP,
            "CELERIAC_RESULT_BACKEND": "rpc://",
            "CELERIAC_TASK_DEFAULT_QUEUE": queue,
        }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    yield {**sig_env, **values}
    if queue:
        asyncio.run(_delete_queue(queue))


def test_update_state_progress_is_visible_while_the_task_runs_in_a_pool_process(
    progress_env: dict[str, str], sigapp: Any, start: Callable[..., WorkerProcess]
) -> None:
    worker = start("-P", "processes", "-c", "1", env=progress_env)
    result = sigapp.progress.delay(3)
    assert wait_until(lambda: result.state == "PROGRESS", 20), (result.state, log_of(worker)[-3000:])
    assert result.info == {"current": 1, "total": 3}
    Path(progress_env["GO_PATH"]).touch()
    assert result.get(timeout=30) == "3 steps"
    assert (result.state, result.info) == (states.SUCCESS, "3 steps")  # the end overwrote the progress


def test_a_run_terminated_by_remote_control_sends_task_revoked_in_the_worker(
    sigapp: Any, start: Callable[..., WorkerProcess], sig_env: dict[str, str]
) -> None:
    worker = start("-P", "processes", "-c", "1")
    running = sigapp.nap.delay(60)
    assert wait_until(
        lambda: (sigapp.app.control.inspect(["sig@test"]).active() or {}).get("sig@test"), 20
    ), log_of(worker)
    assert sigapp.app.control.revoke(running.id, ["sig@test"], terminate=True, reply=True) == [
        {"sig@test": {"ok": f"terminate: {running.id}"}}
    ]
    assert wait_until(lambda: any(e["signal"] == "task_revoked" for e in noted(sig_env)), 20), log_of(worker)
    assert worker.terminate() == 0
    [revoked] = [e for e in noted(sig_env) if e["signal"] == "task_revoked"]
    assert worker.proc is not None and revoked["pid"] == worker.proc.pid  # the worker, not the child
    assert (revoked["task"], revoked["id"]) == ("tests.integration.signalapp.nap", running.id)
    assert (revoked["terminated"], revoked["expired"]) == (True, False)
    assert running.state == states.REVOKED
