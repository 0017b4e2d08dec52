"""The processes a suite run starts and always stops: a private Redis server and the worker under test.

Each runs in its own session so that stopping it stops its children (the worker's pool) as well; a
process that ignores SIGTERM for its grace period gets SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = ["APP_MODULES", "private_redis", "worker"]

# The app the worker runs, per worker kind: the same settings as Celery's conftest ``celery_config``
# (the client's), the same task modules (Celery's own for Celery; the import-rewritten copy for celeriac),
# and the class-based task the conftest registers.
APP_MODULES = {
    "celeriac": """import os
import sys

from celeriac import Celery

app = Celery("celery_suite", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BACKEND"])
app.conf.update(result_extended=True, task_create_missing_queues=False)

import t.integration.tasks as tasks  # noqa: E402  (shared tasks need the app first)

if hasattr(app, "register_task"):
    app.register_task(tasks.ClassBasedAutoRetryTask)
else:
    print("celery-suite: celeriac has no app.register_task; ClassBasedAutoRetryTask is not registered",
          file=sys.stderr)
""",
    "celery": """import os

from celery import Celery

app = Celery("celery_suite", broker=os.environ["TEST_BROKER"], backend=os.environ["TEST_BACKEND"])
app.conf.update(result_extended=True, task_create_missing_queues=False)

import t.integration.tasks as tasks  # noqa: E402

app.register_task(tasks.ClassBasedAutoRetryTask)
""",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[tuple[str, int]]:
    """A Redis server of the run's own on a free port, without persistence: Celery's suite counts the
    server's pub/sub channels and uses its db 0, which a shared server's other users would disturb.

    Yields:
        Its host and port.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (folder / "redis.log").open("wb")
    options = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)]
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), *options],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {folder / 'redis.log'}")
            time.sleep(0.1)
        yield "127.0.0.1", port
    finally:
        _stop(proc, 10)
        log.close()


@contextlib.contextmanager
def worker(
    kind: str,
    python: Path,
    pythonpath: list[Path],
    folder: Path,
    env: dict[str, str],
    concurrency: int,
) -> Iterator[Path]:
    """The worker under test (``kind`` is ``celeriac`` or ``celery``), prefork-style processes pool,
    consuming the broker of ``env``; started and waited for until it answers a ping.

    Yields:
        Its log file.
    """
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "suite_app.py").write_text(APP_MODULES[kind])
    module = "celeriac" if kind == "celeriac" else "celery"
    pool = "processes" if kind == "celeriac" else "prefork"
    path = os.pathsep.join(str(p) for p in [folder, *pythonpath])
    log_path = folder / "worker.log"
    log = log_path.open("wb")
    options = ["-P", pool, "-c", str(concurrency), "-l", "INFO", "-n", f"suite-{kind}@%h"]
    proc = subprocess.Popen(
        [str(python), "-m", module, "-A", "suite_app", "worker", *options],
        cwd=folder,
        env={**os.environ, **env, "PYTHONPATH": path},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_ping(python, env["TEST_BROKER"], proc, log_path)
        yield log_path
    finally:
        _stop(proc, 30)
        log.close()


def _wait_for_ping(python: Path, broker: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    # Asked through Celery's own client, as the suite's manager asks: the worker is ready when it answers.
    probe = (
        "import sys\nfrom celery import Celery\n"
        "app = Celery(broker=sys.argv[1])\n"
        "sys.exit(0 if app.control.ping(timeout=1.0) else 1)\n"
    )
    deadline = time.monotonic() + 90
    while proc.poll() is None and time.monotonic() < deadline:
        if subprocess.run([str(python), "-c", probe, broker], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"the worker did not answer a ping; its log: {log}")
