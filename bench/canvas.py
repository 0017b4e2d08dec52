"""``python -m bench canvas``: a group and a chord of N no-op tasks, celeriac against Celery, on one Redis.

Per worker configuration, on a private ``redis-server`` (``bench.redis_suite.server``) and an emptied
database, a worker is started from the command line; a client process waits until the worker answers,
then repeats, REPS times each:

* group: ``group(noop.s() for _ in range(N)).apply_async()``, then ``GroupResult.get()``: the time from the
  call to the list of N results in the client's hand;
* chord: ``chord((noop.s() for _ in range(N)), count.s()).apply_async()``, then the body's ``get()``
  (``count`` returns how many results it received, checked to be N): the time to the body's result.

Each also reports the client's send time (from the call until ``apply_async`` returned). The table gives
the median of the repetitions. Both systems use their Redis broker and Redis result backend, with the
same pool sizes; each system's settings are in ``bench/canvas_celeriac.py`` and ``bench/canvas_celery.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from bench.redis_suite.procs import WorkerProcess
from bench.redis_suite.server import RedisServer
from bench.redis_suite.systems import ROOT

WORKLOADS = ("group", "chord")
_CELERY_FLAGS = ("--without-gossip", "--without-mingle", "--without-heartbeat", "-O", "fair", "-l", "WARNING")


@dataclass(frozen=True)
class Config:
    """One worker setup: a row of the table."""

    system: str  # "celeriac" or "celery"
    pool: str
    args: tuple[str, ...]
    task: str = "bench.canvas.noop"


CONFIGS = (
    Config("celeriac", "processes -c 2", ("-P", "processes", "-c", "2")),
    Config("celeriac", "threads -c 8", ("-P", "threads", "-c", "8")),
    Config("celeriac", "async -c 8", ("-P", "async", "-c", "8"), task="bench.canvas.anoop"),
    Config("celery", "prefork -c 2", ("-P", "prefork", "-c", "2")),
    Config("celery", "threads -c 8", ("-P", "threads", "-c", "8")),
)


def _argv(config: Config) -> list[str]:
    bindir = Path(sys.executable).parent
    if config.system == "celeriac":
        head = [str(bindir / "celeriac"), "-A", "bench.canvas_celeriac:app", "worker", "-l", "WARNING"]
        return [*head, "--prefetch-multiplier", "4", *config.args]
    return [str(bindir / "celery"), "-A", "bench.canvas_celery", "worker", *_CELERY_FLAGS, *config.args]


@dataclass
class Row:
    config: Config
    samples: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def median(self, workload: str, what: str) -> float | None:
        runs = self.samples.get(workload)
        return statistics.median(r[what] for r in runs) if runs else None


# -- the client side (a subprocess per configuration) -------------------------------------------------


def _client(system: str, task: str, n: int, reps: int, workloads: list[str]) -> dict[str, Any]:
    if system == "celeriac":
        from bench.canvas_celeriac import app
        from celeriac import chord, group
    else:
        from celery import chord, group

        from bench.canvas_celery import app
    noop, count = app.tasks[task], app.tasks["bench.canvas.count"]
    out: dict[str, Any] = {w: [] for w in workloads}
    try:
        noop.delay().get(timeout=120)  # the worker is up, and every connection is open
        group(noop.s() for _ in range(50)).apply_async().get(timeout=60)
        for _ in range(reps):
            for workload in workloads:
                t0 = time.perf_counter()
                if workload == "group":
                    result = group(noop.s() for _ in range(n)).apply_async()
                    sent = time.perf_counter()
                    values = result.get(timeout=600)
                    assert len(values) == n, f"{len(values)} results, not {n}"
                else:
                    result = chord((noop.s() for _ in range(n)), count.s()).apply_async()
                    sent = time.perf_counter()
                    # A handle on the body alone: Celery's own handle (the header its parent) re-reads
                    # the 10,000 header results on every poll, and was seen missing the body's result.
                    counted = app.AsyncResult(result.id).get(timeout=600)
                    assert counted == n, f"the body counted {counted} results, not {n}"
                done = time.perf_counter()
                out[workload].append({"send": sent - t0, "total": done - t0})
    finally:
        app.close()
    return out


# -- the runner ------------------------------------------------------------------------------------------


def _measure(config: Config, server: RedisServer, args: argparse.Namespace, workdir: Path, db: int) -> Row:
    row = Row(config)
    url = server.url(db)
    store = redis.Redis.from_url(url)
    store.flushdb()
    env = {**os.environ, "BENCH_REDIS_URL": url}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    log = workdir / f"{config.system}-{config.pool.replace(' ', '_')}.log"
    worker = WorkerProcess(_argv(config), env, ROOT, log)
    argv = [sys.executable, "-m", "bench.canvas", "--client", config.system, config.task]
    argv += [str(args.n), str(args.reps), ",".join(args.workloads)]
    try:
        out = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=args.cap)
        for line in out.stdout.splitlines():
            if line.startswith("BENCH-RESULT "):
                row.samples = json.loads(line.removeprefix("BENCH-RESULT "))
                break
        else:
            text = (out.stderr or out.stdout).strip().splitlines()
            reason = text[-1] if text else f"exit {out.returncode}"
            row.failed = dict.fromkeys(args.workloads, reason[:200])
            print("\n".join(text[-20:]), "\n--- worker:\n" + worker.tail(), file=sys.stderr)
    except subprocess.TimeoutExpired:
        row.failed = dict.fromkeys(args.workloads, f"timed out after {args.cap:.0f} s")
    finally:
        worker.stop()
        store.flushdb()
        store.close()
    return row


def _table(rows: list[Row], args: argparse.Namespace) -> list[tuple[str, ...]]:
    """The table's cells: per workload and configuration, median send and total times, and tasks/s."""
    out: list[tuple[str, ...]] = [
        ("workload", "system", "pool", "send s", "to result s", "tasks/s", "vs Celery")
    ]
    for workload in args.workloads:
        celery_best = min(
            (t for r in rows if r.config.system == "celery" for t in [r.median(workload, "total")] if t),
            default=None,
        )
        for row in rows:
            total, send = row.median(workload, "total"), row.median(workload, "send")
            if total is None or send is None:
                reason = row.failed.get(workload, "not run")
                out.append((workload, row.config.system, row.config.pool, "-", f"failed: {reason}", "-", "-"))
                continue
            ratio = f"{celery_best / total:.1f}x" if celery_best and row.config.system == "celeriac" else ""
            out.append(
                (
                    workload,
                    row.config.system,
                    row.config.pool,
                    f"{send:.2f}",
                    f"{total:.2f}",
                    f"{args.n / total:,.0f}",
                    ratio,
                )
            )
    return out


def _text(cells: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = [
        "  ".join(
            c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _markdown(cells: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * 3 + "---:|" * (len(cells[0]) - 3)]
    lines += ["| " + " | ".join(row) + " |" for row in cells[1:]]
    return "\n".join(lines)


def _versions() -> str:
    import importlib.metadata as meta

    return ", ".join(f"{name} {meta.version(name.lower())}" for name in ("celeriac", "Celery", "kombu"))


def main(argv: list[str]) -> int:
    if argv[:1] == ["--client"]:
        system, task, n, reps, workloads = argv[1:6]
        out = _client(system, task, int(n), int(reps), workloads.split(","))
        print("BENCH-RESULT " + json.dumps(out), flush=True)
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench canvas", description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="tasks in the group and in the chord's header")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each workload (median reported)")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="of group,chord")
    parser.add_argument("--systems", default="celeriac,celery", help="of celeriac,celery")
    parser.add_argument("--quick", action="store_true", help="n=1000")
    parser.add_argument("--cap", type=float, default=1800, help="seconds at most per configuration")
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    parser.add_argument("--logs", type=Path, help="keep the workers' logs in this folder")
    args = parser.parse_args(argv)
    if args.quick:
        args.n = 1_000
    args.workloads = args.workloads.split(",")
    if set(args.workloads) - set(WORKLOADS):
        parser.error(f"unknown workloads {sorted(set(args.workloads) - set(WORKLOADS))}")
    systems = args.systems.split(",")
    started = time.monotonic()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="celeriac-bench-canvas-") as tmp:
        workdir = args.logs or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with RedisServer(Path(tmp)) as server:
            machine = (
                f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                f"Redis {server.version()} (private server, no persistence), {_versions()}"
            )
            print(f"machine: {machine}", file=sys.stderr)
            for db, config in enumerate(c for c in CONFIGS if c.system in systems):
                t0 = time.monotonic()
                rows.append(_measure(config, server, args, workdir, db + 1))
                print(
                    f"  measured {config.system} {config.pool} in {time.monotonic() - t0:.0f} s",
                    file=sys.stderr,
                )
    cells = _table(rows, args)
    heading = (
        f"{machine}\n{args.n:,} no-op tasks per group and per chord header; median of {args.reps} runs; "
        f"'vs Celery' = Celery's best median / this row's; whole run {time.monotonic() - started:.0f} s"
    )
    print(f"\n{heading}\n\n{_text(cells)}")
    if args.markdown:
        args.markdown.write_text(f"{heading}\n\n{_markdown(cells)}\n")
        print(f"\nmarkdown written to {args.markdown}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
