"""The tables of ``celeriac inspect``, ``control`` and ``status``, from replies shaped as Celery's workers
and ours send them: columns per known command, errors shown in their row, anything else still shown."""

from __future__ import annotations

import io
import subprocess
import sys
from typing import Any

from celeriac.cli._tables import emit, make_console, replies_table, status_tables


def draw(*parts: Any) -> list[list[str]]:
    out = io.StringIO()
    emit(make_console(out), *parts)
    return [line.split() for line in out.getvalue().splitlines() if line and set(line) != {"─"}]


STATS = {
    "total": {"proj.add": 3, "proj.mul": 2},
    "pid": 41,
    "uptime": 3725,
    "pool": {"implementation": "celery.concurrency.prefork:TaskPool", "max-concurrency": 4},
    "broker": {"transport": "redis", "hostname": "127.0.0.1", "port": 6379},
    "prefetch_count": 16,
}


def test_each_known_reply_gets_its_columns() -> None:
    rows = draw(replies_table("stats", [{"b@h": STATS}, {"a@h": {**STATS, "pid": 40, "total": {}}}]))
    assert rows[0] == ["NODE", "PID", "UPTIME", "POOL", "CONCURRENCY", "TASKS", "RUN", "PREFETCH", "BROKER"]
    assert rows[1] == ["a@h", "40", "1h02m", "TaskPool", "4", "0", "16", "redis://127.0.0.1:6379"]
    assert rows[2][:6] == ["b@h", "41", "1h02m", "TaskPool", "4", "5"]
    registered = [{"a@h": ["proj.add [rate_limit=10/m]", "proj.mul"]}]
    assert draw(replies_table("registered", registered))[1:] == [
        ["a@h", "proj.add", "rate_limit=10/m"],
        ["proj.mul"],
    ]
    request = {"id": "t1", "name": "proj.add", "args": [2, 2], "kwargs": {}, "time_start": None}
    assert draw(replies_table("active", [{"a@h": [request]}, {"b@h": []}]))[1:] == [
        ["a@h", "t1", "proj.add", "[2,", "2]", "{}", "-", "-"],
        ["b@h", "-", "none", "-"],
    ]
    queues = [{"a@h": [{"name": "celery", "exchange": {"name": "celery"}, "routing_key": "celery"}]}]
    assert draw(replies_table("active_queues", queues))[1] == ["a@h", "celery", "celery", "celery"]


def test_outcomes_errors_and_unknown_shapes() -> None:
    replies = [{"a@h": {"ok": "rate limit disabled successfully"}}, {"b@h": {"error": "unknown task"}}]
    assert draw(replies_table("rate_limit", replies)) == [
        ["NODE", "STATUS", "REPLY"],
        ["a@h", "OK", "rate", "limit", "disabled", "successfully"],
        ["b@h", "ERROR", "unknown", "task"],
    ]
    mixed = [{"a@h": STATS}, {"b@h": {"error": "KeyError('stats')"}}]
    assert draw(replies_table("stats", mixed))[2] == ["b@h", "ERROR:", "KeyError('stats')"]
    assert draw(replies_table("stats", [{"a@h": "not a dict"}]))[1] == ["a@h", "not", "a", "dict"]
    assert draw(replies_table("app_own", [{"a@h": {"answer": 42}}])) == [
        ["NODE", "KEY", "VALUE"],
        ["a@h", "answer", "42"],
    ]
    assert draw(replies_table("app_own", [{"a@h": [1, "two"]}]))[1:] == [["a@h", "1"], ["two"]]


def test_status_tables() -> None:
    workers = {"a@h": {"stats": STATS, "active": [{}]}, "b@h": {}}
    rows = draw(*status_tables("redis://127.0.0.1:6379/0", [("celery", 3)], 1, workers))
    assert rows[:4] == [
        ["broker:", "redis://127.0.0.1:6379/0"],
        ["QUEUE", "WAITING"],
        ["celery", "3"],
        ["dead", "letters", "1"],
    ]
    assert rows[5] == ["a@h", "TaskPool", "4", "1", "5", "1h02m"]
    assert rows[6] == ["b@h", "?", "?", "?", "?", "?"]
    assert draw(*status_tables("sqlite://", [], 0, {}))[-1] == ["workers:", "none", "answered"]
    assert draw(*status_tables("sqlite://", [], 0, None))[-1] == ["dead", "letters", "0"]


def test_the_cli_loads_rich_only_to_print_a_table() -> None:
    script = "import sys, celeriac.cli.main, celeriac.cli.control; print('rich' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", script], check=True, capture_output=True, text=True)
    assert loaded.stdout.strip() == "False"
