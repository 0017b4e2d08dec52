"""``celeriac demo``: a real worker on the embedded SQLite default, fed a mix of tasks, and a summary."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any


def _check(label: str, ok: bool, detail: str, rows: list[tuple[str, str, str]]) -> bool:
    rows.append((label, "ok" if ok else "FAILED", detail))
    return ok


def run_demo(tasks: int = 100, concurrency: int = 2, pool: str = "processes") -> int:
    """Run a worker on a fresh SQLite file, send ``tasks`` tasks of every kind, print a summary.

    Returns:
        The exit code: 0 when every task ended as expected.
    """
    workdir = tempfile.mkdtemp(prefix="celeriac-demo-")
    database = os.path.join(workdir, "celeriac.sqlite3")
    os.environ["CELERIAC_BROKER_URL"] = f"sqlite:///{database}"
    os.environ["CELERIAC_RESULT_BACKEND"] = f"db+sqlite:///{database}"
    print(f"celeriac demo: broker and results in {database} (SQLite, no server)")
    # Imported now, not before: the module makes its app at import, from the environment set above.
    from celeriac.cli import demo_tasks as demo

    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celeriac",
            "-A",
            "celeriac.cli.demo_tasks",
            "worker",
            "-c",
            str(concurrency),
            "-P",
            pool,
            "-l",
            "WARNING",
            "-n",
            "demo@%h",
        ]
    )
    rows: list[tuple[str, str, str]] = []
    ok = True
    try:
        started = time.time()
        adds = [demo.add.delay(i, i) for i in range(tasks)]
        flaky = demo.flaky.delay(7)
        failing = demo.fail.delay("this task fails on purpose")
        delayed_at = time.time()
        delayed = demo.stamp.apply_async(countdown=2)
        fetches = [demo.fetch.delay(i) for i in range(10)]
        sent = time.time() - started
        total = tasks + 1 + 1 + 1 + len(fetches)
        print(
            f"sent {total} tasks in {sent:.2f}s; waiting for a {pool} worker with concurrency {concurrency}"
        )

        values = [r.get(timeout=120) for r in adds]
        ok &= _check("add", values == [2 * i for i in range(tasks)], f"{tasks} results, all correct", rows)
        ok &= _check("retry", flaky.get(timeout=60) == 7, "flaky() failed twice, retried, returned 7", rows)
        error: Any = None
        try:
            failing.get(timeout=60)
        except ValueError as exc:
            error = exc
        ok &= _check(
            "failure",
            error is not None and failing.state == "FAILURE",
            f"fail() raised {error!r} back in the caller",
            rows,
        )
        ran_at = delayed.get(timeout=60)
        late = ran_at - delayed_at
        ok &= _check("countdown", late >= 2.0, f"countdown=2 ran after {late:.2f}s", rows)
        got = [r.get(timeout=60) for r in fetches]
        ok &= _check("async def", got == [i * 10 for i in range(10)], "10 coroutines awaited natively", rows)
        elapsed = time.time() - started
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
            code = worker.wait()
        demo.app.close()
    ok &= _check("shutdown", code == 0, f"worker exited with {code} after SIGTERM", rows)
    print()
    width = max(len(r[0]) for r in rows)
    for label, verdict, detail in rows:
        print(f"  {label:<{width}}  {verdict:<6}  {detail}")
    print(
        f"\n{total} tasks done in {elapsed:.2f}s ({total / elapsed:.0f} tasks/s, including the 2 s countdown)"
    )
    shutil.rmtree(workdir, ignore_errors=True)
    print("demo passed" if ok else "demo FAILED")
    return 0 if ok else 1
