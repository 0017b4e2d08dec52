"""Noticing that a SQLite file was deleted or renamed under a process that has it open.

An open SQLite file is an open descriptor: deleted or renamed, it goes on working for the process that
holds it, which then polls a file nobody else can reach while new messages pile up in a new file at the
path. Worse, its ``-wal`` and ``-shm`` files stay at the old names, and a process that opens the path
afresh finds them and fails with SQLite's bare "disk I/O error" until every holder of the old file
closed it. So each process compares, before each transaction, the file the path names now with the one
it opened (device and inode), and when they differ it says so loudly, closes the old file (which lets
SQLite fold the ``-wal`` back into it and remove it) and opens the path again.
"""

from __future__ import annotations

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


def _watch_paths() -> None:
    while True:
        time.sleep(LOOK_EVERY)
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
        threading.Thread(target=_watch_paths, name="celeriac-sqlite-watch", daemon=True).start()


def _identity(path: str) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except FileNotFoundError:
        return None
    return status.st_dev, status.st_ino


class FileWatch:
    """The file a database opened at ``path``, compared with what the path names now.

    ``follow`` is called on the database's own thread before each transaction; ``reopen`` closes the
    database's connections and opens the path again (it raises while that fails).
    ``wake`` asks the database's thread to call ``follow`` soon (None: not possible now).
    """

    def __init__(self, path: str, reopen: Callable[[], None], wake: Callable[[], Any]) -> None:
        self.path = path
        self._reopen = reopen
        self._wake = wake
        self._opened: tuple[int, int] | None = None
        self._stale = False

    def opened(self) -> None:
        """Remember the file the path names now as the one open (after the database opened it)."""
        self._opened = _identity(self.path)
        self._stale = False
        _watches.setdefault(self.path, weakref.WeakSet()).add(self)
        _start_watcher()

    def follow(self) -> None:
        """Reopen the path if it no longer names the file opened, after logging what happened.

        Raises:
            OperationalError: the path cannot be opened again yet (another holder of the old file
                keeps its ``-wal`` in place); the next call tries again.
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
                "(a renamed file keeps them under its new name)",
                self.path,
                what,
                self.path,
            )
            self._stale = True
            for other in list(_watches.get(self.path, ())):
                if other is not self and other._opened == self._opened:
                    other._stale = True  # said once here: the others reopen without saying it again
                    other._wake()  # soon: the old file's -wal only goes once every engine closed it
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
