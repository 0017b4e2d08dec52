"""``celeriac worker --processes N``: N worker processes under one supervisor.

The supervisor starts each worker as a fresh interpreter (never a fork: no loop or socket crosses into
a child) and keeps it running: a worker that dies while the supervisor is not stopping is logged and
started again, after a delay that doubles while it keeps dying young. A worker that exits young with
the command's error code (2: an error it reported, such as a bad setting) would fail the same way
again: the supervisor then stops the others and exits with that code.

Each worker's stdin is a pipe whose write end only the supervisor holds; it is the worker's lifeline:

* One byte per SIGTERM or SIGINT the supervisor receives: the signal passed on. The worker's stop
  level (1 warm, 2 cold) is the larger of the bytes read and the signals it received itself, so a
  signal that reached it directly as well (Ctrl-C reaches the whole process group, systemd signals
  the whole cgroup) counts once. A byte waiting in the pipe is read once the worker's loop runs, so a
  worker still starting up when the supervisor is told to stop stops too.
* End of file: the supervisor is gone, even by SIGKILL (the kernel closes its end). The worker shuts
  down warm instead of running on as an orphan.

SIGQUIT is sent on as a signal: the worker does not handle it, so it ends at once, as in Celery.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from celeriac.worker._backoff import sleep_unless

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker

log = logging.getLogger("celeriac.supervisor")

_STOP = b"s"  # one per stop signal the supervisor received
#: ``celeriac``'s exit code for an error it reported (``cli.main``): a bad setting, an unreachable broker
#: after its retries.
_REPORTED_ERROR = 2


def node_name(base: str, index: int) -> str:
    """The node name of worker ``index`` (from 1): ``name@host`` becomes ``name-<index>@host``; a name
    without ``@`` gets the suffix at its end."""
    name, at, host = base.partition("@")
    return f"{name}-{index}{at}{host}"


def exit_code(returncode: int) -> int:
    """A process's exit code as a shell reports it: 128 + the signal's number if a signal ended it."""
    return 128 - returncode if returncode < 0 else returncode


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass(frozen=True)
class Child:
    """One worker the supervisor keeps running: its node name, its command line, and the environment
    variables it gets on top of the supervisor's."""

    node: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(eq=False)
class _Running:
    process: asyncio.subprocess.Process
    lifeline: int  # the write end of the child's stdin


class Supervisor:
    """Runs ``children`` until a SIGTERM, SIGINT or SIGQUIT stops them all.

    A child that exits while the supervisor is not stopping is started again: at once if it lived
    ``stable_after`` seconds or more, else after ``restart_delay`` seconds, doubling on each quick death
    up to ``max_restart_delay``.
    """

    def __init__(
        self,
        children: Sequence[Child],
        *,
        restart_delay: float = 1.0,
        max_restart_delay: float = 30.0,
        stable_after: float = 10.0,
    ) -> None:
        self.children = list(children)
        self.restart_delay = restart_delay
        self.max_restart_delay = max_restart_delay
        self.stable_after = stable_after
        self._running: dict[str, _Running] = {}
        self._stops = 0
        self._quit = False
        self._stopping = asyncio.Event()
        self._codes: list[int] = []  # exit codes of the children that exited after the stop, in order

    def run(self) -> int:
        """Supervise until every child has exited after a stop; return 0 if each exited with 0, else
        the first other exit code (128 + N for a child ended by signal N)."""
        return asyncio.run(self.arun())

    async def arun(self) -> int:
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
        for sig in signals:
            loop.add_signal_handler(sig, self._signalled, sig)
        log.info("supervising %d workers: %s", len(self.children), ", ".join(c.node for c in self.children))
        try:
            await asyncio.gather(*(self._keep(child) for child in self.children))
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)
            for running in self._running.values():
                with contextlib.suppress(OSError):
                    os.close(running.lifeline)
        code = next((c for c in self._codes if c), 0)
        log.info("all workers exited; supervisor exits with %d", code)
        return code

    def _signalled(self, sig: signal.Signals) -> None:
        self._stopping.set()
        if sig == signal.SIGQUIT:
            self._quit = True
            log.warning("SIGQUIT: ending %d worker(s) at once", len(self._running))
            for running in self._running.values():
                with contextlib.suppress(ProcessLookupError):
                    running.process.send_signal(sig)
            return
        self._stops += 1
        kind = "warm" if self._stops == 1 else "cold"
        log.info("%s: %s shutdown of %d worker(s)", sig.name, kind, len(self._running))
        self._stop_all()

    def _stop_all(self) -> None:
        """Tell every running worker to stop, as many times as the supervisor was told (at least once)."""
        self._stopping.set()
        self._stops = max(self._stops, 1)
        for running in self._running.values():
            self._tell_stop(running.lifeline)

    @staticmethod
    def _tell_stop(lifeline: int) -> None:
        # A child that has just exited has closed its end: nothing to tell it.
        with contextlib.suppress(OSError):
            os.write(lifeline, _STOP)

    async def _keep(self, child: Child) -> None:
        """Run ``child`` and start it again whenever it dies before the supervisor stops."""
        loop = asyncio.get_running_loop()
        delay = self.restart_delay
        while not self._stopping.is_set():
            started = loop.time()
            running = await self._start(child)
            returncode = await running.process.wait()
            del self._running[child.node]
            os.close(running.lifeline)
            pid = running.process.pid
            if self._stopping.is_set():
                log.info("%s (pid %d) exited: %s", child.node, pid, _describe_exit(returncode))
                self._codes.append(exit_code(returncode))
                return
            lived = loop.time() - started
            if returncode == _REPORTED_ERROR and lived < self.stable_after:
                log.error(
                    "%s (pid %d) could not start (exit code %d; its error is above): not starting it "
                    "again; stopping the other workers",
                    child.node,
                    pid,
                    returncode,
                )
                self._codes.append(returncode)
                self._stop_all()
                return
            if lived >= self.stable_after:
                wait, delay = 0.0, self.restart_delay
            else:
                wait, delay = delay, min(delay * 2, self.max_restart_delay)
            log.warning(
                "%s (pid %d) died after %.1f s: %s; starting it again in %.1f s",
                child.node,
                pid,
                lived,
                _describe_exit(returncode),
                wait,
            )
            # A stop while waiting: the dead child has nothing left to shut down.
            await sleep_unless(self._stopping, wait)

    async def _start(self, child: Child) -> _Running:
        read_end, write_end = os.pipe()  # both not inheritable: no other child holds this lifeline
        try:
            process = await asyncio.create_subprocess_exec(
                *child.argv, stdin=read_end, env={**os.environ, **child.env}
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        running = self._running[child.node] = _Running(process, write_end)
        # Stop signals that came while it was starting are owed to it as well.
        for _ in range(self._stops):
            self._tell_stop(write_end)
        if self._quit:
            process.send_signal(signal.SIGQUIT)
        log.info("started %s (pid %d)", child.node, process.pid)
        return running


async def serve_supervised(worker: Worker, lifeline: int = 0) -> int:
    """Run ``worker`` as a supervisor's child: it stops on SIGTERM/SIGINT as usual, on each stop byte
    its supervisor writes to ``lifeline`` (its stdin), and warm when the lifeline closes.

    The worker's stop level is the larger of the signals it received itself and the stop bytes read,
    so one Ctrl-C that reached both this process and its supervisor counts once, whichever way it
    arrives first.
    """
    loop = asyncio.get_running_loop()
    level = 0  # stop requests made to the worker
    signalled = 0  # SIGTERM/SIGINT received directly
    told = 0  # stop bytes read from the supervisor

    def stop_to(wanted: int) -> None:
        nonlocal level
        while level < wanted:
            level += 1
            worker.request_stop()

    def on_signal() -> None:
        nonlocal signalled
        signalled += 1
        stop_to(max(signalled, told))

    def readable() -> None:
        nonlocal told
        try:
            data = os.read(lifeline, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            told += data.count(_STOP)
            stop_to(max(signalled, told))
            return
        loop.remove_reader(lifeline)
        if not level:
            worker.log.warning("%s: the supervisor is gone; shutting down", worker.hostname)
        stop_to(max(level, 1))

    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    loop.add_reader(lifeline, readable)
    try:
        # arun() records its loop before its first await, so a stop made by the callbacks above
        # (which run only once it waits) always reaches it.
        return await worker.arun(install_signals=False)
    finally:
        with contextlib.suppress(ValueError, OSError):
            loop.remove_reader(lifeline)
        for sig in signals:
            loop.remove_signal_handler(sig)
