"""Noticing that a SQLite file was deleted or renamed under a process that has it open.

An open SQLite file is an open descriptor: deleted or renamed, it goes on working for the process that
holds it, which then polls a file nobody else can reach while new messages pile up in a new file at the
path. Worse, a renamed file's ``-wal`` and ``-shm`` stay at the old names, and a process that opens
the path afresh finds them: SQLite says "disk I/O error", or, when two files' connections share one
``-shm``, a process dies of a bus error. So each process compares, before each transaction (and an
idle one every second), the file the path names now with the one it opened (device and inode); when
they differ it says so loudly, closes the old file on all its connections, and opens the path again,
once the leftovers no longer belong to any open file (``clear_orphans``).
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from celeriac.exceptions import OperationalError

log = logging.getLogger("celeriac.sql")

#: Every open watch, by path: one process holds a file through several engines (its broker's and its
#: backend's), and the old file's ``-wal`` only goes once all of them have closed it.
_watches: dict[str, weakref.WeakSet[FileWatch]] = {}

#: How often the process's watcher thread looks at the paths, for engines that are idle (a web
#: process between requests holds the old file, and so its ``-wal``, until it looks).
LOOK_EVERY = 1.0
_watcher_pid = 0
_watcher_lock = threading.Lock()


_stop = threading.Event()


def _watch_paths() -> None:
    # Ends at interpreter exit (atexit, before daemon threads are frozen), never mid-look.
    while not _stop.wait(LOOK_EVERY):
        for path, watches in list(_watches.items()):
            if not watches:
                _watches.pop(path, None)  # every database on it is gone
                continue
            now = _identity(path)
            for watch in list(watches):
                if watch._opened is not None and now != watch._opened:
                    watch._wake()


def _start_watcher() -> None:
    """Start the process's watcher thread once (again in a forked child, which has no threads)."""
    global _watcher_pid
    with _watcher_lock:
        if _watcher_pid == os.getpid():
            return
        _watcher_pid = os.getpid()
        _stop.clear()
        watcher = threading.Thread(target=_watch_paths, name="celeriac-sqlite-watch", daemon=True)
        watcher.start()
        atexit.register(_stop_watcher, watcher)


def _stop_watcher(watcher: threading.Thread) -> None:
    _stop.set()
    watcher.join(timeout=2)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


def leftovers(path: str) -> bool:
    """Whether ``path`` is gone but its ``-wal`` or ``-shm`` is not: they belong to a file deleted or
    renamed while some process holds it, and opening the path now would share them with that file
    (SQLite says "disk I/O error", or a process sharing the ``-shm`` crashes with a bus error)."""
    return not os.path.exists(path) and any(os.path.exists(path + end) for end in ("-wal", "-shm"))


#: The byte of a ``-shm`` file every process attached to it holds a read lock on, for as long as it has
#: the database open (SQLite's "DMS" lock: 120 lock bytes from offset 120, then this one).
_SHM_ATTACHED_BYTE = 128


def clear_orphans(path: str, log_to: logging.Logger = log) -> bool:
    """Set aside the ``-wal`` and ``-shm`` that a deleted or renamed file left at ``path`` once no
    process is attached to them any more; True if there is nothing left in the way.

    SQLite does not remove them when the file they belong to has moved (nor fold the ``-wal`` back
    into it), and no later opener may use them: they belong to another file. A process still attached
    holds a read lock on the ``-shm``; while one does, nothing is touched. The ``-wal`` holds the old
    file's latest commits, so it is renamed (``-wal.orphaned-<unix time>``), not deleted: copied next
    to a renamed file as ``<its name>-wal``, SQLite reads that file with them.
    """
    if not leftovers(path):
        return True
    if any(w._holding and w._stale for w in list(_watches.get(path, ()))):
        return False  # this process's own locks never stop it: its own holders are asked directly
    wal, shm = path + "-wal", path + "-shm"
    fd = -1
    try:
        if os.path.exists(shm):
            fd = os.open(shm, os.O_RDWR)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_ATTACHED_BYTE)
            except OSError:
                return False  # a process still has the old file open
        if os.path.exists(wal):
            aside = f"{wal}.orphaned-{int(time.time())}"
            os.rename(wal, aside)
            log_to.warning(
                "set aside %s as %s: it holds the latest commits of the SQLite file it belonged to, which "
                "was deleted or renamed and which no process has open any more (copy it next to a "
                "renamed file as <its name>-wal to read that file with them)",
                wal,
                aside,
            )
        with contextlib.suppress(FileNotFoundError):
            os.unlink(shm)
    except FileNotFoundError:
        pass  # another process cleared them meanwhile
    finally:
        if fd >= 0:
            os.close(fd)
    return not leftovers(path)


class FileWatch:
    """The file a database opened at ``path``, compared with what the path names now.

    ``follow`` is called on the database's own thread before each transaction. ``close`` closes the
    database's connections (on its thread), ``reopen`` opens the path again (raising while it cannot),
    ``wake`` asks the database's thread to call ``follow`` soon. The process's databases on one path
    (a broker's and a backend's) must all close the old file before any opens the path again: within
    a process SQLite's locks do not keep two files' connections apart on one ``-shm``.
    """

    def __init__(
        self, path: str, close: Callable[[], None], reopen: Callable[[], None], wake: Callable[[], Any]
    ) -> None:
        self.path = path
        self._close = close
        self._reopen = reopen
        self._wake = wake
        self._opened: tuple[int, int] | None = None
        self._holding = False  # connections to the file ``_opened`` are open
        self._stale = False  # ``_opened`` is no longer what the path names

    @property
    def stale(self) -> bool:
        """Whether the path no longer names the file opened and it is not open again yet."""
        return self._stale

    def opened(self) -> None:
        """Remember the file the path names now as the one open (after the database opened it)."""
        self._opened = _identity(self.path)
        self._holding, self._stale = True, False
        _watches.setdefault(self.path, weakref.WeakSet()).add(self)
        _start_watcher()

    def follow(self) -> None:
        """Close the old file and open the path again if the path no longer names the file opened,
        after logging what happened (once per process and event).

        Raises:
            OperationalError: the path cannot be opened again yet (another database of this process
                still holds the old file, or another process keeps its ``-wal`` in place); the next
                call tries again.
        """
        if not self._stale:
            now = _identity(self.path)
            if self._opened is None or now == self._opened:
                return
            what = (
                "deleted or renamed"
                if now is None
                else "replaced by another file (the old one deleted or renamed)"
            )
            log.error(
                "the SQLite file %s was %s while this process had it open: closing the old file and "
                "opening %s again; messages and results left in the old file are not seen from here "
                "(its latest commits are in its -wal, set aside once no process has the file open)",
                self.path,
                what,
                self.path,
            )
            for watch in list(_watches.get(self.path, ())):
                if watch._opened == self._opened:
                    watch._stale = True  # said once here: the others follow without saying it again
                    if watch is not self:
                        watch._wake()  # soon: the old file's -wal only goes once every engine closed it
        if self._holding:
            self._close()
            self._holding = False
        self.reopen()

    def reopen(self) -> None:
        """Open the path again, once no other database of this process holds the old file.

        Raises:
            OperationalError: not yet possible; the next call tries again.
        """
        if any(w._holding and w._stale for w in list(_watches.get(self.path, ()))):
            raise OperationalError(
                f"the SQLite file {self.path} is being opened again: waiting for this process's other "
                "connections to close the old file"
            )
        try:
            self._reopen()
        except OperationalError:
            raise
        except Exception as exc:
            raise reopen_failed(self.path, exc) from exc


def reopen_failed(path: str, exc: BaseException) -> OperationalError:
    """The error of a SQLite file that cannot be opened, with what to check when a leftover ``-wal``
    of a deleted or renamed file is the likely cause (SQLite then only says "disk I/O error")."""
    detail = str(getattr(exc, "orig", None) or exc)
    if "disk I/O error" not in detail:
        return OperationalError(f"cannot open the SQLite file {path}: {detail}")
    return OperationalError(
        f"cannot open the SQLite file {path}: {detail}. Its {os.path.basename(path)}-wal and -shm files "
        "probably belong to a file that was deleted or renamed while a process had it open: they go "
        "once every such process has closed it (celeriac processes notice within their next call); "
        "otherwise stop those processes"
    )
