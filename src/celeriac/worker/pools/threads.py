"""The threads pool: sync tasks on reused threads, ``async def`` tasks on the worker's own loop.

Time limits, as far as threads allow:

* sync task, soft limit: ``SoftTimeLimitExceeded`` is raised inside the task's thread; the task may catch
  it and clean up.
* sync task, hard limit: ``TimeLimitExceeded`` is raised inside the thread and ``run`` returns a FAILURE
  at the limit. A thread cannot be killed: an exception raised into it lands only when it next runs
  Python code, so a task stuck in C code (a long ``time.sleep``, a blocking socket read) runs on. Such a
  thread is abandoned; its slot counts as busy until it ends.
* ``async def`` task, soft limit: the coroutine is cancelled, so it sees ``CancelledError`` (not
  ``SoftTimeLimitExceeded``) and may clean up; a run that ends by that cancellation is a FAILURE with
  ``SoftTimeLimitExceeded``.
* ``async def`` task, hard limit: the coroutine is cancelled and ``run`` returns a FAILURE with
  ``TimeLimitExceeded`` at the limit, even if the coroutine swallows the cancellation (it is abandoned
  and keeps its slot until it ends).

Terminating a running task (remote control's ``revoke(terminate=True)``), as far as threads allow:

* sync task: ``celeriac.exceptions.Terminated`` is raised inside its thread, and ``run`` returns REVOKED
  at once. The exception lands at the thread's next Python bytecode: a task looping in Python stops
  within milliseconds, but one blocked in a C call (a long ``time.sleep``, a socket read) runs on until
  the call returns. Its slot counts as busy until the thread is free again.
* ``async def`` task: its coroutine is cancelled (``CancelledError``, which it may catch to clean up), and
  the run ends REVOKED; a coroutine that swallows the cancellation is waited for, and still ends REVOKED.

No signal is sent (a thread has none of its own); ``signum`` is only reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import queue
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import states
from celeriac.exceptions import SoftTimeLimitExceeded, Terminated, TimeLimitExceeded, WorkerLostError
from celeriac.worker._slots import Slots
from celeriac.worker.pools.base import Job, Outcome, Pool, revoked
from celeriac.worker.tracer import TERMINATE_CANCEL, aexecute, execute

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger(__name__)

# why a coroutine was cancelled, as the CancelledError it sees says
_SOFT_CANCEL = "soft time limit"
_STOP_CANCEL = "pool stopped"


def failure(exc: BaseException) -> Outcome:
    """A FAILURE for an exception that escaped the tracer (an unknown task, a limit landing late)."""
    return Outcome(states.FAILURE, exc=exc, traceback="".join(traceback.format_exception(exc)))


def time_limit_outcome(limit: float, runtime: float, *, killed: bool = False) -> Outcome:
    """The FAILURE of a run stopped at its hard time limit; ``killed`` when its process was killed."""
    exc = TimeLimitExceeded(limit)
    return Outcome(
        states.FAILURE,
        exc=exc,
        traceback="".join(traceback.format_exception_only(exc)),
        runtime=runtime,
        worker_lost=killed,
    )


def limits(job: Job) -> tuple[float | None, float | None]:
    """The job's (soft, hard) limits; a soft limit not below the hard one never applies."""
    soft, hard = job.soft_time_limit, job.time_limit
    if soft is not None and hard is not None and soft >= hard:
        soft = None
    return soft, hard


def notify(on_start: Callable[[], Any] | None) -> None:
    """Call the worker's ``on_start``; its failure is the worker's bug, logged, never the task's end."""
    if on_start is not None:
        try:
            on_start()
        except Exception:
            logger.exception("on_start callback failed")


async def _ends_within(watched: set[asyncio.Future[Outcome]], seconds: float) -> bool:
    # asyncio.wait, unlike wait_for, leaves ``run`` alone when the time is up or the caller is cancelled
    done, _ = await asyncio.wait(watched, timeout=max(seconds, 0.0), return_when=asyncio.FIRST_COMPLETED)
    return bool(done)


async def supervise(
    run: asyncio.Future[Outcome],
    soft: float | None,
    hard: float | None,
    on_soft: Callable[[], Any],
    on_hard: Callable[[], Any],
    stopped: asyncio.Future[Outcome] | None = None,
) -> Outcome:
    """Wait for ``run``; call ``on_soft`` at the soft limit; at the hard one, ``on_hard`` and give up;
    when ``stopped`` ends first (the run was terminated), give up with its outcome.

    ``run`` is never cancelled here, even when the caller is: a thread's job runs on, and keeps its slot
    until it ends.
    """
    loop = asyncio.get_running_loop()
    started = loop.time()
    watched = {run} if stopped is None else {run, stopped}
    if soft is not None and not await _ends_within(watched, soft):
        on_soft()
    if hard is not None and not await _ends_within(watched, hard - (loop.time() - started)):
        on_hard()
        return time_limit_outcome(hard, loop.time() - started)
    await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
    if stopped is not None and stopped.done() and not run.done():
        return stopped.result()
    try:
        return run.result()
    except BaseException as exc:  # the tracer failed before reaching the task
        return failure(exc)


async def _outcome(run: asyncio.Task[Outcome]) -> Outcome:
    """The outcome of a coroutine's ``run`` with no limits to watch, awaited directly (cheaper than
    ``supervise`` once per message); a cancelled caller cancels ``run`` with it."""
    try:
        return await run
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the caller was cancelled (and ``run`` with it)
        return failure(exc)
    except BaseException as exc:  # the tracer failed before reaching the task
        return failure(exc)


async def aexecute_limited(
    app: Celeriac,
    job: Job,
    *,
    hard: bool = True,
    on_task: Callable[[asyncio.Task[Outcome]], Any] | None = None,
) -> Outcome:
    """Run an ``async def`` task's job on this loop under its limits (see the module's docstring).

    ``hard=False`` leaves the hard limit to someone else (a process pool's parent). ``on_task`` gets the
    asyncio task running the job, which may outlive this call when abandoned at the hard limit.
    """
    soft, hard_limit = limits(job)
    run = asyncio.ensure_future(aexecute(app, job))
    if on_task is not None:
        on_task(run)
    hard_limit = hard_limit if hard else None
    try:
        if soft is None and hard_limit is None:
            outcome = await _outcome(run)
        else:
            outcome = await supervise(run, soft, hard_limit, lambda: run.cancel(_SOFT_CANCEL), run.cancel)
    except asyncio.CancelledError:
        run.cancel()
        raise
    reason = outcome.exc.args if isinstance(outcome.exc, asyncio.CancelledError) else ()
    if reason == (_SOFT_CANCEL,):
        return _cancelled(outcome, SoftTimeLimitExceeded(soft))
    if reason == (_STOP_CANCEL,):
        return _stopped(outcome)
    return outcome


def _stopped(outcome: Outcome) -> Outcome:
    """The outcome of a job whose coroutine the pool's stop cancelled: lost with its worker."""
    return _cancelled(outcome, WorkerLostError("the pool stopped while the task ran"), lost=True)


def _cancelled(outcome: Outcome, exc: BaseException, lost: bool = False) -> Outcome:
    einfo = (outcome.traceback or "") + "".join(traceback.format_exception_only(exc))
    return Outcome(
        states.FAILURE,
        exc=exc,
        traceback=einfo,
        runtime=outcome.runtime,
        children=outcome.children,
        worker_lost=lost,
    )


def _raise_in_thread(ident: int, exc_type: type[BaseException] | None) -> None:
    # None clears an exception set earlier and not yet raised
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), None if exc_type is None else ctypes.py_object(exc_type)
    )


class _Call:
    """One sync job on a lane. ``interrupt`` raises inside the job, and only while the job runs."""

    def __init__(self, app: Celeriac, job: Job, loop: asyncio.AbstractEventLoop) -> None:
        self.app = app
        self.job = job
        self.loop = loop
        self.future: asyncio.Future[Outcome] = loop.create_future()
        #: Ended by ``terminate``: the run's outcome without waiting for the thread.
        self.stopped: asyncio.Future[Outcome] = loop.create_future()
        self._lock = threading.Lock()
        self._thread: int | None = None

    def interrupt(self, exc_type: type[BaseException]) -> None:
        with self._lock:
            if self._thread is not None:
                _raise_in_thread(self._thread, exc_type)

    def __call__(self) -> None:
        outcome = self._execute()
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits for this outcome any more
            self.loop.call_soon_threadsafe(settle, self.future, outcome)

    def _execute(self) -> Outcome:
        try:
            try:
                with self._lock:
                    self._thread = threading.get_ident()
                return execute(self.app, self.job)
            finally:
                # after this no interrupt can reach the thread, and none set earlier is left pending
                with self._lock:
                    self._thread = None
                    _raise_in_thread(threading.get_ident(), None)
        except BaseException as exc:  # a limit landing as the task ended, or no such task
            return failure(exc)


def settle(future: asyncio.Future[Outcome], outcome: Outcome) -> None:
    """End ``future`` with ``outcome`` unless it already ended (given up at a limit, or cancelled)."""
    if not future.done():
        future.set_result(outcome)


class _Lane:
    """A daemon thread running one call at a time, kept for the next one (thread-locals survive)."""

    def __init__(self, name: str) -> None:
        self._inbox: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        # daemon: a task stuck forever must not keep the worker from exiting
        threading.Thread(target=self._serve, name=name, daemon=True).start()

    def submit(self, call: _Call) -> None:
        self._inbox.put(call)

    def close(self) -> None:
        """End the thread once its current call (if any) is done."""
        self._inbox.put(None)

    def _serve(self) -> None:
        while (call := self._inbox.get()) is not None:
            call()


def _not_started(signum: int) -> None:
    """What terminating a job that waits for a slot takes: nothing (``run`` sees it and returns)."""


class ThreadPool(Pool):
    """Runs sync tasks on up to ``concurrency`` threads and ``async def`` tasks on the worker's loop.

    Both kinds count against ``concurrency``. Time limits: see this module's docstring.
    """

    name: ClassVar[str] = "threads"
    #: How long a warm ``stop`` waits for running jobs before leaving them behind.
    stop_timeout: ClassVar[float] = 5.0

    def __init__(self, app: Celeriac, concurrency: int, **options: Any) -> None:
        """Take ``Pool``'s options (``app_path``, ``max_tasks_per_child``, ...), defined there only."""
        super().__init__(app, concurrency, **options)
        self._slots = Slots(concurrency)
        self._lanes: list[_Lane] = []
        self._idle: list[_Lane] = []
        self._running: set[asyncio.Future[Outcome]] = set()
        #: Callers' tasks running an ``async def`` job in themselves (``_run_here``).
        self._here: set[asyncio.Task[Any]] = set()
        #: How to stop each running job, by task id (``terminate``).
        self._stoppers: dict[str, Callable[[int], object]] = {}
        #: The jobs ``terminate`` stopped, with the signal asked for.
        self._terminated: dict[str, int] = {}
        self._stopped = False

    async def run(self, job: Job, on_start: Callable[[], Any] | None = None) -> Outcome:
        self.busy += 1
        # Terminated while it waits for a slot, it never starts.
        self._stoppers[job.id] = _not_started
        try:
            await self._slots.acquire()
        except BaseException:
            self.busy -= 1
            self._stoppers.pop(job.id, None)
            self._terminated.pop(job.id, None)
            raise
        signum = self._terminated.pop(job.id, None)
        if signum is not None:
            self._stoppers.pop(job.id, None)
            self.busy -= 1
            self._slots.release()
            return revoked(signum)
        notify(on_start)
        task = self.app.tasks.get(job.name)
        try:
            if task is not None and task.is_async:
                if limits(job) == (None, None):
                    outcome = await self._run_here(job)
                else:
                    outcome = await aexecute_limited(
                        self.app, job, on_task=lambda run: self._hold_async(job.id, run)
                    )
            else:
                outcome = await self._run_in_thread(job)
        finally:
            self._stoppers.pop(job.id, None)
        signum = self._terminated.pop(job.id, None)
        if signum is not None:  # REVOKED however the run ended once it was told to stop
            outcome = revoked(signum, outcome.runtime, outcome.children)
        return outcome

    def terminate(self, task_id: str, signum: int) -> bool:
        """Stop the running ``task_id`` cooperatively (see the module's docstring): its run ends REVOKED."""
        stop = self._stoppers.get(task_id)
        if stop is None or task_id in self._terminated:
            return stop is not None
        logger.warning("%s[%s] terminated by remote control", self.name, task_id)
        self._terminated[task_id] = signum
        stop(signum)
        return True

    def resize(self, concurrency: int) -> None:
        """Let ``concurrency`` jobs run at once; threads beyond that are ended once idle."""
        if concurrency < 0:
            raise ValueError(f"a pool cannot have {concurrency} slots")
        self.concurrency = concurrency
        self._slots.resize(concurrency)
        while len(self._lanes) > max(concurrency, 1) and self._idle:
            lane = self._idle.pop()
            self._lanes.remove(lane)
            lane.close()
        logger.info("%s pool resized to %d slot(s)", self.name, concurrency)

    def _hold_async(self, task_id: str, run: asyncio.Task[Outcome]) -> None:
        self._hold(run)
        self._stoppers[task_id] = lambda _: run.cancel(TERMINATE_CANCEL)

    async def _run_here(self, job: Job) -> Outcome:
        """An ``async def`` job with no time limit to watch, run in the caller's own task: a task of its
        own costs a fifth of what the worker spends on a no-op. While the job runs, ``stop`` cancels the
        caller's task, and the job ends as the pool's stop says (``WorkerLostError``)."""
        current = asyncio.current_task()
        assert current is not None
        self._here.add(current)
        # Registered while the job is awaited, so that the cancellation lands inside the job's own code.
        self._stoppers[job.id] = lambda _: current.cancel(TERMINATE_CANCEL)
        try:
            outcome = await aexecute(self.app, job)
        finally:
            self._stoppers.pop(job.id, None)
            self._here.discard(current)
            self.busy -= 1
            self._slots.release()
        if job.id in self._terminated and current.cancelling():
            current.uncancel()  # the cancellation was the job's, and it has ended
            return outcome
        if isinstance(outcome.exc, asyncio.CancelledError) and current.cancelling():
            if outcome.exc.args != (_STOP_CANCEL,):
                raise asyncio.CancelledError  # the caller was cancelled, not the job
            current.uncancel()
            return _stopped(outcome)
        return outcome

    async def _run_in_thread(self, job: Job) -> Outcome:
        call = _Call(self.app, job, asyncio.get_running_loop())
        self._hold(call.future)
        try:
            lane = self._idle.pop() if self._idle else self._new_lane()
        except RuntimeError as exc:  # no thread could be started
            settle(call.future, failure(exc))
            return call.future.result()
        call.future.add_done_callback(lambda _: self._park(lane))
        lane.submit(call)
        started = call.loop.time()

        def stop(signum: int) -> None:
            call.interrupt(Terminated)
            settle(call.stopped, revoked(signum, call.loop.time() - started))

        self._stoppers[job.id] = stop
        soft, hard = limits(job)
        return await supervise(
            call.future,
            soft,
            hard,
            lambda: call.interrupt(SoftTimeLimitExceeded),
            lambda: call.interrupt(TimeLimitExceeded),
            call.stopped,
        )

    def _new_lane(self) -> _Lane:
        lane = _Lane(f"celeriac-{self.name}-{len(self._lanes)}")
        self._lanes.append(lane)
        return lane

    def _park(self, lane: _Lane) -> None:
        if self._stopped or len(self._lanes) > max(self.concurrency, 1):  # stopped, or shrunk
            lane.close()
            if lane in self._lanes:
                self._lanes.remove(lane)
        else:
            self._idle.append(lane)

    def _hold(self, run: asyncio.Future[Outcome]) -> None:
        """Keep a slot until ``run`` ends: later than ``run`` returns when the job was abandoned."""
        self._running.add(run)
        run.add_done_callback(self._release)

    def _release(self, run: asyncio.Future[Outcome]) -> None:
        self._running.discard(run)
        self.busy -= 1
        self._slots.release()

    async def stop(self, cold: bool = False) -> None:
        """Stop; warm, first wait up to ``stop_timeout`` for running jobs.

        Then coroutines still running are cancelled (their ``run`` returns a FAILURE with
        ``WorkerLostError`` and ``worker_lost``); a thread cannot be stopped, so a sync job still running
        is left to finish (its ``run`` returns when it does) and its thread ends after it.
        """
        self._stopped = True
        if (self._running or self._here) and not cold:
            # A task in ``_here`` ends a little after its job: the caller's own finishing is awaited too.
            await asyncio.wait({*self._running, *self._here}, timeout=self.stop_timeout)
        for run in [*self._running, *self._here]:
            if isinstance(run, asyncio.Task):
                run.cancel(_STOP_CANCEL)
        for lane in self._lanes:
            lane.close()
        self._lanes.clear()
        self._idle.clear()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "threads": len(self._lanes)}
