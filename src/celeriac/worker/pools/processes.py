"""The processes pool (``-P processes``, alias ``prefork``; the default): supervised child processes.

Each child runs one job at a time and talks to the parent over its own duplex pipe (the child's side is
``celeriac.worker.pools._child``). The parent watches every pipe and every child's exit with
``loop.add_reader``, so it never blocks its loop waiting for one.

What the parent promises:

* A child that dies (segfault, ``os._exit``, SIGKILL, OOM killer) while running a job ends that job as a
  FAILURE with ``WorkerLostError`` and ``worker_lost``; any child that dies is replaced at once.
* Hard time limit: the parent kills the child running the job at the limit (SIGKILL, that child only),
  ends the job as a FAILURE with ``TimeLimitExceeded`` (``worker_lost`` true: its process was killed),
  and starts a replacement. This holds whatever the task is doing, C code included.
* Soft time limit: ``SoftTimeLimitExceeded`` is raised inside a sync task (SIGALRM in the child), which
  may catch it and clean up; an ``async def`` task is cancelled instead and sees ``CancelledError``.
* ``max_tasks_per_child`` and ``max_memory_per_child`` (KiB, resident) recycle a child after the job
  that reaches them, and that job's outcome is delivered first.
* Restarts are rate limited per slot, so a crash loop cannot spin the CPU; a child that cannot load the
  app during ``start()`` makes ``start()`` fail instead of looping.
* ``stop()`` reaps every child: none is left orphaned or a zombie.
* An idle child is taken last in, first out: jobs that come one at a time run in the same child.
* ``resize()`` starts children at once to grow; to shrink it retires idle children first, then busy
  ones after their current job (never killed).

Children are started with ``spawn`` and import the app themselves (``find_app(app_path)``), so the
parent stays small and never forks a process that has threads. Without ``app_path`` they are forked
and inherit the app object: that is for tests and programmatic use, where the app is not importable.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import multiprocessing
import multiprocessing.util  # its exit hook joins children: ours, registered later, runs first
import os
import signal
import traceback
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import ForkContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac import states
from celeriac._exception_records import exception_from_dict
from celeriac.exceptions import ConfigurationError, Retry, WorkerLostError
from celeriac.worker.pools._child import ExceptionRecord, child_main
from celeriac.worker.pools.base import Job, Outcome, Pool, revoked
from celeriac.worker.pools.threads import failure, limits, notify, settle, time_limit_outcome

if TYPE_CHECKING:
    from celeriac.app import Celeriac

logger = logging.getLogger(__name__)


def _rebuilt(exc: BaseException | None) -> BaseException | None:
    return exception_from_dict(exc.args[0]) if isinstance(exc, ExceptionRecord) else exc


def _exit_reason(code: int | None) -> str:
    if code is None:
        return "exit status unknown"
    if code < 0:
        try:
            return f"signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"signal {-code}"
    return f"exitcode {code}"


@dataclass(eq=False)
class _Running:
    job: Job
    on_start: Callable[[], Any] | None
    future: asyncio.Future[Outcome]
    sent: float
    timer: asyncio.TimerHandle | None = None


@dataclass(eq=False)
class _Child:
    slot: int
    process: BaseProcess
    conn: Connection
    pid: int
    fd: int
    ready: bool = False
    gone: bool = False
    leaving: bool = False  # told to stop, recycling itself, or killed: takes no more jobs
    retired: bool = False  # let go by a shrink: dismissed once idle, and not replaced
    running: _Running | None = None
    watchdog: asyncio.TimerHandle | None = None

    def detach(self) -> _Running | None:
        """The job this child runs, no longer its own: nothing more will end it through this child."""
        running, self.running = self.running, None
        if running is not None and running.timer is not None:
            running.timer.cancel()
        return running


class ProcessPool(Pool):
    """Runs each job in one of ``concurrency`` supervised child processes (see the module docstring)."""

    name: ClassVar[str] = "processes"
    #: How long a child may take to load the app before it counts as failed.
    startup_timeout: ClassVar[float] = 60.0
    #: How long a warm ``stop`` waits for children to finish and exit before killing them.
    stop_timeout: ClassVar[float] = 5.0
    #: Starts allowed per slot within one second; more wait, with a warning, so crash loops stay cheap.
    restart_burst: ClassVar[int] = 5

    def __init__(self, app: Celeriac, concurrency: int, **options: Any) -> None:
        """Take ``Pool``'s options (``app_path``, ``max_tasks_per_child``, ...), defined there only."""
        super().__init__(app, concurrency, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._children: dict[int, _Child] = {}
        self._idle: deque[_Child] = deque()
        self._waiters: deque[asyncio.Future[_Child | None]] = deque()
        self._starts: dict[int, deque[float]] = {}
        self._failed_starts: dict[int, int] = {}
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        self._startup: asyncio.Future[None] | None = None
        self._gone = asyncio.Event()
        self._stopping = False
        #: Jobs waiting for a child, by task id; the signal once ``terminate`` stopped one.
        self._pending: dict[str, int | None] = {}

    # -- starting and restarting -------------------------------------------------------------------
    async def start(self) -> None:
        """Start the children and wait until each has loaded the app.

        Raises:
            ConfigurationError: a child could not load the app (its error is in the message) or none
                was ready within ``startup_timeout``; then no child is left running.
        """
        self._loop = asyncio.get_running_loop()
        self._startup = self._loop.create_future()
        _live_pools.add(self)
        try:
            for slot in range(self.concurrency):
                self._launch(slot)
            if not self.concurrency:  # an autoscaled pool may start empty
                self._startup.set_result(None)
            await asyncio.wait_for(asyncio.shield(self._startup), self.startup_timeout)
        except BaseException as exc:
            await self.stop(cold=True)
            if isinstance(exc, TimeoutError):
                raise ConfigurationError(
                    f"pool processes did not load the app within {self.startup_timeout}s"
                ) from None
            raise

    def _launch(self, slot: int) -> None:
        self._restarts.pop(slot, None)
        if self._stopping or self._loop is None:
            return
        if self.app_path:
            context: SpawnContext | ForkContext = multiprocessing.get_context("spawn")
        else:
            context = multiprocessing.get_context("fork")
        parent_end, child_end = context.Pipe(duplex=True)
        process = context.Process(
            target=child_main,
            name=f"celeriac-pool-{slot}",
            args=(
                child_end,
                self.app_path,
                None if self.app_path else self.app,
                self.max_tasks_per_child,
                self.max_memory_per_child,
                self._log_setup() if self.app_path else None,
            ),
        )
        try:
            process.start()
        except OSError as exc:
            parent_end.close()
            logger.error("cannot start a pool process: %s", exc)
            self._restart_later(slot, failed=True)
            return
        finally:
            child_end.close()  # the child has its own copy; ours would hide the child's exit from us
        assert process.pid is not None
        child = _Child(slot, process, parent_end, process.pid, parent_end.fileno())
        self._children[slot] = child
        self._loop.add_reader(child.fd, self._on_readable, child)
        self._loop.add_reader(process.sentinel, self._on_exit, child)
        child.watchdog = self._loop.call_later(self.startup_timeout, self._start_timed_out, child)

    def _restart_later(self, slot: int, failed: bool) -> None:
        assert self._loop is not None
        if failed and self._startup is not None and not self._startup.done():
            self._startup.set_exception(ConfigurationError("a pool process could not be started"))
            return
        now = self._loop.time()
        delay = 0.0
        if failed:  # it never loaded the app: back off, it will likely fail again
            count = self._failed_starts[slot] = self._failed_starts.get(slot, 0) + 1
            delay = min(0.5 * 2.0 ** (count - 1), 30.0)
        starts = self._starts.setdefault(slot, deque(maxlen=self.restart_burst))
        if len(starts) == starts.maxlen and now - starts[0] < 1.0:
            delay = max(delay, starts[0] + 1.0 - now)
        if delay:
            logger.warning("pool process %d is restarting too often; next start in %.1fs", slot, delay)
        starts.append(now + delay)
        self._restarts[slot] = self._loop.call_later(delay, self._launch, slot)

    def _start_timed_out(self, child: _Child) -> None:
        if not child.ready and not child.gone:
            logger.error(
                "pool process %d did not load the app within %ss; killing it", child.pid, self.startup_timeout
            )
            self._kill(child)

    # -- messages from children ---------------------------------------------------------------------
    def _on_readable(self, child: _Child) -> None:
        if not self._receive(child):
            assert self._loop is not None
            self._loop.remove_reader(child.fd)  # the child is gone; its sentinel reports the exit

    def _receive(self, child: _Child) -> bool:
        """Handle one message from ``child``; False at the end of the pipe."""
        try:
            message = child.conn.recv()
        except (EOFError, OSError):
            return False
        except Exception as exc:  # an outcome this process cannot unpickle
            message = (
                "done",
                failure(
                    RuntimeError(
                        f"the outcome cannot be read from the pool process: {type(exc).__name__}: {exc}"
                    )
                ),
                False,
            )
        kind = message[0]
        if kind == "ready":
            self._on_ready(child)
        elif kind == "failed":
            self._on_failed_start(child, message[1])
        elif kind == "started" and child.running is not None:
            notify(child.running.on_start)
        elif kind == "done":
            self._on_done(child, message[1], message[2])
        return True

    def _on_ready(self, child: _Child) -> None:
        child.ready = True
        if child.watchdog is not None:
            child.watchdog.cancel()
        self._failed_starts[child.slot] = 0
        if (
            self._startup is not None
            and not self._startup.done()
            and len(self._children) == self.concurrency
            and all(c.ready for c in self._children.values())
        ):
            self._startup.set_result(None)
        self._put_idle(child)

    def _on_failed_start(self, child: _Child, error: str) -> None:
        child.leaving = True
        if self._startup is not None and not self._startup.done():
            self._startup.set_exception(ConfigurationError(error))
        else:
            logger.error("pool process %d: %s", child.pid, error)

    def _on_done(self, child: _Child, outcome: Outcome, exiting: bool) -> None:
        running = child.detach()
        if running is not None:
            outcome.exc = _rebuilt(outcome.exc)
            if isinstance(outcome.exc, Retry):
                outcome.exc.exc = _rebuilt(outcome.exc.exc)
            settle(running.future, outcome)
        if exiting:
            child.leaving = True
        if not child.leaving:
            self._put_idle(child)

    def _on_exit(self, child: _Child) -> None:
        assert self._loop is not None
        self._loop.remove_reader(child.process.sentinel)
        while not child.conn.closed and child.conn.poll() and self._receive(child):
            pass  # its last words: an outcome sent just before a clean exit
        self._loop.remove_reader(child.fd)
        child.process.join(1.0)  # the sentinel fired, so this reaps at once
        code = child.process.exitcode
        child.gone = True
        child.conn.close()
        if code is not None:
            child.process.close()  # frees its sentinel now rather than at garbage collection
        if child.watchdog is not None:
            child.watchdog.cancel()
        if self._children.get(child.slot) is child:
            del self._children[child.slot]
        with contextlib.suppress(ValueError):
            self._idle.remove(child)
        reason = _exit_reason(code)
        running = child.detach()
        if running is not None:
            logger.error(
                "pool process %d exited while running %s[%s]: %s",
                child.pid,
                running.job.name,
                running.job.id,
                reason,
            )
            exc = WorkerLostError(f"Worker exited prematurely: {reason}")
            settle(
                running.future,
                Outcome(
                    states.FAILURE,
                    exc=exc,
                    traceback="".join(traceback.format_exception_only(exc)),
                    runtime=self._loop.time() - running.sent,
                    worker_lost=True,
                ),
            )
        elif child.ready and not child.leaving:
            logger.warning("idle pool process %d exited: %s", child.pid, reason)
        if self._stopping:
            if not self._children:
                self._gone.set()
        elif child.retired:
            pass  # let go by a shrink: not replaced
        elif not child.ready and self._startup is not None and not self._startup.done():
            self._startup.set_exception(
                ConfigurationError(
                    f"a pool process exited while loading the app {self.app_path!r}: {reason} (a script "
                    "that starts the worker must do so under `if __name__ == '__main__':`, as pool "
                    "processes import the main module)"
                )
            )
        else:
            self._restart_later(child.slot, failed=not child.ready)

    # -- running jobs --------------------------------------------------------------------------------
    async def run(self, job: Job, on_start: Callable[[], Any] | None = None) -> Outcome:
        self.busy += 1
        self._pending[job.id] = None  # terminated while it waits for a child, it never starts
        try:
            try:
                child = await self._take()
            finally:
                signum = self._pending.pop(job.id, None)
            if child is None:
                exc = WorkerLostError("the pool stopped before the job started")
                return Outcome(states.FAILURE, exc=exc, worker_lost=True)
            if signum is not None:
                self._put_idle(child)
                return revoked(signum)
            return await self._dispatch(child, job, on_start)
        finally:
            self.busy -= 1

    async def _take(self) -> _Child | None:
        """An idle child, waiting for one if need be; None once the pool is stopping."""
        assert self._loop is not None, "start() the pool first"
        while not self._stopping:
            if self._idle:
                # The child idle the shortest time: an idle pool gives one job after another to the same
                # child, as Celery's prefork does, so state task code keeps on its Task instance (a retry
                # counter) is there again for the next run; the others stay cold.
                child: _Child | None = self._idle.pop()
            else:
                waiter: asyncio.Future[_Child | None] = self._loop.create_future()
                self._waiters.append(waiter)
                try:
                    child = await waiter
                except asyncio.CancelledError:
                    if waiter.done() and not waiter.cancelled() and (given := waiter.result()) is not None:
                        self._put_idle(given)
                    raise
            if child is None or not (child.gone or child.leaving):
                return child
        return None

    def _put_idle(self, child: _Child) -> None:
        if self._stopping or child.retired:
            self._dismiss(child)
            return
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(child)
                return
        self._idle.append(child)

    async def _dispatch(self, child: _Child, job: Job, on_start: Callable[[], Any] | None) -> Outcome:
        assert self._loop is not None
        running = _Running(job, on_start, self._loop.create_future(), self._loop.time())
        child.running = running
        try:
            child.conn.send(job)
        except OSError:
            pass  # the child is dying: its exit ends the job as lost
        except Exception as exc:  # the job's arguments cannot be pickled
            child.running = None
            self._put_idle(child)
            return failure(exc)
        hard = limits(job)[1]
        if hard is not None:
            running.timer = self._loop.call_later(hard, self._time_out, child, running, hard)
        return await running.future

    def _time_out(self, child: _Child, running: _Running, limit: float) -> None:
        if child.running is not running:
            return
        assert self._loop is not None
        logger.error(
            "%s[%s] exceeded its hard time limit (%ss): killing pool process %d",
            running.job.name,
            running.job.id,
            limit,
            child.pid,
        )
        child.detach()
        self._kill(child)
        settle(running.future, time_limit_outcome(limit, self._loop.time() - running.sent, killed=True))

    def _running_child(self, task_id: str) -> _Child | None:
        for child in self._children.values():
            if child.running is not None and child.running.job.id == task_id:
                return child
        return None

    def pid_of(self, task_id: str) -> int | None:
        """The pid of the child running ``task_id``."""
        child = self._running_child(task_id)
        return child.pid if child is not None else None

    def terminate(self, task_id: str, signum: int) -> bool:
        """Signal the child running ``task_id`` and end its job as REVOKED (``TaskRevokedError``).

        Children ignore SIGTERM and SIGINT (a worker's shutdown is the parent's business), so those two
        become SIGKILL. The child is replaced if the signal ends it; if it survives the signal, its
        outcome for this job is ignored and it takes the next job.
        """
        child = self._running_child(task_id)
        if child is None and task_id in self._pending:
            self._pending[task_id] = signum
            return True
        if child is None or child.gone:
            return False
        assert self._loop is not None
        if signum in (signal.SIGTERM, signal.SIGINT):
            signum = signal.SIGKILL
        running = child.detach()
        assert running is not None
        logger.warning(
            "%s[%s] terminated by remote control: sending %s to pool process %d",
            running.job.name,
            task_id,
            signal.Signals(signum).name,
            child.pid,
        )
        if signum == signal.SIGKILL:
            child.leaving = True
        with contextlib.suppress(OSError):
            os.kill(child.pid, signum)
        settle(running.future, revoked(signum, self._loop.time() - running.sent))
        return True

    # -- resizing ------------------------------------------------------------------------------------
    def resize(self, concurrency: int) -> None:
        """Run ``concurrency`` children: new ones start now; a shrink retires idle children first, then
        busy ones once their job ends."""
        if concurrency < 0:
            raise ValueError(f"a pool cannot have {concurrency} processes")
        if self._stopping or self._loop is None:
            raise RuntimeError("the pool is not running")
        change = concurrency - self.concurrency
        self.concurrency = concurrency
        for _ in range(change):
            slot = next(s for s in range(len(self._children) + len(self._restarts) + 1) if self._free(s))
            self._launch(slot)
        for _ in range(-change):
            self._retire_one()
        logger.info("processes pool resized to %d process(es)", concurrency)

    def _free(self, slot: int) -> bool:
        return slot not in self._children and slot not in self._restarts

    def _retire_one(self) -> None:
        """Let one child go: one waiting to be restarted, else an idle one, one starting, a busy one."""
        if self._restarts:
            slot = max(self._restarts)
            self._restarts.pop(slot).cancel()
            return
        staying = [c for c in self._children.values() if not c.retired and not c.leaving]
        idle = [c for c in self._idle if c in staying]
        starting = [c for c in staying if not c.ready]
        candidates = idle or starting or staying
        if not candidates:
            return
        child = candidates[-1]
        child.retired = True
        if child in self._idle:
            self._idle.remove(child)
            self._dismiss(child)
        elif not child.ready:
            self._kill(child)  # still loading the app: nothing of value is lost
        # a busy one is dismissed when its job is done (_put_idle)

    # -- stopping ------------------------------------------------------------------------------------
    def _kill(self, child: _Child) -> None:
        child.leaving = True
        if not child.gone:  # once reaped, its pid may belong to someone else
            with contextlib.suppress(OSError):
                child.process.kill()

    def _dismiss(self, child: _Child) -> None:
        child.leaving = True
        with contextlib.suppress(OSError):
            child.conn.send(None)

    async def stop(self, cold: bool = False) -> None:
        """Stop every child and reap it; safe to call again, or cold while a warm stop waits.

        Warm: idle children are told to exit, busy ones after their job; after ``stop_timeout`` the
        rest are killed. Cold: all are killed now, and their ``run`` calls return ``worker_lost``.
        ``run`` calls still waiting for a child return ``worker_lost`` without running.
        """
        self._stopping = True
        for handle in self._restarts.values():
            handle.cancel()
        self._restarts.clear()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        self._idle.clear()
        if not self._children:
            self._gone.set()
        for child in list(self._children.values()):
            if cold:
                self._kill(child)
            elif child.running is None:
                self._dismiss(child)
        if not await self._all_gone(self.stop_timeout):
            logger.warning(
                "%d pool process(es) still running after %ss; killing them",
                len(self._children),
                self.stop_timeout,
            )
            for child in list(self._children.values()):
                self._kill(child)
            if not await self._all_gone(self.stop_timeout):
                for child in list(self._children.values()):
                    self._on_exit(child)
        _live_pools.discard(self)

    async def _all_gone(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._gone.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def _log_setup(self) -> tuple[int, str, str] | None:
        """What a spawned child needs to log as this process does, if logging was set up here."""
        root = logging.getLogger()
        if not root.handlers:
            return None
        conf = self.app.conf
        return root.getEffectiveLevel(), conf.worker_log_format, conf.worker_task_log_format

    def info(self) -> dict[str, Any]:
        """The base info plus ``processes``: the pids of the children ready to take jobs."""
        return {
            **super().info(),
            "processes": [c.pid for c in self._children.values() if c.ready and not (c.leaving or c.retired)],
            "max-tasks-per-child": self.max_tasks_per_child,
            "max-memory-per-child": self.max_memory_per_child,
        }


# Children are not daemonic, so that tasks may start processes of their own; but multiprocessing joins
# non-daemonic children at exit, which would hang on a pool nobody stopped. This hook kills them first.
_live_pools: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    for pool in list(_live_pools):
        for child in list(pool._children.values()):
            pool._kill(child)
            child.process.join(1.0)
