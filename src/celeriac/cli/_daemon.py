"""Running a worker as a daemon, as Celery's daemon options do: a pid file, a log file, detaching from
the terminal, dropping root's privileges, a umask.

Each step raises ``CeleriacError`` with what to fix, so ``celeriac worker`` exits 2 with one clear line
instead of a traceback.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import socket
import sys

from celeriac.exceptions import CeleriacError


def expand_node(template: str, node: str | None = None) -> str:
    """Celery's node-name abbreviations in ``template``, for ``-n``, ``--logfile`` and ``--pidfile``.

    ``%h`` is the host (with its domain), ``%n`` the name (the part of ``node`` before ``@``, or the
    host's first label when there is no node yet), ``%d`` the domain, ``%p`` the whole node name,
    ``%i`` the process index (``0``: the worker itself), ``%I`` the same with a dash (empty for the
    worker itself), ``%%`` a percent sign. An unknown abbreviation is an error rather than a file
    named after it.
    """
    name, at, host = (node or "").partition("@")
    if not at:
        name, host = "", node or ""
    host = host or socket.gethostname()
    first, _, domain = host.partition(".")
    keys = {"h": host, "n": name or first, "d": domain, "p": node or "", "i": "0", "I": "", "%": "%"}
    out: list[str] = []
    chars = iter(template)
    for char in chars:
        if char != "%":
            out.append(char)
            continue
        key = next(chars, "")
        if key not in keys:
            raise CeleriacError(f"unknown abbreviation %{key} in {template!r} (known: %h %n %d %p %i %I %%)")
        out.append(keys[key])
    return "".join(out)


def node_name(option: str | None, default_name: str = "celeriac") -> str:
    """The worker's node name from ``-n``: abbreviations expanded, and ``@<host>`` added to a bare name
    (``-n w1`` is ``w1@<host>``), as in Celery."""
    if not option:
        return f"{default_name}@{socket.gethostname()}"
    node = expand_node(option)
    return node if "@" in node else f"{node}@{socket.gethostname()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive all the same
    return True


class PidFile:
    """The pid file of a running worker: made only if no live process holds it, removed at exit.

    A pid file left by a worker that died (a kill -9, a power cut) names no live process: it is
    taken over. One that names a live process refuses the start, so two copies of a systemd unit do
    not run side by side.
    """

    def __init__(self, path: str) -> None:
        self.path = os.path.abspath(path)
        self._held_by: int | None = None

    def holder(self) -> int | None:
        """The live process the file names, or None (no file, an unreadable one, a dead process)."""
        try:
            with open(self.path) as file:
                text = file.read().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CeleriacError(f"cannot read the pid file {self.path}: {exc}") from exc
        pid = int(text) if text.isdigit() else 0
        return pid if pid > 0 and pid != os.getpid() and _alive(pid) else None

    def check(self) -> None:
        """Raise if a live process holds the file (done before detaching, to say so on the terminal)."""
        pid = self.holder()
        if pid is not None:
            raise CeleriacError(
                f"pid file {self.path} names process {pid}, which is running: is a worker already "
                "started? Stop it, or remove the file if that process is not a celeriac worker"
            )

    def acquire(self) -> None:
        """Write this process's id into the file; raise if a live process holds it already."""
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self.check()
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # stale: its process is gone
                continue
            except OSError as exc:
                raise CeleriacError(f"cannot write the pid file {self.path}: {exc}") from exc
            with os.fdopen(fd, "w") as file:
                file.write(f"{os.getpid()}\n")
                file.flush()
                os.fsync(file.fileno())
            self._held_by = os.getpid()
            return
        raise CeleriacError(f"cannot take the pid file {self.path}: another process keeps writing it")

    def release(self) -> None:
        """Remove the file if this process wrote it and it still names this process."""
        if self._held_by != os.getpid():
            return  # never taken, or a forked child that must not remove its parent's file
        with contextlib.suppress(OSError):
            with open(self.path) as file:
                if file.read().strip() != str(os.getpid()):
                    return
            os.unlink(self.path)
        self._held_by = None


def open_log(path: str) -> int:
    """Open (append) the log file and return its descriptor; raise saying why it cannot be written."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError as exc:
        raise CeleriacError(f"cannot write the log file {path}: {exc}") from exc


def log_to(fd: int) -> None:
    """Send this process's stdout and stderr, and so those of the pool's children, to ``fd``."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def detach() -> None:
    """Leave the terminal: fork twice (a new session in between), so the process that returns is no
    session leader and can never take a terminal again; the first two exit at once with status 0.

    Returns only in the grandchild, whose stdin reads from ``/dev/null``.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if os.fork() > 0:
        os._exit(0)  # the command returns to the shell; nothing of this process must run on
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)


def set_umask(text: str) -> None:
    """Apply ``--umask`` (octal, as in Celery: ``0o22``, ``022`` or ``22``)."""
    try:
        mask = int(text, 8)
    except ValueError:
        raise CeleriacError(f"--umask {text!r}: expected an octal number such as 022") from None
    os.umask(mask)


def drop_privileges(uid: str | None, gid: str | None) -> str | None:
    """Become ``uid``/``gid`` (names or numbers) when running as root.

    Returns:
        A warning to log when the flags could not be honoured because the process is not root (a
        process that is not root cannot change user; it runs as itself), or None.
    """
    if uid is None and gid is None:
        return None
    user = _user(uid) if uid is not None else None
    group = _group(gid) if gid is not None else (user.pw_gid if user is not None else None)
    if os.geteuid() != 0:
        if (user is None or user.pw_uid == os.geteuid()) and (group is None or group == os.getegid()):
            return None  # already who was asked for
        return (
            f"--uid/--gid ignored: only root can change user; the worker runs as uid {os.geteuid()} "
            f"gid {os.getegid()}"
        )
    if group is not None:
        if user is not None:
            os.initgroups(user.pw_name, group)
        else:
            os.setgroups([group])
        os.setgid(group)
    if user is not None:
        os.setuid(user.pw_uid)
    return None


def _user(uid: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwuid(int(uid)) if uid.isdigit() else pwd.getpwnam(uid)
    except KeyError:
        raise CeleriacError(f"--uid {uid!r}: no such user") from None


def _group(gid: str) -> int:
    try:
        return int(gid) if gid.isdigit() else grp.getgrnam(gid).gr_gid
    except KeyError:
        raise CeleriacError(f"--gid {gid!r}: no such group") from None
