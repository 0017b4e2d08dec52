"""``python -m bench redis``: every system's workers on one private Redis, measured in one run.

Per configuration, in order, each phase on an emptied database with a freshly started worker:

1. idle RSS and (c): start the worker, wait for a mark task to come back (it is up and consuming), let
   it idle 2 s, read the resident memory of its process tree, then time ROUNDS sequential calls with
   their results.
2. (b) and (a): with no worker running, one client queues a start mark, N no-ops (timed: (b)) and a
   finish mark; then a worker starts, and the drain rate (a) is N over the time between the two marks,
   both read from the worker's clock (its start-up is not counted).
3. (d): a start mark and SLEEPERS tasks that sleep 50 ms; the one that brings a counter to SLEEPERS
   marks the finish.

(e), the floor, is bare redis-py on the same server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis

from bench.redis_suite import floor, marks, report
from bench.redis_suite.procs import WorkerProcess, tree_rss_mb
from bench.redis_suite.server import RedisServer
from bench.redis_suite.systems import ROOT, SYSTEMS, Config, System, ensure_env, version

WORKLOADS = ("a", "b", "c", "d", "e", "rss")


@dataclass
class Plan:
    n: int
    rounds: int
    sleepers: int
    rtt_cap: float
    drain_cap: float
    workloads: set[str]
    workdir: Path


@dataclass
class Row:
    system: System
    config: Config
    version: str
    drain: float | None = None
    enqueue: float | None = None
    rtt_ms: list[float] | None = None
    sleep_s: float | None = None
    rss_mb: float | None = None
    failed: dict[str, str] = field(default_factory=dict)


class Failed(Exception):
    pass


def _env(system: System, url: str, variant: str) -> dict[str, str]:
    env = dict(os.environ)
    env["BENCH_REDIS_URL"] = url
    env["BENCH_VARIANT"] = variant
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("VIRTUAL_ENV", None)
    return env


def _client(system: System, env: dict[str, str], *args: str, timeout: float = 900) -> dict[str, object]:
    argv = [str(system.python), "-m", "bench.redis_suite.client", system.key, *args]
    out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    for line in out.stdout.splitlines():
        if line.startswith("BENCH-RESULT "):
            result: dict[str, object] = json.loads(line.removeprefix("BENCH-RESULT "))
            return result
    text = (out.stderr or out.stdout).strip()
    print(text[-3000:], file=sys.stderr)
    raise Failed(f"client {args[0]} failed: {text.splitlines()[-1] if text else out.returncode}")


def _marks(store: redis.Redis, names: set[str], timeout: float, worker: WorkerProcess) -> dict[str, float]:
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while not names <= seen.keys():
        if not worker.alive():
            raise Failed(f"worker exited ({worker.proc.returncode}):\n{worker.tail()}")
        if time.monotonic() > deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {sorted(names - seen.keys())}")
        item = store.blpop([marks.MARKS], timeout=1)
        if item is not None:
            raw = item[1]
            what, when = (raw.decode() if isinstance(raw, bytes) else raw).split()
            seen[what] = float(when)
    return seen


def _start(system: System, config: Config, url: str, plan: Plan, phase: str) -> WorkerProcess:
    argv = [arg.replace("{url}", url) for arg in system.argv(config)]
    log = plan.workdir / f"{system.key}-{config.label.replace(' ', '_')}-{phase}.log"
    return WorkerProcess(argv, _env(system, url, config.variant), ROOT, log)


def measure(system: System, config: Config, server: RedisServer, plan: Plan, row: Row) -> None:
    url = server.url(system.db)
    store = redis.Redis.from_url(url)
    env = _env(system, url, config.variant)
    try:
        if config.runs & {"c", "rss"} and plan.workloads & {"c", "rss"}:
            _phase(row, ("c", "rss"), lambda: _idle_and_roundtrip(system, config, url, plan, row, store, env))
        if "a" in config.runs and plan.workloads & {"a", "b"}:
            _phase(row, ("a", "b"), lambda: _drain(system, config, url, plan, row, store, env))
        if "d" in config.runs and "d" in plan.workloads:
            _phase(row, ("d",), lambda: _sleepers(system, config, url, plan, row, store, env))
    finally:
        store.flushdb()
        store.close()


def _phase(row: Row, names: tuple[str, ...], run: object) -> None:
    assert callable(run)
    try:
        run()
    except (Failed, subprocess.TimeoutExpired) as exc:
        for name in names:
            row.failed[name] = str(exc).splitlines()[0][:200]
        print(f"    {row.system.title} {row.config.label} {'/'.join(names)}: {exc}", file=sys.stderr)


def _idle_and_roundtrip(
    system: System, config: Config, url: str, plan: Plan, row: Row, store: redis.Redis, env: dict[str, str]
) -> None:
    store.flushdb()
    worker = _start(system, config, url, plan, "idle")
    try:
        _client(system, env, "mark", "ready")
        _marks(store, {"ready"}, 120, worker)
        time.sleep(2)
        row.rss_mb = tree_rss_mb(worker.pid)
        if "c" in plan.workloads:
            out = _client(system, env, "roundtrip", str(plan.rounds), str(plan.rtt_cap))
            samples = out["samples_ms"]
            assert isinstance(samples, list)
            row.rtt_ms = [float(s) for s in samples]
    finally:
        worker.stop()


def _drain(
    system: System, config: Config, url: str, plan: Plan, row: Row, store: redis.Redis, env: dict[str, str]
) -> None:
    store.flushdb()
    out = _client(system, env, "fill", str(plan.n))
    enqueue_s = out["enqueue_s"]
    assert isinstance(enqueue_s, float)
    row.enqueue = plan.n / enqueue_s
    if "a" not in plan.workloads:
        return
    worker = _start(system, config, url, plan, "drain")
    try:
        seen = _marks(store, {"start", "finish"}, plan.drain_cap, worker)
        row.drain = plan.n / (seen["finish"] - seen["start"])
    finally:
        worker.stop()


def _sleepers(
    system: System, config: Config, url: str, plan: Plan, row: Row, store: redis.Redis, env: dict[str, str]
) -> None:
    store.flushdb()
    _client(system, env, "sleep", str(plan.sleepers))
    worker = _start(system, config, url, plan, "sleep")
    try:
        seen = _marks(store, {"start", "finish"}, plan.drain_cap, worker)
        row.sleep_s = seen["finish"] - seen["start"]
    finally:
        worker.stop()


def _machine(redis_version: str) -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, Redis {redis_version} (private server, no persistence), "
        f"redis-py {redis.__version__}" + (" + hiredis" if _has_hiredis() else "")
    )


def _has_hiredis() -> bool:
    try:
        import hiredis  # noqa: F401
    except ImportError:
        return False
    return True


def parse_options(
    prog: str, argv: list[str], known: Sequence[System], workloads: Sequence[str], description: str
) -> tuple[argparse.Namespace, argparse.ArgumentParser, list[System], set[str]]:
    """The options every suite takes: (arguments, parser, chosen systems, chosen workloads)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--systems", default=",".join(s.key for s in known), help="comma-separated")
    parser.add_argument("--workloads", default=",".join(workloads), help=f"of {','.join(workloads)}")
    parser.add_argument("-n", type=int, default=20_000, help="tasks for (a) and (b)")
    parser.add_argument("--rounds", type=int, default=1_000, help="sequential round trips for (c)")
    parser.add_argument("--sleepers", type=int, default=2_000, help="50 ms tasks for (d)")
    parser.add_argument("--rtt-cap", type=float, default=60, help="seconds at most per (c) run")
    parser.add_argument("--drain-cap", type=float, default=300, help="seconds at most per drain")
    parser.add_argument("--quick", action="store_true", help="n=2000, rounds=200, sleepers=400")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    parser.add_argument("--logs", type=Path, help="keep the workers' logs in this folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.rounds, args.sleepers = 2_000, 200, 400
    keys = args.systems.split(",")
    unknown = set(keys) - {s.key for s in known}
    if unknown:
        parser.error(f"unknown systems {sorted(unknown)}; known: {[s.key for s in known]}")
    chosen = set(args.workloads.split(","))
    if chosen - set(workloads):
        parser.error(f"unknown workloads {sorted(chosen - set(workloads))}")
    return args, parser, [s for s in known if s.key in keys], chosen


def main(argv: list[str]) -> int:
    args, _, systems, workloads = parse_options(
        "python -m bench redis", argv, SYSTEMS, WORKLOADS, __doc__.splitlines()[0]
    )

    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="celeriac-bench-redis-") as tmp:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        plan = Plan(args.n, args.rounds, args.sleepers, args.rtt_cap, args.drain_cap, workloads, workdir)
        with RedisServer(Path(tmp)) as server:
            machine = _machine(server.version())
            print(f"machine: {machine}", file=sys.stderr)
            fl = floor.measure(server.url(0), args.n) if "e" in workloads else None
            for system in systems:
                ensure_env(system)
                ver = version(system)
                for config in system.configs:
                    if not config.runs & workloads - {"e"}:
                        continue
                    row = Row(system, config, ver)
                    t0 = time.monotonic()
                    measure(system, config, server, plan, row)
                    rows.append(row)
                    print(
                        f"  measured {system.title} {config.label} in {time.monotonic() - t0:.0f} s",
                        file=sys.stderr,
                    )
    elapsed = time.monotonic() - started
    table = report.Table(rows, fl, plan, machine, elapsed)
    print()
    print(table.text())
    if args.markdown:
        args.markdown.write_text(table.markdown())
        print(f"\nmarkdown written to {args.markdown}")
    return 0
