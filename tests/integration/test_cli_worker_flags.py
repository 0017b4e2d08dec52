"""``celeriac worker`` with the flags of a Celery deployment: a systemd-style detached worker that starts
and stops through its pid file, and a Procfile-style command line full of Celery's flags."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import TimeLimitExceeded
from tests.integration.conftest import wait_until
from tests.integration.test_cli import celeriac

APP = """
from celeriac import Celery
app = Celery('flagsapp')
@app.task
def add(x, y):
    return x + y
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_detached_worker_starts_and_stops_through_its_pid_file(tmp_path: Path) -> None:
    (tmp_path / "flagsapp.py").write_text(APP)
    db = tmp_path / "d.sqlite3"
    env = {"CELERIAC_BROKER_URL": f"sqlite:///{db}", "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{db}"}
    pidfile, logfile = tmp_path / "w1.pid", tmp_path / "w1.log"
    args = [
        "-A",
        "flagsapp",
        "worker",
        "-D",
        "-n",
        "w1@%h",
        "--pidfile",
        "%n.pid",
        "-P",
        "threads",
        "-c",
        "1",
    ]
    started = time.monotonic()
    done = celeriac(*args, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 15  # it returned: the worker runs on in the background
    assert f"log {logfile}" in done.stderr and f"pid file {pidfile}" in done.stderr
    assert wait_until(lambda: pidfile.exists() and "ready" in logfile.read_text(), 30), logfile.read_text()
    pid = int(pidfile.read_text())
    assert _alive(pid)
    # It runs tasks, detached from this test's terminal.
    sent = celeriac("-A", "flagsapp", "call", "flagsapp.add", "-a", "[2, 3]", "--wait", cwd=tmp_path, env=env)
    assert sent.stdout.splitlines()[-1] == "5", sent.stderr
    # A second copy of the unit refuses to start and leaves the file alone.
    again = celeriac(*args, cwd=tmp_path, env=env)
    assert again.returncode == 2
    assert f"names process {pid}, which is running" in again.stderr
    assert int(pidfile.read_text()) == pid
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: not _alive(pid), 30)
    assert not pidfile.exists()  # removed on the way out
    assert "stopped" in logfile.read_text()


def test_a_celery_command_line_starts_and_says_what_it_does_instead(tmp_path: Path) -> None:
    (tmp_path / "flagsapp.py").write_text(APP)
    db = tmp_path / "c.sqlite3"
    env = {"CELERIAC_BROKER_URL": f"sqlite:///{db}", "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{db}"}
    assert (
        celeriac("-A", "flagsapp", "call", "flagsapp.add", "-a", "[1, 1]", cwd=tmp_path, env=env).returncode
        == 0
    )
    log = tmp_path / "worker.log"
    argv = shlex.split(
        "--workdir . -A flagsapp worker -E -O fair --without-gossip --without-heartbeat --statedb x.db "
        "--max-tasks-per-child 100 --time-limit 60 --soft-time-limit 50 -l INFO -Q celery,other -X other "
        "--purge --logfile worker.log --pidfile worker.pid -n worker1@%h -P threads -c 1 --umask 022"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "celeriac", *argv],
        cwd=tmp_path,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert wait_until(lambda: log.exists() and "ready" in log.read_text(), 30), log.read_text()
        assert (tmp_path / "worker.pid").read_text().strip() == str(proc.pid)
        sent = celeriac(
            "-A", "flagsapp", "call", "flagsapp.add", "-a", "[2, 2]", "--wait", cwd=tmp_path, env=env
        )
        assert sent.stdout.splitlines()[-1] == "4", sent.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    text = log.read_text()
    assert out == b""  # everything went to the log file
    assert "purged 1 message(s) from celery (--purge)" in text  # the one sent before it started
    assert "queues=celery " in text  # -X other
    for note in ("-O fair: always celeriac's behaviour", "--statedb ignored", "--without-gossip:"):
        assert text.count(note) == 1, text
    assert "succeeded" in text and "Traceback" not in text
    assert not (tmp_path / "worker.pid").exists()


def test_time_limit_flag_limits_tasks_sent_without_one(app: Any, start_worker: Any) -> None:
    """``--time-limit`` is the worker's: it applies to a task whose message names no limit."""
    from tests.integration import appmod

    start_worker("-P", "processes", "-c", "1", "--time-limit", "1.5")
    started = time.monotonic()
    with pytest.raises(TimeLimitExceeded):
        appmod.work.delay(1, 30).get(timeout=30)
    assert time.monotonic() - started < 20
    assert appmod.work.delay(2, 0).get(timeout=30) == 2  # a new child serves on
