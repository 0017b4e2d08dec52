"""An app for the pool-control tests: tasks to terminate and to keep slots busy, and receivers that note
the signals those tests check, as JSON lines in ``$SIGNAL_LOG`` with the pid that got them. Worker
subprocesses import it with -A, so pool children connect the receivers too."""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from celeriac import Celeriac, signals
from celeriac.worker import tracer

app = Celeriac("poolsapp")  # broker and backend come from CELERIAC_* variables set by the tests


def _note(name: str, **fields: Any) -> None:
    path = os.environ.get("SIGNAL_LOG")
    if path:
        line = json.dumps({"signal": name, "pid": os.getpid(), **fields}, default=repr)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


@app.task
def spin(seconds: float) -> str:
    """Loops in Python with short sleeps, so an exception raised into its thread lands at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return "finished"


@app.task
async def asleep(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "finished"


@app.task
def add(x: int, y: int) -> int:
    return x + y


@app.task
def boom() -> None:
    raise ValueError("boom")


@app.task
def broken_inside(x: int) -> int:
    """Succeeds; with ``$POOLSAPP_BREAK`` set, celeriac's own code after it fails (a stand-in bug)."""
    return x


_finish = tracer._finish


def _broken_finish(task: Any, job: Any, *args: Any) -> Any:
    if job.name == broken_inside.name:
        raise RuntimeError("a bug in celeriac's tracer")
    return _finish(task, job, *args)


def _break_tracer() -> None:
    if os.environ.get("POOLSAPP_BREAK"):
        tracer._finish = _broken_finish


@signals.worker_init.connect
def _worker_init(sender: Any, **more: Any) -> None:
    _break_tracer()


@signals.worker_process_init.connect
def _process_init(sender: Any, **more: Any) -> None:
    _break_tracer()
    _note("worker_process_init")


@signals.import_modules.connect
def _import_modules(sender: Any, **more: Any) -> None:
    _note("import_modules", sender=getattr(sender, "main", repr(sender)))


@signals.after_setup_task_logger.connect
def _task_logger(sender: Any, logger: Any, loglevel: int, logfile: Any, format: str, **more: Any) -> None:
    _note("after_setup_task_logger", logger=logger.name, loglevel=loglevel, format=format)


@signals.worker_shutting_down.connect
def _shutting_down(sender: Any, sig: Any, how: str, exitcode: int, **more: Any) -> None:
    _note("worker_shutting_down", sender=sender, sig=sig, how=how, exitcode=exitcode)


@signals.task_internal_error.connect
def _internal(sender: Any, task_id: str, request: Any, exception: Any, einfo: Any, **more: Any) -> None:
    _note(
        "task_internal_error",
        sender=sender.name,
        task_id=task_id,
        request_id=request.id,
        args=more["args"],
        exception=repr(exception),
        einfo=type(einfo).__name__,
        internal=einfo.internal,
        text="a bug in celeriac's tracer" in str(einfo),
    )


@signals.task_failure.connect
def _failure(sender: Any, task_id: str, einfo: Any, **more: Any) -> None:
    _note(
        "task_failure",
        task_id=task_id,
        einfo=type(einfo).__name__,
        exception=repr(einfo.exception),
        text="ValueError: boom" in str(einfo),
    )


@signals.task_revoked.connect
def _revoked(sender: Any, request: Any, terminated: bool, signum: Any, expired: bool, **more: Any) -> None:
    _note("task_revoked", task_id=request.id, terminated=terminated, signum=signum, expired=expired)
