"""Waiting for a SQLite file's one write lock, for a bounded time and out loud.

SQLite lets one connection write at a time, across every process on the file. Our write transactions
are short (each is one synchronous function on the database thread: no await, no task run inside),
so the lock normally changes hands within milliseconds. But a process frozen while it holds it
(SIGSTOP, a debugger, a stalled VM, a swap storm) keeps it until it runs again or exits: SQLite offers
no way to take a lock from a live process, and neither do we. What we do is bound every wait
(``busy_timeout``, then our ``OperationalError`` naming the file and, on Linux, the process that holds
the lock and its state), warn while a wait goes on, and say when the file is writable again. Readers
are not blocked (WAL): a worker still sees its queue, it cannot take, ack or store anything.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

from celeriac.exceptions import OperationalError

__all__ = ["LockWait", "holders"]

log = logging.getLogger("celeriac.sql")

T = TypeVar("T")

#: How long one try waits inside SQLite (its busy handler) before we look at the clock again.
SLICE = 0.5
#: A wait this long (s) is worth a warning; another one follows every ``WARN_EVERY`` s while it lasts.
WARN_AFTER = 2.0
WARN_EVERY = 30.0
#: The byte of the ``-shm`` file SQLite locks for writing in WAL mode (WALINDEX_LOCK_OFFSET + 0).
_WAL_WRITE_LOCK = 120
_STATES = {
    "T": "stopped",
    "t": "stopped by a debugger",
    "D": "waiting on disk I/O",
    "Z": "exiting",
}


def _is_locked(exc: BaseException) -> bool:
    """Whether ``exc`` (SQLAlchemy's or sqlite3's) is SQLite's "database is locked" (SQLITE_BUSY)."""
    cause = getattr(exc, "orig", None) or exc
    if not isinstance(cause, sqlite3.OperationalError):
        return False
    code = getattr(cause, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_BUSY if code is not None else "database is locked" in str(cause)


def holders(path: str) -> list[tuple[int, str]]:
    """The processes holding the write lock of the SQLite file at ``path`` in WAL mode, with their state
    ("stopped", "running", ...), as Linux's ``/proc/locks`` tells; empty when that cannot be told."""
    try:
        inode = os.stat(path + "-shm").st_ino
        with open("/proc/locks") as locks:
            lines = locks.read().splitlines()
    except OSError:
        return []
    found: list[tuple[int, str]] = []
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 120 120"; "->" marks a waiter.
        if len(fields) < 8 or fields[1] != "POSIX" or fields[3] != "WRITE" or "->" in line:
            continue
        try:
            pid, start, end = int(fields[4]), int(fields[6]), fields[7]
            holds_inode = int(fields[5].rsplit(":", 1)[1]) == inode
        except (ValueError, IndexError):
            continue
        last = None if end == "EOF" else int(end)
        if holds_inode and start <= _WAL_WRITE_LOCK and (last is None or last >= _WAL_WRITE_LOCK):
            found.append((pid, _state(pid)))
    return found


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            code = stat.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "gone"
    return _STATES.get(code, "running")


def _who(path: str) -> str:
    found = holders(path)
    if not found:
        return "another process"
    return ", ".join(f"pid {pid} ({state})" for pid, state in found)


class LockWait:
    """Runs write transactions on one SQLite file, waiting up to ``timeout`` s for its lock each.

    Each try waits up to ``SLICE`` inside SQLite; between tries the clock is read, a long wait is
    logged, and once ``timeout`` has passed the transaction fails with ``OperationalError``. A try that
    failed on the lock wrote nothing (its transaction never began, or was rolled back), so trying again
    is safe. One instance serves one database thread, so it keeps no lock of its own.
    """

    def __init__(self, path: str, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self._since: float | None = None  # when this process began waiting, across transactions
        self._warned = 0.0

    def run(self, attempt: Callable[[], T]) -> T:
        """``attempt()`` until it does not fail on the lock; raise once ``timeout`` has passed."""
        started = time.monotonic()
        while True:
            try:
                result = attempt()
            except Exception as exc:
                if not _is_locked(exc):
                    raise
                now = time.monotonic()
                self._waiting(now)
                if now - started >= self.timeout:
                    raise OperationalError(
                        f"the SQLite file {self.path} stayed locked for {now - started:.1f}s "
                        f"(busy_timeout): {_who(self.path)} holds its write lock. A process paused "
                        "(SIGSTOP, a debugger, a frozen VM) or stuck inside a write transaction keeps "
                        "it until it runs again or exits; every writer on the file waits meanwhile"
                    ) from exc
                time.sleep(0.01)  # SQLite may answer "locked" at once; never spin
                continue
            self._free()
            return result

    def _waiting(self, now: float) -> None:
        if self._since is None:
            self._since = now
        waited = now - self._since
        if waited >= WARN_AFTER and now - self._warned >= WARN_EVERY:
            self._warned = now
            log.warning(
                "the SQLite file %s has been locked for %.1fs by %s; no write here (publish, fetch, "
                "ack, result) goes through until it is free",
                self.path,
                waited,
                _who(self.path),
            )

    def _free(self) -> None:
        since, self._since = self._since, None
        if since is not None and self._warned:
            self._warned = 0.0
            log.info("the SQLite file %s is writable again after %.1fs", self.path, time.monotonic() - since)
