"""``python -m bench``: no-op drain throughput and round-trip latency on the memory and SQLite brokers.

Every row is measured in this run; nothing is typed in. Each case starts from an empty store: it
enqueues N no-op tasks, starts a worker, and times until the worker has run all N (drain); then it times
sequential ``delay(i).get()`` round trips with the worker idle and waiting (latency).
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

    @property
    def rate(self) -> float:
        return self.drained / self.drain_s


def _configure(broker: str, workdir: Path) -> tuple[str, str]:
    if broker == "memory":
        url = f"memory://bench-{time.monotonic_ns()}"
        return url, url
    db = workdir / f"bench-{time.monotonic_ns()}.sqlite3"
    return f"sqlite:///{db}", f"db+sqlite:///{db}"


def run_celeriac(broker: str, pool: str, n: int, rounds: int, workdir: Path) -> Row:
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
        app, pool=pool, concurrency=concurrency, app_path="bench.tasks:app", prefetch_multiplier=4
    ) as worker:
        started = time.perf_counter()
        while worker.stats["succeeded"] < n:
            time.sleep(0.002)
        drain = time.perf_counter() - started
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
    )


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
    args = parser.parse_args(argv)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="celeriac-bench-") as tmp:
        workdir = Path(tmp)
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
