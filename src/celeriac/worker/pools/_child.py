"""What runs inside a processes-pool child: load the app, then run the jobs the parent sends.

The conversation, one duplex pipe per child: the child says ``("ready", pid)`` (or ``("failed", error)``
and exits); then for each ``Job`` received it says ``("started",)`` and ``("done", outcome, exiting)``.
``None`` instead of a job, or the end of the pipe, means stop. ``exiting`` tells the parent that the child
leaves after this job (``max_tasks_per_child`` or ``max_memory_per_child`` reached).

An outcome that cannot be pickled still gets through: an unpicklable return value becomes a FAILURE
with a ``TypeError`` that says so, and an unpicklable exception travels as its result record
(``ExceptionRecord``), which the parent turns back into an exception with ``exception_from_dict``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import pickle
import signal
import sys
import traceback
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac._exception_records import exception_to_dict
from celeriac.exceptions import Retry, SoftTimeLimitExceeded
from celeriac.worker._appref import find_app
from celeriac.worker._logging import setup_logging
from celeriac.worker.pools.base import Job, Outcome
from celeriac.worker.pools.threads import aexecute_limited, failure, limits
from celeriac.worker.tracer import execute, run_coroutine_here

if TYPE_CHECKING:
    from celeriac.app import Celeriac

_PR_SET_PDEATHSIG = 1


class ExceptionRecord(Exception):  # a carrier, never raised
    """An exception that cannot be pickled, as a result record (``exception_to_dict``), for the parent."""


class _SoftLimit:
    """Raises ``SoftTimeLimitExceeded`` in the main thread when the armed time is up (SIGALRM)."""

    def __init__(self) -> None:
        self._limit: float | None = None
        signal.signal(signal.SIGALRM, self._fire)

    def _fire(self, signum: int, frame: Any) -> None:
        # the alarm may go off just after the job ended: it is only meant for the job
        if self._limit is not None:
            limit, self._limit = self._limit, None
            raise SoftTimeLimitExceeded(limit)

    @contextlib.contextmanager
    def armed(self, seconds: float | None) -> Iterator[None]:
        if seconds is None:
            yield
            return
        self._limit = seconds
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            self._limit = None
            signal.setitimer(signal.ITIMER_REAL, 0)


def child_main(
    conn: Connection,
    app_path: str | None,
    app: Celeriac | None,
    max_tasks: int | None,
    max_memory: int | None,
    log: tuple[int, str, str] | None = None,
) -> None:
    """A pool process: load the app, say ready, run jobs until told to stop or the parent is gone.

    ``log`` is the parent's (level, format, task format): a spawned process starts with no logging
    set up, and a task's log lines would otherwise be lost.
    """
    _settle_in()
    try:
        if app is None:
            app = find_app(str(app_path))
        app.import_includes()
    except BaseException as exc:  # whatever it is, the parent must hear of it
        conn.send(("failed", f"a pool process could not load the app {app_path!r}: {exc}"))
        sys.exit(1)
    if log is not None:
        # After the app is loaded: a setup_logging receiver it connects takes over here too.
        setup_logging(*log)
    signals.worker_process_init.send(sender=None)
    try:
        _serve(conn, app, max_tasks, max_memory)
    finally:
        signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)


def _serve(conn: Connection, app: Celeriac, max_tasks: int | None, max_memory: int | None) -> None:
    conn.send(("ready", os.getpid()))
    alarm = _SoftLimit()
    done = 0
    while True:
        try:
            data = conn.recv_bytes()
            try:
                job = ForkingPickler.loads(data)
            except Exception as exc:  # e.g. an argument whose class this process cannot import
                conn.send(
                    ("done", failure(RuntimeError(f"the pool process cannot read the job: {exc}")), False)
                )
                continue
            if job is None:
                return
            conn.send(("started",))
            outcome = _run(app, job, alarm)
            done += 1
            exiting = bool(max_tasks and done >= max_tasks) or bool(max_memory and _rss_kib() > max_memory)
            conn.send_bytes(_done_message(job, outcome, exiting))
            if exiting:
                return
        except (EOFError, OSError):
            return  # the parent is gone


def _settle_in() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the parent decides
    # A SIGTERM sent to the whole process group (systemd's default) is the parent's to act on: it lets
    # running tasks finish (warm shutdown) and kills children itself when it turns cold.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(ValueError):
        signal.set_wakeup_fd(-1)  # a forked child must not write into the parent loop's wake-up pipe
    if sys.platform.startswith("linux"):
        # die with the parent even when it is SIGKILLed, instead of running on as an orphan
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _run(app: Celeriac, job: Job, alarm: _SoftLimit) -> Outcome:
    task = app.tasks.get(job.name)
    try:
        if task is not None and task.is_async:
            # the parent enforces the hard limit by killing this process
            outcome: Outcome = run_coroutine_here(aexecute_limited(app, job, hard=False))
            return outcome
        with alarm.armed(limits(job)[0]):
            return execute(app, job)
    except BaseException as exc:  # no such task, or the alarm went off in a hook
        return failure(exc)


def _rss_kib() -> int:
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:  # no /proc: the peak is the best there is
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak // 1024 if sys.platform == "darwin" else peak


def _done_message(job: Job, outcome: Outcome, exiting: bool) -> bytes:
    if (
        outcome.exc is not None
    ):  # the failure path only: an exception that cannot be read back travels as its record
        outcome.exc = _portable_exc(outcome.exc)
    try:
        return bytes(ForkingPickler.dumps(("done", outcome, exiting)))
    except Exception:  # find out which part cannot travel, and send what can
        return bytes(ForkingPickler.dumps(("done", _portable(job, outcome), exiting)))


def _pickle_error(obj: Any, *, back: bool = False) -> str | None:
    """Why ``obj`` cannot be pickled (and, with ``back``, read back), or None."""
    try:
        data = ForkingPickler.dumps(obj)
        if back:
            pickle.loads(data)
    except Exception as exc:  # pickling fails in many ways
        return f"{type(exc).__name__}: {exc}"
    return None


def _portable(job: Job, outcome: Outcome) -> Outcome:
    why = _pickle_error(outcome.value)
    if why is not None:
        exc = TypeError(f"{job.name}[{job.id}]: the return value cannot be sent from the pool process: {why}")
        return Outcome(
            states.FAILURE,
            exc=exc,
            traceback="".join(traceback.format_exception_only(exc)),
            runtime=outcome.runtime,
            children=outcome.children,
        )
    if outcome.exc is not None:
        outcome.exc = _portable_exc(outcome.exc)
    return outcome


def _portable_exc(exc: BaseException) -> BaseException:
    """``exc``, or its record when it cannot travel: an exception pickles by its ``args``, so one whose
    ``__init__`` takes others pickles fine here and fails to load in the parent (checked both ways)."""
    if _pickle_error(exc, back=True) is None:
        return exc
    if isinstance(exc, Retry) and exc.exc is not None:
        exc.exc = _portable_exc(exc.exc)
        if _pickle_error(exc, back=True) is None:
            return exc
    return ExceptionRecord(exception_to_dict(exc))
