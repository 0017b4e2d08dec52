"""The getting-started pages, run for real: every example, called as the pages call it.

The examples live in docs/getting-started/examples. Each test imports them afresh (module-level apps
read ``CELERIAC_*`` variables when they are made), points them at a private store, and serves them
with an in-process worker, or with the real ``celeriac`` command where the pages show one.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from celeriac import AsyncResult, Celeriac, chain
from celeriac.cli.main import main as cli
from celeriac.exceptions import (
    ConfigurationError,
    NotRegistered,
    RemoteTaskError,
    TaskRevokedError,
    TimeLimitExceeded,
)
from celeriac.testing import start_worker
from celeriac.worker import Worker
from celeriac.worker._appref import find_app

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "getting-started" / "examples"
EXAMPLE_MODULES = {"tasks", "celeryconfig", "configured", "proj", "test_proj"}


def _unload() -> None:
    """Forget the example modules (closing their apps), so the next import makes fresh apps."""
    apps: list[Celeriac] = []
    for name in list(sys.modules):
        if name.partition(".")[0] in EXAMPLE_MODULES:
            app = getattr(sys.modules.pop(name), "app", None)
            if isinstance(app, Celeriac) and app not in apps:
                apps.append(app)
    for app in apps:
        app.close()


@pytest.fixture(autouse=True)
def examples(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # no __pycache__ in docs/
    monkeypatch.syspath_prepend(str(EXAMPLES))
    for key in list(os.environ):
        if key.startswith("CELERIAC_"):
            monkeypatch.delenv(key)
    _unload()
    yield
    _unload()


@pytest.fixture
def sqlite_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One SQLite file for messages and results, given to apps made from now on."""
    db = tmp_path / "store.sqlite3"
    monkeypatch.setenv("CELERIAC_BROKER_URL", f"sqlite:///{db}")
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", f"db+sqlite:///{db}")
    return db


@pytest.fixture
def memory_store(monkeypatch: pytest.MonkeyPatch) -> str:
    """A private in-memory broker and backend, given to apps made from now on."""
    url = f"memory://docs-{uuid.uuid4().hex}"
    monkeypatch.setenv("CELERIAC_BROKER_URL", url)
    monkeypatch.setenv("CELERIAC_RESULT_BACKEND", url)
    return url


@pytest.fixture
def proj_worker(memory_store: str) -> Iterator[Worker]:
    """``celeriac -A proj worker -Q celery,hipri``, in this process."""
    from proj.celery import app

    with start_worker(app, pool="threads", queues=["celery", "hipri"]) as worker:
        yield worker


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def states_seen(result: AsyncResult[object], timeout: float = 10.0) -> list[str]:
    """Every state a result passes through until it is ready, in order, without repeats."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while not seen or seen[-1] not in ("SUCCESS", "FAILURE", "REVOKED"):
        state = result.state
        if not seen or seen[-1] != state:
            seen.append(state)
        assert time.monotonic() < deadline, f"still {state}"
        time.sleep(0.01)
    return seen


# -- the pages quote the examples as they are ---------------------------------------------------------

PAGES = sorted(EXAMPLES.parent.glob("*.md"))
QUOTE = re.compile(r"```python\n# (?P<path>[\w/]+\.py)(?: \([^)\n]*\))?\n(?P<code>.*?)```", re.DOTALL)


def test_the_pages_quote_the_example_files() -> None:
    quotes = [(page.name, m["path"], m["code"]) for page in PAGES for m in QUOTE.finditer(page.read_text())]
    assert {path for _, path, _ in quotes} >= {
        "tasks.py",
        "celeryconfig.py",
        "configured.py",
        "proj/__init__.py",
        "proj/celery.py",
        "proj/tasks.py",
        "proj/retrying.py",
        "proj/aio.py",
        "test_proj.py",
    }
    for page, path, code in quotes:
        lines = iter((EXAMPLES / path).read_text().splitlines())
        for quoted in filter(None, code.splitlines()):
            assert quoted in lines, f"{page} quotes {path} with a line it lacks (or out of order): {quoted!r}"


# -- first steps ------------------------------------------------------------------------------------


def test_first_task_on_the_embedded_sqlite_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    from tasks import add, app

    assert app.broker_url == "sqlite:///tasks.celeriac.sqlite3"
    assert app.backend_url == "db+sqlite:///tasks.celeriac.sqlite3"
    with start_worker(app, pool="threads"):
        result = add.delay(4, 4)
        assert result.get(timeout=10) == 8
        assert result.state == "SUCCESS"
        assert result.ready() and result.successful()
    assert (tmp_path / "tasks.celeriac.sqlite3").is_file()


def test_first_steps_arguments_are_checked_when_sent(memory_store: str) -> None:
    from tasks import add

    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        add.delay(4)
    with pytest.raises(TypeError, match="did you mean 'countdown'"):
        add.apply_async((4, 4), countdwn=10)


def test_ignored_results_are_not_stored(sqlite_store: Path, tmp_path: Path) -> None:
    from tasks import app, touch

    marker = tmp_path / "touched"
    with start_worker(app, pool="threads") as worker:
        result = touch.delay(str(marker))
        wait_until(lambda: worker.stats["succeeded"] == 1)
    assert marker.exists()
    assert result.state == "PENDING"


def test_a_broker_without_a_backend_keeps_no_results() -> None:
    app = Celeriac("tasks", broker=f"memory://docs-{uuid.uuid4().hex}")
    assert app.backend_url == "disabled://"
    with pytest.raises(ConfigurationError, match="no result backend is configured"):
        app.AsyncResult(str(uuid.uuid4())).get(timeout=1)
    app.close()


def test_configuration_from_a_module_and_in_code(memory_store: str) -> None:
    from configured import app, mul

    conf = app.conf
    assert (conf.task_serializer, conf.accept_content) == ("json", ["json"])
    assert conf.task_track_started is True
    assert conf.task_time_limit == 300
    assert conf.worker_concurrency == 4
    assert conf.result_extended is True
    with pytest.raises(
        ConfigurationError, match="unknown setting 'task_serialiser'; did you mean 'task_serializer'"
    ):
        app.conf.update(task_serialiser="json")
    with start_worker(app, pool="threads"):
        assert mul.delay(6, 7).get(timeout=10) == 42


def test_configuration_from_the_environment(memory_store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CELERIAC_WORKER_CONCURRENCY", "8")
    monkeypatch.setenv("CELERIAC_TASK_ALWAYS_EAGER", "true")
    from configured import app

    assert app.conf.worker_concurrency == 8  # the environment wins over celeryconfig.py
    assert app.conf.task_always_eager is True
    assert app.broker_url == memory_store

    _unload()
    monkeypatch.setenv("CELERIAC_BROKER_ULR", "sqlite:///typo.sqlite3")
    with pytest.raises(ConfigurationError, match="did you mean CELERIAC_BROKER_URL"):
        import configured  # noqa: F401


def _wait_for_line(log: Path, text: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"worker never logged {text!r}:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)


def test_first_steps_command_lines(tmp_path: Path) -> None:
    db = tmp_path / "celeriac.sqlite3"
    env = {key: value for key, value in os.environ.items() if not key.startswith("CELERIAC_")}
    env.update(
        CELERIAC_BROKER_URL=f"sqlite:///{db}",
        CELERIAC_RESULT_BACKEND=f"db+sqlite:///{db}",
        PYTHONDONTWRITEBYTECODE="1",
    )
    celeriac_cmd = [sys.executable, "-m", "celeriac"]

    def run(*args: str) -> list[str]:
        done = subprocess.run(
            [*celeriac_cmd, *args], cwd=EXAMPLES, env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [*celeriac_cmd, "-A", "tasks", "worker", "--loglevel=INFO"],
            cwd=EXAMPLES,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_line(log, " ready: pool=processes", worker, timeout=30)
        task_id, value = run("-A", "tasks", "call", "tasks.add", "-a", "[4, 4]", "--wait")
        assert value == "8"
        assert run("-A", "tasks", "result", task_id) == ["state: SUCCESS", "result: 8"]
        status = [line.split() for line in run("-A", "tasks", "status") if set(line) != {"─"}]
        assert status[1:4] == [["QUEUE", "WAITING"], ["celery", "0"], ["dead", "letters", "0"]]
        assert status[4][:3] == ["WORKER", "POOL", "CONCURRENCY"]
        assert status[5][:2] == [f"celeriac@{socket.gethostname()}", "ProcessPool"]
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            code = worker.wait(10)
    assert code == 0, log.read_text(errors="replace")
    assert f"Task tasks.add[{task_id}] succeeded" in log.read_text()


# -- next steps -------------------------------------------------------------------------------------


def test_project_layout(memory_store: str) -> None:
    app = find_app("proj")  # what `celeriac -A proj` loads
    import proj.celery

    assert app is proj.celery.app
    app.import_includes()  # what the worker does at start
    assert sorted(name for name in app.tasks if name.startswith("proj.")) == [
        "proj.aio.page_size",
        "proj.retrying.charge",
        "proj.retrying.refresh_feed",
        "proj.tasks.add",
        "proj.tasks.crunch",
        "proj.tasks.mul",
        "proj.tasks.report_failure",
        "proj.tasks.reserve",
        "proj.tasks.xsum",
    ]


def test_calling_options(proj_worker: Worker) -> None:
    from proj.celery import app
    from proj.tasks import add, mul, report_failure, reserve

    sent = time.monotonic()
    assert add.apply_async((2, 2), countdown=1).get(timeout=10) == 4
    assert time.monotonic() - sent >= 1

    sent = time.monotonic()
    when = datetime.now(UTC) + timedelta(seconds=1)
    assert add.apply_async((2, 2), eta=when).get(timeout=10) == 4
    assert time.monotonic() - sent >= 0.9

    late = add.apply_async((2, 2), countdown=1, expires=0.5)
    with pytest.raises(TaskRevokedError, match="expired"):
        late.get(timeout=10)
    assert late.state == "REVOKED"

    assert app.send_task("proj.tasks.add", args=[2, 2]).get(timeout=10) == 4

    callback = mul.s(10).set(task_id=str(uuid.uuid4()))
    assert add.apply_async((2, 2), link=callback).get(timeout=10) == 4
    assert app.AsyncResult(callback.options["task_id"]).get(timeout=10) == 40

    errback = report_failure.s().set(task_id=str(uuid.uuid4()))
    failed = reserve.apply_async(("apple", 5), link_error=errback)
    report = app.AsyncResult(errback.options["task_id"]).get(timeout=10)
    assert report == f"task {failed.id} failed: OutOfStock('apple', 5)"


def test_priority_lower_number_first(memory_store: str) -> None:
    from proj.celery import app
    from proj.tasks import add

    later = add.apply_async((1, 1), priority=9)
    sooner = add.apply_async((2, 2), priority=0)
    with start_worker(app, pool="threads", concurrency=1):
        assert (later.get(timeout=10), sooner.get(timeout=10)) == (2, 4)
    assert sooner.date_done is not None and later.date_done is not None
    assert sooner.date_done < later.date_done


def test_routing_sends_mul_to_hipri(memory_store: str) -> None:
    from proj.celery import app
    from proj.tasks import add, mul

    with start_worker(app, pool="threads", queues=["celery"]):
        assert add.delay(2, 2).get(timeout=10) == 4
        product = mul.delay(2, 3)
        time.sleep(0.5)
        assert product.state == "PENDING"  # nobody serves hipri yet
    with start_worker(app, pool="threads", queues=["hipri"]):
        assert product.get(timeout=10) == 6


def test_retries(proj_worker: Worker) -> None:
    from proj.retrying import charge, refresh_feed

    result = charge.delay("A-17")
    seen = states_seen(result)
    assert "RETRY" in seen, seen
    # The second run is STARTED (proj tracks it) then SUCCESS; STARTED may pass between two samples.
    assert seen[seen.index("RETRY") :] in (["RETRY", "SUCCESS"], ["RETRY", "STARTED", "SUCCESS"]), seen
    assert result.get() == "order A-17 charged after 1 retries"

    assert refresh_feed.delay("https://example.com/feed").get(timeout=10) == (
        "https://example.com/feed refreshed"
    )

    gave_up = refresh_feed.apply(args=["https://unreachable.example/feed"])
    assert gave_up.state == "FAILURE"
    with pytest.raises(ConnectionError, match="does not answer"):
        gave_up.get()


def test_states_and_results(proj_worker: Worker, monkeypatch: pytest.MonkeyPatch) -> None:
    from proj.celery import app
    from proj.tasks import OutOfStock, crunch, reserve

    assert app.AsyncResult(str(uuid.uuid4())).state == "PENDING"

    running = crunch.delay(30)
    assert states_seen(running)[-2:] == ["STARTED", "SUCCESS"]  # task_track_started=True in proj
    assert running.get() == "all 30 steps done"

    result = reserve.delay("apple", 5)
    with pytest.raises(OutOfStock) as raised:
        result.get(timeout=10)
    assert raised.value.args == ("apple", 5)
    assert result.failed() and result.state == "FAILURE"
    assert isinstance(result.get(propagate=False), OutOfStock)
    assert result.traceback is not None and "OutOfStock" in result.traceback

    # A caller that never imported proj.tasks gets a stand-in of the same name; nothing is imported.
    monkeypatch.delitem(sys.modules, "proj.tasks")
    elsewhere = app.AsyncResult(result.id).get(propagate=False)
    assert isinstance(elsewhere, RemoteTaskError) and not isinstance(elsewhere, OutOfStock)
    assert type(elsewhere).__name__ == "OutOfStock" and elsewhere.args == ("apple", 5)
    assert "proj.tasks" not in sys.modules


def test_async_tasks_and_async_callers(proj_worker: Worker) -> None:
    from proj.aio import main, page_size

    assert asyncio.run(main()) == [1700, 1800, 3]
    assert page_size.delay("https://a.example").get(timeout=10) == 1700


@pytest.mark.parametrize("pool", ["async", "solo"])
def test_other_pools(memory_store: str, pool: str) -> None:
    from proj.aio import page_size
    from proj.celery import app
    from proj.tasks import add

    with start_worker(app, pool=pool, queues=["celery", "hipri"]):
        assert add.delay(1, 2).get(timeout=10) == 3
        assert page_size.delay("https://a.example").get(timeout=10) == 1700


def test_time_limits(proj_worker: Worker) -> None:
    from proj.tasks import crunch

    soft = crunch.apply_async((1000,), soft_time_limit=0.3, time_limit=5)
    assert soft.get(timeout=10).startswith("stopped early after ")

    hard = crunch.apply_async((1000,), time_limit=0.3)
    with pytest.raises(TimeLimitExceeded):
        hard.get(timeout=10)


def test_chains(proj_worker: Worker) -> None:
    from proj.tasks import add, mul, xsum

    flow = add.s(2, 2) | mul.s(8)
    assert isinstance(flow, chain)
    result = flow.delay()
    assert result.get(timeout=10) == 32
    assert result.parent is not None and result.parent.get(timeout=10) == 4

    assert (add.s(4, 4) | mul.s(2) | xsum.si([1, 2, 3])).apply_async().get(timeout=10) == 6


def test_revoke(proj_worker: Worker) -> None:
    from proj.tasks import add

    result = add.apply_async((2, 2), countdown=1)
    result.revoke()
    assert result.state == "REVOKED"
    wait_until(lambda: proj_worker.stats["received"] >= 1)  # the worker got it when due, and dropped it
    time.sleep(0.2)
    assert result.state == "REVOKED"
    assert proj_worker.stats["succeeded"] == 0
    with pytest.raises(TaskRevokedError):
        result.get(timeout=1)
    result.revoke(terminate=True)  # broadcast: nothing runs it, so there is nothing to stop
    assert result.state == "REVOKED"


def test_bad_messages_are_dead_lettered(proj_worker: Worker, capsys: pytest.CaptureFixture[str]) -> None:
    from proj.celery import app

    unknown = app.send_task("proj.tasks.nope", args=[1])
    with pytest.raises(NotRegistered):
        unknown.get(timeout=10)
    assert unknown.traceback is not None
    assert unknown.traceback.startswith("unknown task 'proj.tasks.nope': not registered on this worker")

    wrong = app.send_task("proj.tasks.add", args=[1])  # send_task does not check: add needs two
    with pytest.raises(TypeError, match="missing a required argument: 'y'"):
        wrong.get(timeout=10)
    assert wrong.traceback is not None and wrong.traceback.startswith("wrong arguments for proj.tasks.add")

    assert cli(["-A", "proj", "status"]) == 0
    lines = [line.split() for line in capsys.readouterr().out.splitlines() if set(line) != {"─"}]
    assert lines[1:4] == [["QUEUE", "WAITING"], ["celery", "0"], ["dead", "letters", "2"]]
    assert lines[4][0] == "WORKER" and len(lines) == 6  # the in-process worker answers a ping


def test_warm_shutdown_finishes_running_tasks(memory_store: str) -> None:
    from proj.celery import app
    from proj.tasks import crunch

    with start_worker(app, pool="threads"):
        running = crunch.delay(50)
        wait_until(lambda: running.state == "STARTED")
    assert running.get(timeout=1) == "all 50 steps done"


def test_testing_example_passes(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CELERIAC_")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_proj.py"],
        cwd=EXAMPLES,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "5 passed" in done.stdout
