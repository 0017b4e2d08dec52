"""``celeriac worker --processes N``: N real worker processes under one supervisor, on a SQLite broker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.cli.main import _parser, child_argv
from celeriac.worker._supervisor import Child, Supervisor, exit_code, node_name
from tests.integration.conftest import ledger, wait_until
from tests.servers import free_port

TASKS = """
import logging
import os
import time

from celeriac import Celeriac

app = Celeriac("procapp")


@app.task(bind=True)
def whoami(self, n, seconds=0.0):
    if seconds:
        logging.getLogger("procapp").warning("running")  # the tests wait for it: the task has begun
    time.sleep(seconds)
    fd = os.open(os.environ["LEDGER_PATH"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{self.request.id} {os.getpid()}\\n".encode())
    finally:
        os.close(fd)
    return [n, self.request.hostname, os.getpid()]
"""


class Command:
    """``celeriac -A procapp worker ...`` in a session of its own, its stdout and stderr in one log."""

    def __init__(self, cwd: Path, env: dict[str, str], *args: str) -> None:
        self.log = cwd / "worker.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "celeriac", "-A", "procapp", "worker", *args],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = 30, count: int = 1) -> list[re.Match[str]]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = list(re.finditer(pattern, self.text()))
            return len(found) >= count or self.proc.poll() is not None

        wait_until(seen, timeout)
        assert len(found) >= count, f"never logged {pattern!r} {count} time(s); log:\n{self.text()}"
        return found

    def pid_of(self, node: str) -> int:
        return int(self.wait_for(rf"started {re.escape(node)} \(pid (\d+)\)")[-1][1])

    def stop(self) -> None:
        # The workers share the supervisor's process group (it is not theirs to leave).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: an orphan's zombie is gone as far as the test is concerned."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def project(tmp_path: Path, sqlite_env: dict[str, str]) -> Path:
    (tmp_path / "procapp.py").write_text(TASKS)
    return tmp_path


@pytest.fixture
def client(sqlite_env: dict[str, str]) -> Iterator[Celeriac]:
    app = Celeriac("client")  # reads the test's CELERIAC_* variables: the workers' broker and backend
    yield app
    app.close()


@pytest.fixture
def run(project: Path, sqlite_env: dict[str, str]) -> Iterator[object]:
    started: list[Command] = []

    def start(*args: str) -> Command:
        command = Command(project, sqlite_env, "-P", "threads", *args)
        started.append(command)
        return command

    yield start
    for command in started:
        command.stop()


def ready(command: Command, *nodes: str) -> None:
    for node in nodes:
        command.wait_for(rf"{re.escape(node)} \| .*{re.escape(node)} ready")


def test_node_names_keep_celerys_name_at_host_shape():
    assert node_name("celeriac@host.example", 1) == "celeriac-1@host.example"
    assert node_name("w@a@b", 12) == "w-12@a@b"
    assert node_name("solo", 2) == "solo-2"
    assert exit_code(0) == 0 and exit_code(3) == 3 and exit_code(-signal.SIGKILL) == 137


def test_a_supervised_worker_gets_the_same_options_one_process_and_its_own_name():
    argv = [
        "-A", "proj", "-b", "sqlite:///x.db", "--result-backend", "db+sqlite:///y.db",
        "worker", "-Q", "a,b", "-c", "3", "-P", "async", "-l", "DEBUG", "--processes", "4",
        "-n", "w@h", "--max-tasks-per-child", "5", "--max-memory-per-child", "1000",
        "--prefetch-multiplier", "2", "--shutdown-timeout", "2.5",
    ]  # fmt: skip
    args = _parser().parse_args(argv)
    command = child_argv(args, "w-3@h")
    assert command[:3] == [sys.executable, "-m", "celeriac"]
    again = _parser().parse_args(command[3:])
    assert vars(again) == {**vars(args), "hostname": "w-3@h", "processes": 1, "supervised": True}


def supervise_until(supervisor: Supervisor, done: Callable[[], bool]) -> int:
    """Run ``supervisor`` in this process until ``done()``, then stop it as a SIGTERM would."""

    async def main() -> int:
        running = asyncio.create_task(supervisor.arun())
        while not done():
            await asyncio.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)  # handled by the supervisor's loop, not by pytest
        return await running

    return asyncio.run(main())


@pytest.mark.parametrize(
    ("stable_after", "delays"), [(10.0, [0.1, 0.2, 0.4, 0.4]), (0.0, [0.0, 0.0, 0.0, 0.0])]
)
def test_a_worker_that_keeps_dying_young_is_started_again_later_and_later(
    tmp_path, caplog, stable_after, delays
):
    starts = tmp_path / "starts"
    code = f"import time; open({str(starts)!r}, 'a').write(f'{{time.monotonic()}}\\n'); raise SystemExit(3)"
    supervisor = Supervisor(
        [Child("c-1@test", [sys.executable, "-c", code])],
        restart_delay=0.1,
        max_restart_delay=0.4,
        stable_after=stable_after,
    )
    caplog.set_level(logging.INFO, "celeriac.supervisor")

    def started() -> list[float]:
        return [float(t) for t in starts.read_text().split()] if starts.exists() else []

    assert supervise_until(supervisor, lambda: len(started()) >= 5) in (0, 3)
    said = [r.getMessage() for r in caplog.records if "died" in r.getMessage()]
    assert all(m.startswith("c-1@test (pid ") and "exit code 3" in m for m in said)
    assert [float(m.rsplit(" in ", 1)[1].removesuffix(" s")) for m in said[:4]] == delays
    times = started()
    assert all(
        later - earlier >= delay for earlier, later, delay in zip(times[:4], times[1:5], delays, strict=True)
    )


def test_a_worker_that_cannot_start_stops_the_others_and_the_supervisor(caplog):
    waits_for_its_stop = "import sys; sys.stdin.buffer.read(1)"  # one stop byte on its lifeline
    supervisor = Supervisor(
        [
            Child("c-1@test", [sys.executable, "-c", "raise SystemExit(2)"]),
            Child("c-2@test", [sys.executable, "-c", waits_for_its_stop]),
        ]
    )
    caplog.set_level(logging.INFO, "celeriac.supervisor")

    async def main() -> int:
        async with asyncio.timeout(30):
            return await supervisor.arun()

    assert asyncio.run(main()) == 2
    said = [r.getMessage() for r in caplog.records]
    gave_up = "could not start (exit code 2; its error is above)"
    assert any(m.startswith("c-1@test (pid ") and gave_up in m for m in said)
    assert any(m.startswith("c-2@test (pid ") and m.endswith("exited: exit code 0") for m in said)
    assert not any("starting it again in" in m for m in said)


def test_workers_that_cannot_reach_their_broker_end_the_command(project, sqlite_env):
    env = {
        **sqlite_env,
        "CELERIAC_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}//",
        "CELERIAC_BROKER_CONNECTION_RETRY_ON_STARTUP": "false",
    }
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "procapp", "worker", "--processes", "2"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "celeriac: error: the RabbitMQ broker could not declare queue 'celery'" in done.stderr
    assert "could not start (exit code 2; its error is above)" in done.stderr
    assert "starting it again in" not in done.stderr


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_a_bad_process_count_is_a_clear_cli_error(project, sqlite_env, value):
    done = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "procapp", "worker", "--processes", value],
        cwd=project,
        env=sqlite_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert f"argument --processes: expected a whole number of at least 1, not '{value}'" in done.stderr
    assert "Traceback" not in done.stderr


def test_one_process_runs_the_worker_in_the_commands_own_process(run, client):
    command = run("-n", "solo@test", "--processes", "1")
    command.wait_for(r"solo@test ready")
    n, hostname, pid = client.send_task("procapp.whoami", [1]).get(timeout=30)
    assert (n, hostname, pid) == (1, "solo@test", command.proc.pid)
    assert "supervising" not in command.text()


def test_two_processes_share_the_queue_and_run_each_task_once(run, client, sqlite_env):
    command = run("-n", "w@test", "--processes", "2", "-c", "2")
    ready(command, "w-1@test", "w-2@test")
    pids = {command.pid_of("w-1@test"), command.pid_of("w-2@test")}
    results = [client.send_task("procapp.whoami", [n, 0.01]) for n in range(200)]
    values = [r.get(timeout=60) for r in results]
    assert [v[0] for v in values] == list(range(200))
    assert {v[1] for v in values} == {"w-1@test", "w-2@test"}
    assert {v[2] for v in values} == pids
    runs = ledger(sqlite_env)
    assert set(runs) == {r.id for r in results} and set(runs.values()) == {1}


def test_sigterm_to_the_supervisor_is_a_warm_shutdown_of_every_worker(run, client, sqlite_env):
    command = run("-n", "w@test", "--processes", "2", "-c", "1", "--shutdown-timeout", "30")
    ready(command, "w-1@test", "w-2@test")
    results = [client.send_task("procapp.whoami", [n, 3.0]) for n in range(2)]
    for node in ("w-1@test", "w-2@test"):  # one slot each: each worker runs one of them
        command.wait_for(rf"{re.escape(node)} \| .*procapp.whoami\[.*\]: running")
    began = time.monotonic()
    command.proc.send_signal(signal.SIGTERM)
    assert command.proc.wait(30) == 0, command.text()
    assert time.monotonic() - began < 15
    log = command.text()
    for node in ("w-1@test", "w-2@test"):
        assert re.search(rf"{re.escape(node)} \| .*warm shutdown: finishing 1 running task", log), log
        assert re.search(rf"{re.escape(node)} \| .*{re.escape(node)} stopped: received=1, succeeded=1", log)
    assert "cold shutdown" not in log
    assert "supervisor exits with 0" in log
    assert sorted(r.get(timeout=10)[1] for r in results) == ["w-1@test", "w-2@test"]
    assert set(ledger(sqlite_env).values()) == {1}


def test_ctrl_c_that_reaches_the_whole_process_group_counts_once(run, client, sqlite_env):
    """A terminal's Ctrl-C signals the supervisor and the workers alike: still a warm shutdown."""
    command = run("-n", "w@test", "--processes", "2", "-c", "1")
    ready(command, "w-1@test", "w-2@test")
    results = [client.send_task("procapp.whoami", [n, 2.0]) for n in range(2)]
    for node in ("w-1@test", "w-2@test"):
        command.wait_for(rf"{re.escape(node)} \| .*procapp.whoami\[.*\]: running")
    os.killpg(command.proc.pid, signal.SIGINT)
    assert command.proc.wait(30) == 0, command.text()
    assert "cold shutdown" not in command.text()
    assert sorted(r.get(timeout=10)[1] for r in results) == ["w-1@test", "w-2@test"]
    assert set(ledger(sqlite_env).values()) == {1}


def test_sigquit_ends_every_worker_at_once(run, client):
    command = run("-n", "w@test", "--processes", "2", "-c", "1")
    ready(command, "w-1@test", "w-2@test")
    pids = [command.pid_of("w-1@test"), command.pid_of("w-2@test")]
    results = [client.send_task("procapp.whoami", [n, 30.0]) for n in range(2)]
    for node in ("w-1@test", "w-2@test"):
        command.wait_for(rf"{re.escape(node)} \| .*procapp.whoami\[.*\]: running")
    command.proc.send_signal(signal.SIGQUIT)
    assert command.proc.wait(10) == 128 + signal.SIGQUIT
    assert not any(alive(pid) for pid in pids)
    assert "w-1@test (pid" in command.text() and "signal 3 (SIGQUIT)" in command.text()
    assert all(r.state == "PENDING" for r in results)  # not finished: their messages wait for a worker


def test_a_killed_worker_is_started_again_under_its_name(run, client):
    command = run("-n", "w@test", "--processes", "2")
    ready(command, "w-1@test", "w-2@test")
    killed = command.pid_of("w-1@test")
    os.kill(killed, signal.SIGKILL)
    command.wait_for(rf"w-1@test \(pid {killed}\) died after .*: signal 9 \(SIGKILL\)")
    command.wait_for(r"started w-1@test \(pid \d+\)", count=2)
    replacement = command.pid_of("w-1@test")
    assert replacement != killed and alive(replacement)
    command.wait_for(r"w-1@test \| .*w-1@test ready", count=2)
    values = [r.get(timeout=60) for r in [client.send_task("procapp.whoami", [n, 0.05]) for n in range(40)]]
    assert {v[1] for v in values} == {"w-1@test", "w-2@test"}
    assert killed not in {v[2] for v in values}


def test_workers_shut_down_by_themselves_when_the_supervisor_is_killed(run):
    command = run("-n", "w@test", "--processes", "2")
    ready(command, "w-1@test", "w-2@test")
    pids = [command.pid_of("w-1@test"), command.pid_of("w-2@test")]
    os.kill(command.proc.pid, signal.SIGKILL)
    command.proc.wait(10)
    assert wait_until(lambda: not any(alive(pid) for pid in pids), timeout=15), command.text()
    log = command.text()
    for node in ("w-1@test", "w-2@test"):
        assert f"{node} | " in log and f"{node}: the supervisor is gone; shutting down" in log
        assert re.search(rf"{re.escape(node)} \| .*{re.escape(node)} stopped: ", log), log
