"""``celeriac inspect``, ``celeriac control`` and ``celeriac status`` against real worker processes on the
embedded SQLite broker: readable tables by default, JSON with ``--json``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, log_of, wait_until

pytestmark = pytest.mark.slow

APP = "tests.integration.appmod"


def celeriac(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", APP, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def rows(table: str) -> list[list[str]]:
    """The data rows of a table printed into a pipe: after the header's rule, before the count."""
    lines = table.splitlines()
    start = next(n for n, line in enumerate(lines) if set(line) == {"─"}) + 1
    return [line.split() for line in lines[start:] if line and not line.endswith("replied")]


def test_inspect_and_control_from_the_shell(app: Any, start_worker: Any, worker_env: dict[str, str]) -> None:
    worker = start_worker("-P", "threads", "-c", "1", name="cli1")
    assert wait_until(lambda: app.control.inspect(["cli1@test"], timeout=0.5).ping(), 20)
    pinged = celeriac(worker_env, "inspect", "ping", "-d", "cli1@test")
    assert pinged.returncode == 0, pinged.stderr
    assert pinged.stdout.splitlines()[0].split() == ["NODE", "STATUS", "REPLY"]
    assert pinged.stdout.splitlines()[2].split() == ["cli1@test", "OK", "pong"]
    assert pinged.stdout.splitlines()[-1] == "1 node(s) replied"
    registered = celeriac(worker_env, "inspect", "registered", "-d", "cli1@test", "--json")
    assert "tests.integration.appmod.add" in json.loads(registered.stdout)["cli1@test"]
    answered = celeriac(worker_env, "inspect", "answer", "-d", "cli1@test", "--json")  # the app's own
    assert json.loads(answered.stdout) == {"cli1@test": {"ok": "42 to "}}
    extra = celeriac(worker_env, "inspect", "answer", "life", "-d", "cli1@test")
    assert extra.returncode == 2 and "at most 0 argument(s)" in extra.stderr
    limited = celeriac(
        worker_env, "control", "rate_limit", "tests.integration.appmod.add", "10/m", "-d", "cli1@test"
    )
    assert rows(limited.stdout)[0] == ["cli1@test", "OK", "new", "rate", "limit", "set", "successfully"]
    revoked = celeriac(worker_env, "control", "revoke", "id-1", "id-2", "-d", "cli1@test", "--json")
    [reply] = json.loads(revoked.stdout)
    assert reply["cli1@test"]["ok"].endswith("flagged as revoked")
    assert celeriac(worker_env, "control", "nope").returncode == 2
    status = celeriac(worker_env, "status")
    assert status.returncode == 0, status.stderr
    assert [line.split()[0] for line in status.stdout.splitlines() if line.startswith("cli1@test")] == [
        "cli1@test"
    ]
    assert celeriac(worker_env, "control", "shutdown", "-d", "cli1@test").stdout == "shutdown sent\n"
    assert worker.proc.wait(20) == 0
    nobody = celeriac(worker_env, "inspect", "ping", "-t", "0.3")
    assert nobody.returncode == 1 and "no worker replied" in nobody.stderr


def test_tables_show_what_two_workers_do(app: Any, start_worker: Any, worker_env: dict[str, str]) -> None:
    busy = start_worker("-P", "threads", "-c", "2", "-Q", "celery,busy", name="tab1")
    start_worker("-P", "processes", "-c", "1", name="tab2")
    for node in ("tab1@test", "tab2@test"):
        assert wait_until(lambda node=node: app.control.inspect([node], timeout=0.5).ping(), 20)
    both = "tab1@test,tab2@test"
    running = app.send_task("tests.integration.appmod.work", (5, 30), queue="busy")  # tab1's alone
    assert wait_until(lambda: (app.control.inspect(["tab1@test"]).active() or {}).get("tab1@test"), 20), (
        log_of(busy)
    )
    active = celeriac(worker_env, "inspect", "active", "-d", both)
    assert active.stdout.splitlines()[0].split() == ["NODE", "ID", "TASK", "ARGS", "KWARGS", "STARTED", "PID"]
    found = rows(active.stdout)
    assert len(found) == 2 and sorted(row[0] for row in found) == ["tab1@test", "tab2@test"]
    [row] = [row for row in found if running.id in row]
    assert row[2:6] == ["tests.integration.appmod.work", "[5,", "30]", "{}"]
    assert [" ".join(r[1:]) for r in found if running.id not in r] == ["- none -"]
    stats = celeriac(worker_env, "inspect", "stats", "-d", both)
    by_node = {row[0]: row for row in rows(stats.stdout)}
    assert by_node["tab1@test"][3:5] == ["ThreadPool", "2"] and by_node["tab2@test"][3:5] == [
        "ProcessPool",
        "1",
    ]
    assert all(row[-1] == "sqlite" for row in by_node.values())
    registered = rows(celeriac(worker_env, "inspect", "registered", "-d", "tab1@test").stdout)
    assert registered[0][0] == "tab1@test" and ["tests.integration.appmod.hang"] in registered
    failed = celeriac(worker_env, "control", "rate_limit", "no.such.task", "1/s", "-d", "tab2@test")
    assert rows(failed.stdout) == [["tab2@test", "ERROR", "unknown", "task"]]
    status = celeriac(worker_env, "status")
    lines = status.stdout.splitlines()
    assert lines[0].startswith("broker: sqlite:///")
    assert lines[1].split() == ["QUEUE", "WAITING"] and lines[3].split() == ["celery", "0"]
    assert lines[4].split() == ["dead", "letters", "0"]
    busy_queue = celeriac(worker_env, "status", "-Q", "busy,celery").stdout.splitlines()
    assert busy_queue[3].split() == ["busy", "0"] and busy_queue[4].split() == ["celery", "0"]
    workers = {line.split()[0]: line.split() for line in lines if line.startswith("tab")}
    assert workers["tab1@test"][1:4] == ["ThreadPool", "2", "1"]  # pool, concurrency, the one running
    assert workers["tab2@test"][1:4] == ["ProcessPool", "1", "0"]
    as_json = json.loads(celeriac(worker_env, "status", "--json").stdout)
    assert as_json["queues"] == {"celery": 0} and as_json["dead_letters"] == 0
    assert [task["id"] for task in as_json["workers"]["tab1@test"]["active"]] == [running.id]
    app.control.revoke(running.id, terminate=True)


def test_events_dump_as_text_lines(
    app: Any, start_worker: Any, worker_env: dict[str, str], tmp_path: Path
) -> None:
    out = tmp_path / "events.txt"
    with out.open("wb") as sink:
        dump = subprocess.Popen(
            [sys.executable, "-m", "celeriac", "-A", APP, "events", "--format", "text"],
            cwd=ROOT,
            env=worker_env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        assert wait_until(lambda: "listening" in out.read_text(), 20), out.read_text()
        start_worker("-P", "threads", "-c", "1", "-E", name="ev1")
        result = app.send_task("tests.integration.appmod.add", (2, 3))
        assert result.get(timeout=20) == 5

        def lines() -> list[str]:
            return out.read_text().splitlines()

        assert wait_until(lambda: any(f"task-succeeded uuid={result.id}" in line for line in lines()), 20)
        mine = [line for line in lines() if line.startswith("ev1@test [")]
        kinds = [line.split("] ", 1)[1].split()[0] for line in mine]
        assert kinds[0] == "worker-online"
        assert {"task-received", "task-started", "task-succeeded"} <= set(kinds)
        [received] = [line for line in mine if "task-received" in line]
        assert f"uuid={result.id} name=tests.integration.appmod.add args=(2, 3)" in received
        [done] = [line for line in mine if "task-succeeded" in line]
        assert f"uuid={result.id} name=tests.integration.appmod.add result=5 runtime=" in done
    finally:
        dump.terminate()
        dump.wait(10)
