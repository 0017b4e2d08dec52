"""Unique tasks' keys in a SQL database (the SQLite default, PostgreSQL, MySQL/MariaDB).

One table, ``celeriac_unique_key``: a row per (app, kind, key), kind ``held`` or ``finished``, with the
task id and an expiry. Taking a key is an insert on that primary key, so of two senders racing for a
free key the database lets one in; a row past its expiry is taken over by an update of the row locked
with ``SELECT ... FOR UPDATE`` (SQLite's ``BEGIN IMMEDIATE`` locks the file). Expiry times are the
senders' own clocks (``time.time()``): keep them in step (NTP). Expired rows stay until their key is
used again.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import sqlalchemy as sa

from celeriac.sql.database import Database
from celeriac.unique.store import KeyStore

__all__ = ["SQLKeyStore", "key_table"]

metadata = sa.MetaData()
_KEY_LENGTH = 190

key_table = sa.Table(
    "celeriac_unique_key",
    metadata,
    sa.Column("scope", sa.String(190), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),
    sa.Column("name", sa.String(_KEY_LENGTH), primary_key=True),
    sa.Column("task_id", sa.String(155), nullable=False),
    sa.Column("expires", sa.Double(), nullable=False),
)

_k = key_table.c


def _column(key: str) -> str:
    """A key as its row keeps it: one too long for the column is cut and made unique with a digest."""
    if len(key) <= _KEY_LENGTH:
        return key
    return key[: _KEY_LENGTH - 65] + "#" + hashlib.sha256(key.encode()).hexdigest()


class SQLKeyStore(KeyStore):
    """Keys in the database of the broker (or of the result backend)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> None:
        super().__init__(url, options, scope=scope[:190])
        self._db = Database(url, metadata)

    async def _write(self, fn: Any, *args: Any) -> Any:
        await self._db.open()
        return await self._db.call(self._db.write_retrying, lambda conn: fn(conn, *args))

    def _where(self, kind: str, key: str) -> Any:
        return (_k.scope == self.scope) & (_k.kind == kind) & (_k.name == _column(key))

    def _row(self, conn: sa.Connection, kind: str, key: str) -> Any:
        query = sa.select(_k.task_id, _k.expires).where(self._where(kind, key))
        return conn.execute(query.with_for_update()).first()

    async def hold(self, key: str, task_id: str, ttl: float) -> str:
        return str(await self._write(self._put, "held", key, task_id, ttl, False))

    async def finish(self, key: str, task_id: str, ttl: float) -> None:
        await self._write(self._put, "finished", key, task_id, ttl, True)

    def _put(self, conn: sa.Connection, kind: str, key: str, task_id: str, ttl: float, replace: bool) -> str:
        """Write the row for ``task_id`` unless (``replace`` False) another task's row is still live;
        the task id the row holds afterwards."""
        now = time.time()
        row = self._row(conn, kind, key)
        if row is None:
            values = {
                "scope": self.scope,
                "kind": kind,
                "name": _column(key),
                "task_id": task_id,
                "expires": now + ttl,
            }
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(key_table).values(values))
                return task_id
            except sa.exc.IntegrityError:
                row = self._row(conn, kind, key)  # another sender inserted it first
                if row is None:
                    raise
        if not replace and row.expires > now:
            return str(row.task_id)
        where = self._where(kind, key)
        conn.execute(sa.update(key_table).where(where).values(task_id=task_id, expires=now + ttl))
        return task_id

    async def release(self, key: str, task_id: str) -> None:
        await self._write(self._release, key, task_id)

    def _release(self, conn: sa.Connection, key: str, task_id: str) -> None:
        conn.execute(sa.delete(key_table).where(self._where("held", key) & (_k.task_id == task_id)))

    async def finished(self, key: str) -> str | None:
        await self._db.open()
        query = sa.select(_k.task_id, _k.expires).where(self._where("finished", key))
        row = await self._db.call(self._db.read, lambda conn: conn.execute(query).first())
        return None if row is None or row.expires <= time.time() else str(row.task_id)

    async def close(self) -> None:
        await self._db.close()
