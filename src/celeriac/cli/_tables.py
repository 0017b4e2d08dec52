"""Readable tables for ``celeriac inspect``, ``celeriac control`` and ``celeriac status``, drawn by ``rich``.

Only the commands that print them import this module, so ``import celeriac`` never loads ``rich``. Each
well-known reply (Celery's shapes: ``active``, ``stats``, ``registered``, ...) gets columns of its own;
any other reply (an app's own command, a future one) falls back to one row per item or per key.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, TextIO

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["emit", "make_console", "replies_table", "status_tables"]

#: Width when the output is not a terminal (a pipe, a file): ids and node names are not wrapped.
_PIPE_WIDTH = 200
_NONE = Text("- none -", style="dim")

Row = list[str | Text]
#: A command's columns (after NODE) and how one node's reply becomes rows.
Shape = tuple[tuple[str, ...], Callable[[Any], list[Row]]]


def make_console(file: TextIO | None = None) -> Console:
    """A console on ``file`` (stdout by default): colours on a terminal; none, and wide lines, elsewhere."""
    console = Console(file=file, highlight=False, soft_wrap=False)
    if not console.is_terminal:
        console = Console(file=file, highlight=False, soft_wrap=False, width=_PIPE_WIDTH, no_color=True)
    return console


def emit(console: Console, *parts: Table | str) -> None:
    """Print ``parts``; into a pipe or a file without the blanks that pad each cell to its column's width."""
    if console.is_terminal:
        for part in parts:
            console.print(part)
        return
    with console.capture() as captured:
        for part in parts:
            console.print(part)
    console.file.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    console.file.flush()


def _table(*columns: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _text(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _when(stamp: Any) -> str:
    """A unix time as local wall-clock time with how long ago (``12:03:04 (5s ago)``)."""
    if not isinstance(stamp, (int, float)) or stamp < 1e9:  # absent, or not a unix time
        return "-" if stamp is None else str(stamp)
    ago = max(0.0, time.time() - stamp)
    return f"{datetime.fromtimestamp(stamp):%H:%M:%S} ({_duration(ago)} ago)"


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def _outcome(value: Any) -> Row:
    [(key, text)] = value.items()
    return [Text(key.upper(), style="green" if key == "ok" else "bold red"), str(text).rstrip()]


def _is_outcome(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and set(value) <= {"ok", "error"}


def _requests(value: Any) -> list[Row]:
    return [
        [
            str(r.get("id")),
            str(r.get("name")),
            _text(r.get("args")),
            _text(r.get("kwargs")),
            _when(r.get("time_start")),
            str(r.get("worker_pid") or "-"),
        ]
        for r in value
    ]


def _scheduled(value: Any) -> list[Row]:
    rows: list[Row] = []
    for entry in value:
        request = entry.get("request") or {}
        eta = str(entry.get("eta") or "-")
        rows.append([eta, str(entry.get("priority", "")), str(request.get("id")), str(request.get("name"))])
    return rows


_REGISTERED = re.compile(r"^(?P<name>\S+)(?: \[(?P<attrs>.*)\])?$")


def _registered(value: Any) -> list[Row]:
    rows: list[Row] = []
    for line in value:
        found = _REGISTERED.match(str(line))
        name, attrs = (found["name"], found["attrs"] or "") if found else (str(line), "")
        rows.append([name, attrs])
    return rows


def _stats(value: Any) -> list[Row]:
    pool = value.get("pool") or {}
    broker = value.get("broker") or {}
    kind = str(pool.get("implementation", "?")).rsplit(":", 1)[-1]
    total = value.get("total") or {}
    where = str(broker.get("transport") or "?")
    if broker.get("hostname"):
        where += f"://{broker['hostname']}" + (f":{broker['port']}" if broker.get("port") else "")
    return [
        [
            str(value.get("pid")),
            _duration(value["uptime"]) if isinstance(value.get("uptime"), (int, float)) else "-",
            kind,
            str(pool.get("max-concurrency", "-")),
            str(sum(total.values())) if isinstance(total, dict) else "-",
            str(value.get("prefetch_count", "-")),
            where,
        ]
    ]


def _queues(value: Any) -> list[Row]:
    return [
        [str(q.get("name")), str((q.get("exchange") or {}).get("name", "")), str(q.get("routing_key"))]
        for q in value
    ]


def _query(value: Any) -> list[Row]:
    return [[task_id, str(kind), str(info.get("name"))] for task_id, (kind, info) in value.items()]


def _settings(value: Any) -> list[Row]:
    return [[key, _text(item, 100)] for key, item in sorted(value.items())]


SHAPES: dict[str, Shape] = {
    "active": (("ID", "TASK", "ARGS", "KWARGS", "STARTED", "PID"), _requests),
    "reserved": (("ID", "TASK", "ARGS", "KWARGS", "STARTED", "PID"), _requests),
    "scheduled": (("ETA", "PRIORITY", "ID", "TASK"), _scheduled),
    "registered": (("TASK", "ATTRIBUTES"), _registered),
    "registered_tasks": (("TASK", "ATTRIBUTES"), _registered),
    "stats": (("PID", "UPTIME", "POOL", "CONCURRENCY", "TASKS RUN", "PREFETCH", "BROKER"), _stats),
    "active_queues": (("QUEUE", "EXCHANGE", "ROUTING KEY"), _queues),
    "revoked": (("TASK ID",), lambda value: [[str(task_id)] for task_id in value]),
    "query_task": (("ID", "STATE", "TASK"), _query),
    "conf": (("SETTING", "VALUE"), _settings),
    "dump_conf": (("SETTING", "VALUE"), _settings),
    "clock": (("CLOCK",), lambda value: [[str(value.get("clock"))]]),
}


def _fallback(replies: dict[str, Any]) -> Shape:
    """Columns for a reply this module does not know, from what the replies look like."""
    values = list(replies.values())
    if values and all(_is_outcome(v) for v in values):
        return ("STATUS", "REPLY"), lambda value: [_outcome(value)]
    if values and all(isinstance(v, list) for v in values):
        return ("ITEM",), lambda value: [[_text(item, 120)] for item in value]
    if values and all(isinstance(v, dict) for v in values):
        return ("KEY", "VALUE"), lambda value: [[str(k), _text(v, 120)] for k, v in value.items()]
    return ("REPLY",), lambda value: [[_text(value, 120)]]


def replies_table(command: str, replies: Iterable[dict[str, Any]]) -> Table:
    """One table of every node's reply to ``command`` (``[{node: reply}, ...]``), nodes sorted.

    Where a node answered ``{"error": ...}`` and others answered data, its row says the error; a node
    with nothing to list gets a ``- none -`` row.
    """
    by_node = dict(sorted((node, value) for reply in replies for node, value in reply.items()))
    has_data = any(not _is_outcome(value) for value in by_node.values())
    columns, rows_of = SHAPES[command] if command in SHAPES and has_data else _fallback(by_node)
    table = _table("NODE", *columns)
    for node, value in by_node.items():
        if _is_outcome(value) and columns != ("STATUS", "REPLY"):
            [(key, text)] = value.items()
            table.add_row(node, Text(f"{key.upper()}: {text}", style="bold red" if key == "error" else ""))
            continue
        rows: list[Row]
        try:
            rows = rows_of(value)
        except (AttributeError, KeyError, TypeError, ValueError):  # not the shape we know: show it raw
            rows = [[_text(value, 120)]]
        empty: list[Row] = [[_NONE]]
        for n, row in enumerate(rows or empty):
            table.add_row(node if n == 0 else "", *row)
    return table


def status_tables(
    broker: str, sizes: list[tuple[str, int]], dead: int, workers: dict[str, dict[str, Any]] | None
) -> list[Table | str]:
    """``celeriac status``: the broker, a table of queues (and dead letters), and one of the workers that
    answered (``workers`` is None where the broker cannot broadcast)."""
    queues = _table("QUEUE", "WAITING")
    for queue, size in sizes:
        queues.add_row(queue, str(size))
    queues.add_row(Text("dead letters", style="dim" if not dead else "bold red"), str(dead))
    found: list[Table | str] = [f"broker: {broker}", queues]
    if workers is None:
        return found
    if not workers:
        found.append("workers: none answered")
        return found
    table = _table("WORKER", "POOL", "CONCURRENCY", "ACTIVE", "TASKS RUN", "UPTIME")
    for node, info in sorted(workers.items()):
        stats = info.get("stats") or {}
        pool = stats.get("pool") or {}
        total = stats.get("total")
        active = info.get("active")
        uptime = stats.get("uptime")
        table.add_row(
            node,
            str(pool.get("implementation", "?")).rsplit(":", 1)[-1],
            str(pool.get("max-concurrency", "?")),
            str(len(active)) if isinstance(active, list) else "?",
            str(sum(total.values())) if isinstance(total, dict) else "?",
            _duration(uptime) if isinstance(uptime, (int, float)) else "?",
        )
    found.append(table)
    return found
