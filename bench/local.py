"""``python -m bench``: no-op drain throughput and round-trip latency on the memory and SQLite brokers.

Every row is measured in this run; nothing is typed in. Each case starts from an empty store: it
enqueues N no-op tasks, starts a worker, and times until the worker has run all N (drain); then it times
sequential ``delay(i).get()`` round trips with the worker idle and waiting (latency).

``--metrics`` measures each celeriac case twice more, with the worker's Prometheus metrics off and on
(``--metrics-port``), ``--repeat`` times interleaved, and prints the medians and what metrics cost.
"""

from __future__ import annotations

import argparse
import importlib
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Row:
    system: str
    broker: str
    pool: str
    drained: int
    drain_s: float
    p50_ms: float
    p99_ms: float
    metrics: bool = False
    #: The process's CPU time per task while draining (µs): steadier than the rate on a shared machine.
    cpu_us: float = 0.0

    @property
    def rate(self) -> float:
        return self.drained / self.drain_s


def _configure(broker: str, workdir: Path) -> tuple[str, str]:
    if broker == "memory":
        url = f"memory://bench-{time.monotonic_ns()}"
        return url, url
    db = workdir / f"bench-{time.monotonic_ns()}.sqlite3"
    return f"sqlite:///{db}", f"db+sqlite:///{db}"


def run_celeriac(broker: str, pool: str, n: int, rounds: int, workdir: Path, metrics: bool = False) -> Row:
    from bench import tasks
    from celeriac.config import Settings
    from celeriac.testing import start_worker

    broker_url, backend_url = _configure(broker, workdir)
    app = tasks.app
    app.conf = Settings()
    app.conf.update(broker_url=broker_url, result_backend=backend_url)
    app._brokers.clear()
    app._backends.clear()

    async def enqueue() -> None:
        for _ in range(n):
            await tasks.noop.adelay()

    app.run(enqueue())
    concurrency = 1 if pool == "solo" else 2 if pool == "processes" else 8
    with start_worker(
        app,
        pool=pool,
        concurrency=concurrency,
        app_path="bench.tasks:app",
        prefetch_multiplier=4,
        metrics_port=0 if metrics else None,
    ) as worker:
        started, cpu = time.perf_counter(), time.process_time()
        while worker.stats["succeeded"] < n:
            time.sleep(0.002)
        drain = time.perf_counter() - started
        cpu_us = (time.process_time() - cpu) / n * 1e6
        echo = tasks.aecho if pool == "async" else tasks.echo
        samples = []
        for i in range(rounds):
            t0 = time.perf_counter()
            assert echo.delay(i).get(timeout=30, interval=0.01) == i
            samples.append((time.perf_counter() - t0) * 1000)
    app.close()
    samples.sort()
    return Row(
        "celeriac",
        broker,
        pool,
        n,
        drain,
        statistics.median(samples),
        samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        metrics,
        cpu_us,
    )


def median_row(rows: list[Row]) -> Row:
    """One row of the medians of ``rows`` (the same case measured several times)."""
    first = rows[0]
    rate = statistics.median(row.rate for row in rows)
    return Row(
        first.system,
        first.broker,
        first.pool,
        first.drained,
        first.drained / rate,
        statistics.median(row.p50_ms for row in rows),
        statistics.median(row.p99_ms for row in rows),
        first.metrics,
        statistics.median(row.cpu_us for row in rows),
    )


def compare_metrics(args: argparse.Namespace, workdir: Path) -> list[tuple[Row, Row]]:
    """Each celeriac case with metrics off and on, ``--repeat`` times interleaved: the median rows."""
    pairs = []
    for broker in args.brokers.split(","):
        for pool in args.pools.split(","):
            runs: dict[bool, list[Row]] = {False: [], True: []}
            for index in range(args.repeat):
                # Which goes first alternates: a run pays for what the one before it left (garbage).
                for metrics in (False, True) if index % 2 == 0 else (True, False):
                    runs[metrics].append(run_celeriac(broker, pool, args.n, args.rounds, workdir, metrics))
            pairs.append((median_row(runs[False]), median_row(runs[True])))
            print(f"  measured celeriac {broker}/{pool} with metrics off and on", file=sys.stderr)
    return pairs


def run_celery(pool: str, n: int, rounds: int, workdir: Path) -> Row:
    """Celery on its SQLAlchemy transport and database backend over SQLite, the closest peer setup."""
    import subprocess

    db = workdir / f"celery-{time.monotonic_ns()}.sqlite3"
    env = {
        **os.environ,
        "BENCH_CELERY_BROKER": f"sqla+sqlite:///{db}",
        "BENCH_CELERY_BACKEND": f"db+sqlite:///{db}",
    }
    os.environ.update({k: env[k] for k in ("BENCH_CELERY_BROKER", "BENCH_CELERY_BACKEND")})
    sys.modules.pop("bench.celery_tasks", None)  # a fresh Celery app and connection pool for this store
    celery_tasks = importlib.import_module("bench.celery_tasks")

    for _ in range(n):
        celery_tasks.noop.delay()
    concurrency = "1" if pool == "solo" else "2" if pool == "prefork" else "8"
    log = workdir / f"celery-{pool}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.celery_tasks",
                "worker",
                "-P",
                pool,
                "-c",
                concurrency,
                "--loglevel=WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"bench-{pool}@%h",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).resolve().parents[1],
        )
    try:
        started = time.perf_counter()
        deadline = started + 600
        while celery_tasks.pending() > 0 and time.perf_counter() < deadline:
            time.sleep(0.01)
        drain = time.perf_counter() - started
        samples = []
        for i in range(rounds):
            t0 = time.perf_counter()
            assert celery_tasks.echo.delay(i).get(timeout=30, interval=0.01) == i
            samples.append((time.perf_counter() - t0) * 1000)
    finally:
        proc.terminate()
        proc.wait(30)
    samples.sort()
    return Row(
        "celery " + _celery_version(),
        "sqlite (sqla)",
        pool,
        n,
        drain,
        statistics.median(samples),
        samples[min(len(samples) - 1, int(len(samples) * 0.99))],
    )


def _celery_version() -> str:
    import celery

    return str(celery.__version__)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("-n", type=int, default=2000, help="no-op tasks to drain per case")
    parser.add_argument("--rounds", type=int, default=200, help="sequential round trips per case")
    parser.add_argument("--brokers", default="memory,sqlite")
    parser.add_argument("--pools", default="solo,threads,async,processes")
    parser.add_argument("--no-celery", action="store_true", help="skip the Celery rows")
    parser.add_argument(
        "--celery-rounds",
        type=int,
        default=20,
        help="round trips for Celery rows (each takes about its 1 s polling interval)",
    )
    parser.add_argument(
        "--metrics",
        action="store_true",
        help="only celeriac, each case with its worker's Prometheus metrics off and on",
    )
    parser.add_argument("--repeat", type=int, default=3, help="--metrics: runs of each case, interleaved")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="celeriac-bench-") as tmp:
        workdir = Path(tmp)
        if args.metrics:
            return _print_metrics(args, compare_metrics(args, workdir))
        for broker in args.brokers.split(","):
            for pool in args.pools.split(","):
                rows.append(run_celeriac(broker, pool, args.n, args.rounds, workdir))
                print(f"  measured celeriac {broker}/{pool}", file=sys.stderr)
        if not args.no_celery:
            for pool in ("solo", "threads", "prefork"):
                rows.append(run_celery(pool, args.n, args.celery_rounds, workdir))
                print(f"  measured celery {pool}", file=sys.stderr)
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.n} no-op tasks drained per row; {args.rounds} sequential round trips per celeriac row, "
        f"{args.celery_rounds} per Celery row\n"
    )
    header = f"{'system':<14} {'broker':<14} {'pool':<10} {'drain tasks/s':>14} {'p50 ms':>8} {'p99 ms':>8}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row.system:<14} {row.broker:<14} {row.pool:<10} {row.rate:>14.0f} {row.p50_ms:>8.2f} "
            f"{row.p99_ms:>8.2f}"
        )
    return 0


def _print_metrics(args: argparse.Namespace, pairs: list[tuple[Row, Row]]) -> int:
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"{args.n} no-op tasks drained per run; medians of {args.repeat} runs each, off and on interleaved\n"
    )
    header = (
        f"{'broker':<8} {'pool':<8} {'off tasks/s':>11} {'on tasks/s':>10} {'cost':>6}   "
        f"{'off CPU us/task':>15} {'on CPU us/task':>14} {'cost':>6}"
    )
    print(header)
    print("-" * len(header))
    for off, on in pairs:
        rate_cost = (1 - on.rate / off.rate) * 100
        cpu_cost = (on.cpu_us / off.cpu_us - 1) * 100
        print(
            f"{off.broker:<8} {off.pool:<8} {off.rate:>11.0f} {on.rate:>10.0f} {rate_cost:>5.1f}%   "
            f"{off.cpu_us:>15.1f} {on.cpu_us:>14.1f} {cpu_cost:>5.1f}%"
        )
    return 0
