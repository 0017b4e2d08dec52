"""``python -m bench control``: the round trip of ``inspect ping`` to 1 and to 4 workers, celeriac and Celery.

Per broker (a private ``redis-server``, a private RabbitMQ node, a SQLite file), WORKERS ``celeriac worker``
processes are started from the command line (threads pool, one thread each); once all of them answer,
this process times PINGS sequential pings of each kind, after a few unmeasured ones:

* ``1 (destination)``: ``app.control.ping(destination=[one node])``: returns as soon as that node replied;
* ``all (destination)``: ``ping(destination=[every node])``: returns once every node named replied;
* ``all (limit=N)``: ``broadcast("ping", reply=True, limit=N)`` with no destination: every worker hears
  it, and the call returns once N replies came (without ``limit`` it would wait out the timeout).

With ``--celery`` (the default), WORKERS real ``celery worker`` processes (threads pool) on the same private
Redis, another database, get the same three kinds through Celery's own ``app.control``. The table gives
p50 and p95 in milliseconds; a ping that timed out (1 s) or missed a reply counts as a miss.

Then, unless ``--no-events``, the cost of task events: ``bench.events`` (a worker draining no-op tasks with
``-E`` off, then on) on a private Redis, its own table.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.redis_suite.procs import WorkerProcess
from bench.redis_suite.server import RedisServer
from bench.redis_suite.systems import ROOT

BROKERS = ("redis", "rabbitmq", "sqlite")
KINDS = ("1 (destination)", "all (destination)", "all (limit)")
_CELERY_FLAGS = ("--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING")


@dataclass
class Row:
    system: str
    broker: str
    kind: str
    workers: int
    samples_ms: list[float] = field(default_factory=list)
    misses: int = 0

    def pct(self, q: float) -> float | None:
        if not self.samples_ms:
            return None
        ordered = sorted(self.samples_ms)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@contextmanager
def _broker(name: str, workdir: Path) -> Iterator[tuple[str, str]]:
    """The broker's URL for celeriac and for Celery (the same server, another database where it has any)."""
    if name == "redis":
        with RedisServer(workdir) as server:
            yield server.url(1), server.url(2)
    elif name == "rabbitmq":
        from tests.servers import RabbitServer

        node = RabbitServer(workdir / "rabbitmq")
        with node:
            print(f"RabbitMQ node {node.node} up in {node.start_seconds[0]:.1f} s", file=sys.stderr)
            yield node.url(), node.url()
    else:
        yield f"sqlite:///{workdir / 'control.sqlite3'}", ""


def _worker_argv(system: str, node: str) -> list[str]:
    bindir = Path(sys.executable).parent
    if system == "celeriac":
        head = [str(bindir / "celeriac"), "-A", "bench.tasks:app", "worker", "-l", "WARNING"]
        return [*head, "-P", "threads", "-c", "1", "-n", node, "--without-heartbeat"]
    return [str(bindir / "celery"), "-A", "bench.celery_tasks", "worker", *_CELERY_FLAGS,
            "-P", "threads", "-c", "1", "-n", node]  # fmt: skip


def _start(system: str, url: str, n: int, workdir: Path) -> tuple[list[str], list[WorkerProcess]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if system == "celeriac":
        env.update(CELERIAC_BROKER_URL=url, CELERIAC_RESULT_BACKEND="disabled://")
    else:
        env.update(BENCH_CELERY_BROKER=url, BENCH_CELERY_BACKEND=url)
    nodes = [f"{system}-{i}@bench" for i in range(n)]
    procs = [WorkerProcess(_worker_argv(system, node), env, ROOT, workdir / f"{node}.log") for node in nodes]
    return nodes, procs


def _measure(
    system: str,
    broker: str,
    ping: Callable[[list[str] | None, int | None], list[dict[str, Any]]],
    nodes: list[str],
    pings: int,
) -> list[Row]:
    # Wait until every worker answers (their start, on a loaded machine, takes seconds).
    deadline = time.monotonic() + 60
    while len(ping(nodes, None)) < len(nodes):
        if time.monotonic() > deadline:
            raise SystemExit(f"bench control: {system} workers on {broker} did not all answer in 60 s")
    plans: list[tuple[str, list[str] | None, int | None, int]] = [
        (KINDS[0], nodes[:1], None, 1),
        (KINDS[1], nodes, None, len(nodes)),
        (KINDS[2], None, len(nodes), len(nodes)),
    ]
    rows = []
    for kind, destination, limit, wanted in plans:
        row = Row(system, broker, kind, wanted)
        for _ in range(5):  # unmeasured: connections and reply routes warm
            ping(destination, limit)
        for _ in range(pings):
            t0 = time.perf_counter()
            replies = ping(destination, limit)
            elapsed = (time.perf_counter() - t0) * 1000
            if len(replies) >= wanted:
                row.samples_ms.append(elapsed)
            else:
                row.misses += 1
        rows.append(row)
    return rows


def run_celeriac(broker: str, url: str, n: int, pings: int, workdir: Path) -> list[Row]:
    from celeriac import Celeriac

    nodes, procs = _start("celeriac", url, n, workdir)
    app = Celeriac("bench_control", broker=url, backend="disabled://")
    try:

        def ping(destination: list[str] | None, limit: int | None) -> list[dict[str, Any]]:
            return app.control.broadcast("ping", {}, destination, reply=True, timeout=1.0, limit=limit) or []

        return _measure("celeriac", broker, ping, nodes, pings)
    finally:
        app.close()
        for proc in procs:
            proc.stop()


def run_celery(url: str, n: int, pings: int, workdir: Path) -> list[Row]:
    from celery import Celery  # type: ignore[import-untyped]

    nodes, procs = _start("celery", url, n, workdir)
    app = Celery("bench_control", broker=url, set_as_current=False)
    try:

        def ping(destination: list[str] | None, limit: int | None) -> list[dict[str, Any]]:
            found: list[dict[str, Any]] = app.control.ping(destination=destination, timeout=1.0, limit=limit)
            return found

        return _measure("celery", "redis", ping, nodes, pings)
    finally:
        app.close()
        for proc in procs:
            proc.stop()


def _ms(value: float | None) -> str:
    return f"{value:>8.1f}" if value is not None else f"{'-':>8}"


def _table(rows: list[Row]) -> str:
    head = f"{'system':<9} {'broker':<9} {'ping to':<18} {'replies':>7} {'p50 ms':>8} {'p95 ms':>8}"
    lines = [f"{head} {'misses':>6}"]
    for row in rows:
        name = f"{row.system:<9} {row.broker:<9} {row.kind:<18} {row.workers:>7}"
        lines.append(f"{name} {_ms(row.pct(0.5))} {_ms(row.pct(0.95))} {row.misses:>6}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench control", description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated: redis,rabbitmq,sqlite")
    parser.add_argument("--workers", type=int, default=4, help="workers per system (default 4)")
    parser.add_argument("--pings", type=int, default=50, help="timed pings per kind (default 50)")
    parser.add_argument("--no-celery", dest="celery", action="store_false", help="skip Celery's row")
    parser.add_argument("--no-events", dest="events", action="store_false", help="skip the events drain")
    parser.add_argument("--events-n", type=int, default=10_000, help="no-ops per events drain (10,000)")
    args = parser.parse_args(argv)
    brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    unknown = set(brokers) - set(BROKERS)
    if unknown:
        parser.error(f"unknown broker(s) {sorted(unknown)}; choose from {', '.join(BROKERS)}")
    print(
        f"bench control: {args.pings} pings per row, {args.workers} workers, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), "
        f"load average at start {os.getloadavg()[0]:.2f}",
        file=sys.stderr,
    )
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="bench-control-") as tmp:
        for broker in brokers:
            workdir = Path(tmp) / broker
            workdir.mkdir()
            with ExitStack() as stack:
                ours, celerys = stack.enter_context(_broker(broker, workdir))
                rows += run_celeriac(broker, ours, args.workers, args.pings, workdir)
                if broker == "redis" and args.celery:
                    rows += run_celery(celerys, args.workers, args.pings, workdir)
    print(_table(rows))
    if args.events:
        from bench import events

        print("\nTask events (-E): a worker draining no-op tasks on a private Redis")
        with tempfile.TemporaryDirectory(prefix="bench-events-") as tmp, RedisServer(Path(tmp)) as server:
            events.main(["--url", server.url(0), "-n", str(args.events_n)])
    print(f"load average at end {os.getloadavg()[0]:.2f}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
