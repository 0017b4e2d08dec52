"""PostgreSQL's LISTEN/NOTIFY for the SQL broker's broadcasts: a subscriber hears a new row at once.

A broadcast's transaction also runs ``pg_notify`` on ``CHANNEL`` (the notification goes out when it
commits); a ``Listener`` holds its own connection (psycopg 3's async one, on the subscriber's loop) with
``LISTEN`` on that channel and calls ``heard`` for each notification, which wakes the subscriber's poll.
The poll stays as the fallback: while the listener is down (no connection, or a server that drops it)
``listening`` is False and the subscriber polls as on SQLite and MySQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

log = logging.getLogger("celeriac.sql")

#: The notification channel every broadcast of the database is announced on.
CHANNEL = "celeriac_broadcast"
#: Seconds between two attempts to listen again after the connection was lost.
RETRY_AFTER = 5.0


def notify(conn: sa.Connection, exchange: str) -> None:
    """In a broadcast's transaction: announce it on ``CHANNEL`` (payload: the exchange), at commit."""
    conn.execute(sa.select(sa.func.pg_notify(CHANNEL, exchange)))


class Listener:
    """Listens on ``CHANNEL`` of the database at ``url`` while started; ``heard()`` for each notification.

    ``listening`` says whether notifications are heard now: a subscriber may then poll rarely.
    """

    def __init__(self, url: sa.URL, heard: Callable[[], None]) -> None:
        self.url = url
        self.heard = heard
        self.listening = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self, timeout: float = 5.0) -> None:
        """Start listening; return once ``LISTEN`` is in place or the first attempt failed (polling then)."""
        self._task = asyncio.create_task(self._run(), name="celeriac-sql-listen")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._ready.wait()

    @property
    def alive(self) -> bool:
        """Whether it was started on the running loop and not stopped (a loop that ended took it along)."""
        task = self._task
        if task is None or task.done():
            return False
        try:
            return task.get_loop() is asyncio.get_running_loop()
        except RuntimeError:
            return False

    async def stop(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait((task,))
        self.listening = False

    async def _run(self) -> None:
        import psycopg

        while True:
            try:
                async with await psycopg.AsyncConnection.connect(**self._conninfo(), autocommit=True) as conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    self._ready.set()
                    self.heard()  # a broadcast may have committed before LISTEN: look once more
                    async for _ in conn.notifies():
                        self.heard()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening or not self._ready.is_set():
                    log.warning(
                        "cannot listen for broadcasts on %s (%r); polling for them until it can",
                        self.url.render_as_string(hide_password=True),
                        exc,
                    )
            if self.listening:
                self.listening = False
                self.heard()  # the subscriber polls again meanwhile
            self._ready.set()
            await asyncio.sleep(RETRY_AFTER)

    def _conninfo(self) -> dict[str, Any]:
        url = self.url
        info: dict[str, Any] = {
            "host": url.host,
            "port": url.port,
            "user": url.username,
            "password": url.password,
            "dbname": url.database,
            **url.query,
        }
        return {key: value for key, value in info.items() if value is not None}
