"""An app whose receivers note every signal they get, as a JSON line in ``$SIGNAL_LOG`` with the pid that
got it; worker subprocesses import it with -A, so pool children connect the receivers too."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from celeriac import Celeriac, signals
from celeriac.log import get_task_logger

app = Celeriac("sigapp")  # broker and backend come from CELERIAC_* variables set by the tests
logger = get_task_logger("sigapp.tasks")


def _note(name: str, **fields: Any) -> None:
    path = os.environ.get("SIGNAL_LOG")
    if path:
        line = json.dumps({"signal": name, "pid": os.getpid(), **fields}, default=repr)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _name(task: Any) -> str:
    return str(getattr(task, "name", task))


@signals.task_prerun.connect
def _prerun(sender: Any, task_id: str, task: Any, args: Any, kwargs: Any, **more: Any) -> None:
    _note("task_prerun", sender=_name(sender), task_id=task_id, task=_name(task), args=args, kwargs=kwargs)


@signals.task_postrun.connect
def _postrun(sender: Any, task_id: str, retval: Any, state: str, **more: Any) -> None:
    _note("task_postrun", sender=_name(sender), task_id=task_id, retval=retval, state=state)


@signals.task_success.connect
def _success(sender: Any, result: Any, **more: Any) -> None:
    _note("task_success", sender=_name(sender), result=result)


@signals.task_failure.connect
def _failure(sender: Any, task_id: str, exception: BaseException, einfo: str, **more: Any) -> None:
    _note("task_failure", sender=_name(sender), task_id=task_id, exception=repr(exception))


@signals.task_retry.connect
def _retry(sender: Any, request: Any, reason: Any, **more: Any) -> None:
    _note("task_retry", sender=_name(sender), task_id=request.id, reason=str(reason))


@signals.task_received.connect
def _received(sender: Any, request: Any, **more: Any) -> None:
    _note("task_received", task_id=request.id, task=request.task)


@signals.task_revoked.connect
def _revoked(sender: Any, request: Any, terminated: bool, signum: Any, expired: bool, **more: Any) -> None:
    _note("task_revoked", task=_name(sender), id=request.id, terminated=terminated, expired=expired)


@signals.worker_process_init.connect
def _process_init(sender: Any, **more: Any) -> None:
    _note("worker_process_init")


@signals.worker_process_shutdown.connect
def _process_shutdown(sender: Any, pid: int, exitcode: int, **more: Any) -> None:
    _note("worker_process_shutdown", given_pid=pid)


@signals.worker_ready.connect
def _ready(sender: Any, **more: Any) -> None:
    _note("worker_ready")


@signals.worker_shutdown.connect
def _shutdown(sender: Any, **more: Any) -> None:
    _note("worker_shutdown")


@signals.task_success.connect(sender="never a task object")
def _filtered_out(**more: Any) -> None:
    _note("filtered_out")


if os.environ.get("SIGAPP_OWN_LOGGING"):

    @signals.setup_logging.connect
    def _own_logging(loglevel: int, **more: Any) -> None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("OWN %(levelname)s %(message)s"))
        logging.getLogger().addHandler(handler)
        logging.getLogger().setLevel(loglevel)
        _note("setup_logging", loglevel=loglevel)


@app.task(bind=True)
def progress(self: Any, total: int) -> str:
    """Reports PROGRESS at each step; waits at step 1 until the file ``$GO_PATH`` exists."""
    for step in range(1, total + 1):
        self.update_state(state="PROGRESS", meta={"current": step, "total": total})
        if step == 1:
            deadline = time.monotonic() + 30
            while not Path(os.environ["GO_PATH"]).exists() and time.monotonic() < deadline:
                time.sleep(0.02)
    return f"{total} steps"


@app.task
def add(x: int, y: int) -> int:
    logger.info("adding %s and %s", x, y)
    return x + y


@app.task
def boom() -> None:
    raise ValueError("boom")


@app.task(bind=True, max_retries=1, default_retry_delay=0)
def flaky(self: Any) -> str:
    if self.request.retries == 0:
        raise self.retry(exc=KeyError("again"))
    return "recovered"


@app.task
def guarded() -> str:
    return "guarded"


@signals.task_success.connect(sender=guarded)
def _raising(**more: Any) -> None:
    raise RuntimeError("receiver bug in a pool process")


@app.task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
