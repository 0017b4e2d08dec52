"""Running one job: the task's function with its hooks, retries and context, in whatever pool.

The same code runs in a thread, in a child process and on the event loop; it only calls the function
and reports how it ended. Storing results, re-sending retries and acking are the worker's business.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celeriac import signals, states
from celeriac._request import Context, current
from celeriac.canvas import Signature
from celeriac.exceptions import (
    ExceptionInfo,
    Ignore,
    Reject,
    Retry,
    SoftTimeLimitExceeded,
    Terminated,
    TimeLimitExceeded,
)
from celeriac.result import AsyncResult, GroupResult
from celeriac.worker.pools.base import Job, Outcome, revoked

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.task import Task


logger = logging.getLogger(__name__)

# What a pool raises inside a thread: it may land in the tracer's own code just after the task.
_RAISED_INTO_THREAD = (SoftTimeLimitExceeded, TimeLimitExceeded)

#: What the CancelledError says when remote control terminated an ``async def`` task's coroutine.
TERMINATE_CANCEL = "terminated by remote control"


def terminated(exc: BaseException) -> bool:
    """Whether ``exc`` is how remote control stopped a run: ``Terminated`` raised in its thread, or its
    coroutine cancelled with ``TERMINATE_CANCEL``."""
    return isinstance(exc, Terminated) or (
        isinstance(exc, asyncio.CancelledError) and exc.args == (TERMINATE_CANCEL,)
    )


class _Run:
    """One run's bookkeeping, shared by the sync and async faces: the task, its request context (made
    current until the run ends), and the clock."""

    def __init__(self, app: Celeriac, job: Job) -> None:
        self.task = app.get_task(job.name)
        self.job = job
        self.ctx = Context(**job.request)
        self.ctx.called_directly = False
        self.ctx.children = []
        self.started = time.perf_counter()
        self.token = current.set(self.ctx)
        signals.task_prerun.send(
            sender=self.task, task_id=job.id, task=self.task, args=job.args, kwargs=job.kwargs
        )

    def call(self) -> Any:
        """``before_start``, then the function (a coroutine for ``async def`` tasks)."""
        job = self.job
        self.task.before_start(job.id, job.args, job.kwargs)
        return self.task.run(*job.args, **job.kwargs)

    def succeeded(self, value: Any) -> Outcome:
        return self._end(lambda: _succeeded(self.task, self.job, value))

    def failed(self, exc: BaseException) -> Outcome:
        return self._end(lambda: _failed(self.task, self.job, self.ctx, exc))

    def _end(self, outcome: Callable[[], Outcome]) -> Outcome:
        # Hooks (on_success, on_failure, on_retry) still see the request; after_return runs after it.
        try:
            ended = outcome()
        finally:
            current.reset(self.token)
        ended = _finish(self.task, self.job, self.ctx, ended, self.started)
        if signals.task_postrun.has_receivers():
            self._postrun(ended)
        return ended

    def _postrun(self, ended: Outcome) -> None:
        # Receivers see the request, as the task's own hooks do (their log lines name the task).
        token = current.set(self.ctx)
        try:
            signals.task_postrun.send(
                sender=self.task,
                task_id=self.job.id,
                task=self.task,
                args=self.job.args,
                kwargs=self.job.kwargs,
                retval=ended.value if ended.status == states.SUCCESS else ended.exc,
                state=ended.status,
            )
        finally:
            current.reset(token)


def execute(app: Celeriac, job: Job) -> Outcome:
    """Run a job from synchronous code (a thread or a child process); async tasks get a loop here.

    A failure of celeriac's own code around the task (not the task raising) ends the run as a FAILURE
    with that error, and sends ``task_internal_error``.
    """
    try:
        run = _Run(app, job)
        try:
            value = run.call()
            if run.task.is_async:
                value = run_coroutine_here(value)
        except BaseException as exc:  # every end of a task is an outcome
            return run.failed(exc)
        return run.succeeded(value)
    except _RAISED_INTO_THREAD:
        raise  # a time limit landing in our code as the task ended: the pool's business, not a bug
    except Exception as exc:
        return internal_error(app, job, exc)


async def aexecute(app: Celeriac, job: Job) -> Outcome:
    """Run an ``async def`` task's job on the running loop (internal errors: as ``execute``)."""
    try:
        run = _Run(app, job)
        try:
            value = run.call()
            if run.task.is_async:
                value = await value
        except BaseException as exc:  # every end of a task is an outcome
            return run.failed(exc)
        return run.succeeded(value)
    except _RAISED_INTO_THREAD:
        raise  # a time limit landing in our code as the task ended: the pool's business, not a bug
    except Exception as exc:
        return internal_error(app, job, exc)


def internal_error(app: Celeriac, job: Job, exc: Exception, request: Context | None = None) -> Outcome:
    """The FAILURE of a run that celeriac itself failed to handle; sends ``task_internal_error`` (sender:
    the task) with the error as an ``ExceptionInfo``."""
    einfo = ExceptionInfo(exc, internal=True)
    logger.error("internal error handling %s[%s]:\n%s", job.name, job.id, einfo.traceback)
    task = app.tasks.get(job.name)
    if request is None:
        try:
            request = Context(**job.request)
        except Exception:
            request = None  # what failed may be the request itself
    signals.task_internal_error.send(
        sender=task,
        task_id=job.id,
        args=job.args,
        kwargs=job.kwargs,
        request=request,
        exception=exc,
        traceback=exc.__traceback__,
        einfo=einfo,
    )
    return Outcome(states.FAILURE, exc=exc, traceback=einfo.traceback)


def _succeeded(task: Task[Any, Any], job: Job, value: Any) -> Outcome:
    try:
        task.on_success(value, job.id, job.args, job.kwargs)
    except Exception as exc:
        return _failed_after_success(task, job, exc)
    signals.task_success.send(sender=task, result=value)
    if isinstance(value, AsyncResult | GroupResult):
        # A task that returns the handle of what it sent stores the handle's tuple, as Celery does: the
        # caller reads ids it can rebuild handles from, and no serializer has to know our classes.
        value = value.as_tuple()
    elif isinstance(value, Signature):
        value = value.as_dict()  # its embedded form, as Celery stores it (and a pool child can send it)
    return Outcome(states.SUCCESS, value=value)


def _failed_after_success(task: Task[Any, Any], job: Job, exc: Exception) -> Outcome:
    einfo = traceback.format_exc()
    _send_failure(task, job, exc, einfo)
    return Outcome(states.FAILURE, exc=exc, traceback=einfo)


def _send_failure(task: Task[Any, Any], job: Job, exc: BaseException, einfo: str) -> None:
    signals.task_failure.send(
        sender=task,
        task_id=job.id,
        exception=exc,
        args=job.args,
        kwargs=job.kwargs,
        traceback=exc.__traceback__,
        einfo=ExceptionInfo(exc, einfo),
    )


def _failed(task: Task[Any, Any], job: Job, ctx: Context, exc: BaseException) -> Outcome:
    if terminated(exc):
        return revoked()  # not the task's failure: no on_failure, no task_failure
    if isinstance(exc, Retry):
        return _retrying(task, job, exc)
    if isinstance(exc, Reject):
        return Outcome(states.REJECTED, exc=exc)
    if isinstance(exc, Ignore):
        return Outcome(states.IGNORED)
    if (
        task.autoretry_for
        and isinstance(exc, task.autoretry_for)
        and not (task.dont_autoretry_for and isinstance(exc, task.dont_autoretry_for))
    ):
        token = current.set(ctx)
        try:
            options = dict(task.retry_kwargs)
            options.setdefault("countdown", task.backoff_countdown(ctx.retries))
            task.retry(exc=exc, **options)
        except Retry as retry:
            return _retrying(task, job, retry)
        except BaseException as final:
            exc = final
        finally:
            current.reset(token)
    einfo = "".join(traceback.format_exception(exc))
    expected = bool(task.throws) and isinstance(exc, task.throws)
    try:
        task.on_failure(exc, job.id, job.args, job.kwargs, einfo)
    except Exception:
        einfo += "\nwhile running on_failure:\n" + traceback.format_exc()
    _send_failure(task, job, exc, einfo)
    return Outcome(states.FAILURE, exc=exc, traceback=einfo, expected=expected)


def _retrying(task: Task[Any, Any], job: Job, retry: Retry) -> Outcome:
    # Celery records the traceback of the retry's cause, or of the Retry itself when it has none.
    einfo = "".join(traceback.format_exception(retry.exc if retry.exc is not None else retry))
    try:
        task.on_retry(retry.exc or retry, job.id, job.args, job.kwargs, einfo)
    except Exception:
        einfo += "\nwhile running on_retry:\n" + traceback.format_exc()
    signals.task_retry.send(
        sender=task, request=current.get(), reason=retry, einfo=ExceptionInfo(retry.exc or retry, einfo)
    )
    return Outcome(states.RETRY, exc=retry, traceback=einfo)


def _finish(task: Task[Any, Any], job: Job, ctx: Context, outcome: Outcome, started: float) -> Outcome:
    outcome.runtime = time.perf_counter() - started
    outcome.children = list(ctx.children)
    retval = outcome.value if outcome.status == states.SUCCESS else outcome.exc
    try:
        task.after_return(outcome.status, retval, job.id, job.args, job.kwargs, outcome.traceback)
    except Exception:
        outcome.traceback = (
            (outcome.traceback or "") + "\nwhile running after_return:\n" + traceback.format_exc()
        )
    return outcome


def run_coroutine_here(coro: Any) -> Any:
    """Run a coroutine to its end from synchronous code; each thread keeps one loop for this."""
    runner: asyncio.Runner | None = getattr(_threads, "runner", None)
    if runner is None:
        runner = _threads.runner = asyncio.Runner()
    return runner.run(coro)


_threads = threading.local()
