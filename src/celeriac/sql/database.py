"""The SQLAlchemy plumbing of the SQL broker and backend.

URLs, one engine per database with its calls on one dedicated thread, the SQLite pragmas and BEGIN
modes, and the in-process wake-up that every broker and backend on one database shares.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import random
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from celeriac.exceptions import ConfigurationError, MissingDependency, OperationalError
from celeriac.sql._sqlite_file import FileWatch, clear_orphans, reopen_failed
from celeriac.sql._sqlite_lock import SLICE, LockWait

__all__ = ["Database", "engine_url"]

T = TypeVar("T")

_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg", "mysql": "pymysql", "mariadb": "pymysql"}
_EXTRAS = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}


def engine_url(url: str) -> sa.URL:
    """The SQLAlchemy URL behind a broker or backend URL.

    Drops kombu's ``sqla+`` and Celery's ``db+`` prefixes, names our drivers (psycopg 3, PyMySQL) when
    the URL names none, and makes a SQLite file path absolute, so a later ``chdir`` changes nothing.
    """
    for prefix in ("sqla+", "db+"):
        url = url.removeprefix(prefix)
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"not a database URL: {url!r}") from exc
    backend, _, driver = parsed.drivername.partition("+")
    backend = "postgresql" if backend == "postgres" else backend
    parsed = parsed.set(drivername=f"{backend}+{driver or _DRIVERS.get(backend, '')}".rstrip("+"))
    path = parsed.database
    if backend == "sqlite" and path and path != ":memory:" and not path.startswith("file:"):
        parsed = parsed.set(database=str(Path(path).expanduser().resolve()))
    return parsed


class Database:
    """A SQLAlchemy engine whose every call runs on one dedicated thread.

    The event loop never waits on the database: coroutines hand synchronous functions to the thread
    with ``call``. ``open`` creates the tables of ``metadata`` that do not exist yet, and is safe when
    several processes start at once. SQLite connections get WAL and ``synchronous=FULL``, and ``write``
    transactions there begin with BEGIN IMMEDIATE, so two processes never both hold a read lock that
    each needs to upgrade. A transaction on a SQLite file waits up to ``lock_timeout`` s for the file's
    write lock, then fails with ``OperationalError`` naming the file (``_sqlite_lock``).

    ``synchronous=FULL``: in WAL mode each commit syncs the log to disk before it returns, so a
    ``delay()`` that returned, an ack and a stored result survive a power cut or a kernel crash. With
    ``NORMAL`` the log is synced only at checkpoints, and the last commits before such a crash (not
    before a process crash: they are in the OS's cache) can be lost. FULL costs a sync per commit,
    about 2 ms each on the machine measured in docs.
    """

    def __init__(self, url: str, metadata: sa.MetaData, *, lock_timeout: float = 5.0) -> None:
        self.url = engine_url(url)
        self.key = self.url.render_as_string(hide_password=True)
        self.sqlite = self.url.get_backend_name() == "sqlite"
        self.skip_locked = True
        self._metadata = metadata
        self._engine: sa.Engine | None = None
        self._conn: sa.Connection | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._opening = asyncio.Lock()
        path = self.url.database or ""
        #: A SQLite file deleted or renamed while open is noticed and opened again (see _sqlite_file).
        self._file = (
            FileWatch(path, self._close_file, self._open_file, self._wake)
            if self.sqlite and path not in ("", ":memory:") and not path.startswith("file:")
            else None
        )
        self._lock = LockWait(path, lock_timeout) if self._file is not None else None

    @property
    def opened(self) -> bool:
        """Whether the engine has been made (``open`` was called and ``close`` not yet)."""
        return self._engine is not None

    @property
    def engine(self) -> sa.Engine:
        """The open engine; RuntimeError before ``open``."""
        if self._engine is None:
            raise RuntimeError("the database is not open")
        return self._engine

    async def open(self) -> None:
        """Connect and create missing tables; later calls return at once."""
        if self._engine is not None:
            return
        async with self._opening:
            if self._engine is None:
                try:
                    self._engine = await self.call(self._create)
                except sa.exc.OperationalError as exc:
                    if self._file is None:
                        raise
                    raise reopen_failed(self._file.path, exc) from exc

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the database thread."""
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="celeriac-sql")
        return await asyncio.get_running_loop().run_in_executor(self._thread, partial(fn, *args))

    def read(self, fn: Callable[[sa.Connection], T]) -> T:
        """On the database thread: ``fn`` inside a transaction that only reads."""
        return self._transaction(fn, "DEFERRED")

    def write(self, fn: Callable[[sa.Connection], T]) -> T:
        """On the database thread: ``fn`` inside a transaction that writes."""
        return self._transaction(fn, "IMMEDIATE")

    def write_retrying(self, fn: Callable[[sa.Connection], T]) -> T:
        """On the database thread: ``write(fn)``, again when the database chose it as the victim of a
        deadlock (MySQL does so when two transactions create one row at once: a chord's first reports,
        senders racing for one unique key)."""
        for attempt in range(1, 11):
            try:
                return self.write(fn)
            except sa.exc.DBAPIError as exc:
                if attempt == 10 or not _is_deadlock(exc):
                    raise
                time.sleep(random.uniform(0.001, 0.01 * attempt))
        raise AssertionError("unreachable")

    async def close(self) -> None:
        """Close every connection and stop the thread; a later ``open`` starts afresh."""
        if self._engine is not None:
            await self.call(self._dispose)
            self._engine = None
        if self._thread is not None:
            self._thread.shutdown(wait=False)
            self._thread = None

    def _transaction(self, fn: Callable[[sa.Connection], T], begin: str) -> T:
        if self._file is not None:
            self._file.follow()
            if self._engine is None and self._file.stale:  # closed by a follow that could not reopen
                self._file.reopen()
        if self._lock is not None:
            return self._lock.run(partial(self._attempt, fn, begin))
        return self._attempt(fn, begin)

    def _attempt(self, fn: Callable[[sa.Connection], T], begin: str) -> T:
        for attempt in (1, 2):
            # All calls run on this one thread, so one connection kept open serves them all and spares a
            # pool checkout per transaction.
            conn = self._conn
            if conn is None:
                conn = self._conn = self.engine.connect()
            try:
                conn.execution_options(celeriac_begin=begin)
                with conn.begin():
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                # The server closed the connection (restart, idle timeout): drop it, and one more try
                # gets a fresh one.
                if conn.invalidated or exc.connection_invalidated:
                    self._drop_connection()
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                conn.close()

    def _dispose(self) -> None:
        self._drop_connection()
        self.engine.dispose()

    def _close_file(self) -> None:
        """On the database thread: close every connection to the file open now."""
        if self._engine is not None:
            self._dispose()
            self._engine = None

    def _open_file(self) -> None:
        """On the database thread: open the path again."""
        self._engine = self._create()

    def _wake(self) -> None:
        """From any thread: have this database's thread look at its file soon."""
        thread = self._thread
        if thread is not None:
            with contextlib.suppress(RuntimeError):  # shut down meanwhile
                thread.submit(self._follow_quietly)

    def _follow_quietly(self) -> None:
        if self._file is not None:
            with contextlib.suppress(Exception):  # the next transaction tries again, and raises
                self._file.follow()

    def _create_tables(self, engine: sa.Engine) -> None:
        with engine.connect() as conn:
            conn.execution_options(celeriac_begin="IMMEDIATE")
            with conn.begin():
                self._metadata.create_all(conn, checkfirst=True)

    def _create(self) -> sa.Engine:
        backend = self.url.get_backend_name()
        options: dict[str, Any] = {}
        if self.sqlite:
            options["connect_args"] = {"check_same_thread": False}
            if self.url.database in (None, "", ":memory:"):
                options["poolclass"] = StaticPool
            else:
                Path(self.url.database or "").parent.mkdir(parents=True, exist_ok=True)
        elif backend in ("mysql", "mariadb"):
            # Without gap locks a fetch never blocks a concurrent publish.
            options["isolation_level"] = "READ COMMITTED"
            options["pool_recycle"] = 3600
        try:
            engine = sa.create_engine(self.url, **options)
        except ImportError as exc:
            raise MissingDependency(f"the {backend} database", _EXTRAS.get(backend, backend)) from exc
        if self.sqlite:
            sa.event.listen(engine, "connect", _sqlite_connect)
            sa.event.listen(engine, "begin", _sqlite_begin)
        # The -wal and -shm of a file renamed or deleted under another process must not be shared with
        # a new file at the path: wait for that process to notice and close it (within a second or so).
        deadline = time.monotonic() + (3.0 if self._file is not None else 0.0)
        attempt = 0
        while True:
            attempt += 1
            if self._file is not None and not clear_orphans(self._file.path):
                if time.monotonic() > deadline:
                    engine.dispose()
                    raise OperationalError(
                        f"cannot open the SQLite file {self._file.path}: it is gone but its -wal or -shm "
                        "file is not, so a process still holds the deleted or renamed file (celeriac "
                        "processes close it within a second or so); stop that process, or remove "
                        "the -wal and -shm files once none runs"
                    )
                time.sleep(0.1)
                continue
            try:
                if self._lock is not None:
                    self._lock.run(partial(self._create_tables, engine))
                else:
                    self._create_tables(engine)
                break
            except OperationalError:
                engine.dispose()
                raise
            except sa.exc.DBAPIError:
                # Another process created a table between our check and our CREATE; look again.
                if attempt >= 5 and time.monotonic() > deadline:
                    engine.dispose()
                    raise
                time.sleep(random.uniform(0.05, 0.25))
        dialect = engine.dialect
        version = dialect.server_version_info or ()
        if getattr(dialect, "is_mariadb", False):
            self.skip_locked = version >= (10, 6)
        elif dialect.name == "mysql":
            self.skip_locked = version >= (8, 0, 1)
        if self._file is not None:
            self._file.opened()
        return engine


def _sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy's own recipe: let pysqlite stop managing transactions, so we can emit our own BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # FULL, not NORMAL: a committed message must survive a power cut ("no lost tasks"; see Database).
    # SQLite waits for the write lock a slice at a time; _sqlite_lock bounds the whole wait and says so.
    busy = f"busy_timeout = {int(SLICE * 1000)}"
    for pragma in (busy, "journal_mode = WAL", "synchronous = FULL"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # Straight to the driver: this runs once per transaction, and SQLAlchemy's statement path costs
    # more than SQLite's own BEGIN.
    mode = conn.get_execution_options().get("celeriac_begin", "DEFERRED")
    conn.connection.driver_connection.execute(f"BEGIN {mode}")  # type: ignore[union-attr]


def _is_deadlock(exc: sa.exc.DBAPIError) -> bool:
    """MySQL's 1213 (deadlock) and 1205 (lock wait timeout); PostgreSQL's 40P01 and 40001."""
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if code in ("40P01", "40001"):
        return True
    args: tuple[Any, ...] = getattr(orig, "args", ())
    return bool(args) and args[0] in (1213, 1205)
