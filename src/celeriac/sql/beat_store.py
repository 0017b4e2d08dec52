"""The beat's schedule store in a SQL database (the SQLite default, PostgreSQL, MySQL/MariaDB).

Two tables: ``celeriac_beat_lease`` (one row per app: holder, fencing token, expiry) and
``celeriac_beat_entry`` (one row per entry: last claimed tick, done, last sent tick). Every write
locks the lease row first (``SELECT ... FOR UPDATE``; SQLite's ``BEGIN IMMEDIATE`` locks the file), so
a claim and a change of leader never interleave, and a claim whose token is no longer the lease's
changes nothing. Expiry times are the beats' own clocks (``time.time()``): keep them in step (NTP).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from celeriac.beat.store import EntryState, ScheduleStore
from celeriac.sql.database import Database

__all__ = ["SQLScheduleStore"]

metadata = sa.MetaData()
_NAME_LENGTH = 190

lease_table = sa.Table(
    "celeriac_beat_lease",
    metadata,
    sa.Column("scope", sa.String(190), primary_key=True),
    sa.Column("holder", sa.String(255), nullable=False),
    sa.Column("token", sa.BigInteger(), nullable=False),
    sa.Column("expires", sa.Double(), nullable=False),
)

entry_table = sa.Table(
    "celeriac_beat_entry",
    metadata,
    sa.Column("scope", sa.String(190), primary_key=True),
    sa.Column("name", sa.String(_NAME_LENGTH), primary_key=True),
    sa.Column("tick", sa.BigInteger(), nullable=False),
    sa.Column("done", sa.Boolean(), nullable=False),
    sa.Column("sent", sa.BigInteger(), nullable=True),
)

_l, _e = lease_table.c, entry_table.c


def _key(name: str) -> str:
    """An entry's name as its row keeps it: a name too long for the column (``add_periodic_task``
    names an entry after its signature's repr) is cut and made unique again with a digest."""
    if len(name) <= _NAME_LENGTH:
        return name
    return name[: _NAME_LENGTH - 41] + "#" + hashlib.sha1(name.encode()).hexdigest()


class SQLScheduleStore(ScheduleStore):
    """Lease and entry state in the database of the broker (or of the result backend)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> None:
        super().__init__(url, options, scope=_key(scope))
        self._db = Database(url, metadata)

    async def _write(self, fn: Any, *args: Any) -> Any:
        await self._db.open()
        return await self._db.call(self._db.write, lambda conn: fn(conn, *args))

    def _lease_row(self, conn: sa.Connection) -> Any:
        query = sa.select(_l.holder, _l.token, _l.expires).where(_l.scope == self.scope)
        return conn.execute(query.with_for_update()).first()

    async def acquire(self, holder: str, ttl: float) -> int | None:
        return int(await self._write(self._acquire, holder, ttl)) or None

    def _acquire(self, conn: sa.Connection, holder: str, ttl: float) -> int:
        now = time.time()
        row = self._lease_row(conn)
        if row is None:
            try:
                with conn.begin_nested():
                    values = {"scope": self.scope, "holder": holder, "token": 1, "expires": now + ttl}
                    conn.execute(sa.insert(lease_table).values(values))
            except sa.exc.IntegrityError:
                return 0  # another beat made the row first, and holds it
            return 1
        if row.holder != holder and row.expires > now:
            return 0
        token = row.token if row.holder == holder else row.token + 1
        where = _l.scope == self.scope
        conn.execute(
            sa.update(lease_table).where(where).values(holder=holder, token=token, expires=now + ttl)
        )
        return int(token)

    async def release(self, holder: str, token: int) -> None:
        await self._write(self._release, holder, token)

    def _release(self, conn: sa.Connection, holder: str, token: int) -> None:
        mine = (_l.scope == self.scope) & (_l.holder == holder) & (_l.token == token)
        conn.execute(sa.update(lease_table).where(mine).values(holder="", expires=0.0))

    async def states(self, names: Sequence[str]) -> dict[str, EntryState]:
        await self._db.open()
        keys = {_key(name): name for name in names}
        query = sa.select(_e.name, _e.tick, _e.done, _e.sent).where(
            (_e.scope == self.scope) & _e.name.in_(list(keys))
        )
        rows = await self._db.call(self._db.read, lambda conn: conn.execute(query).all())
        return {
            keys[r.name]: EntryState(int(r.tick), bool(r.done), None if r.sent is None else int(r.sent))
            for r in rows
        }

    async def claim(self, name: str, expected: int | None, tick: int, token: int, done: bool = False) -> bool:
        return bool(await self._write(self._change, name, expected, tick, None, token, done))

    async def finish(self, name: str, tick: int, sent: bool, token: int) -> bool:
        return bool(await self._write(self._change, name, tick, tick, sent, token, True))

    def _change(
        self,
        conn: sa.Connection,
        name: str,
        expected: int | None,
        tick: int,
        sent: bool | None,
        token: int,
        done: bool,
    ) -> bool:
        """Claim (``sent`` None) or finish, if ``token`` is the lease's and the tick is ``expected``."""
        lease = self._lease_row(conn)
        if lease is None or lease.token != token:
            return False
        name = _key(name)
        where = (_e.scope == self.scope) & (_e.name == name)
        row = conn.execute(sa.select(_e.tick, _e.sent).where(where).with_for_update()).first()
        if (None if row is None else int(row.tick)) != expected:
            return False
        if row is None:
            values = {"scope": self.scope, "name": name, "tick": tick, "done": done, "sent": None}
            conn.execute(sa.insert(entry_table).values(values))
        elif sent is None:
            conn.execute(sa.update(entry_table).where(where).values(tick=tick, done=done))
        else:
            conn.execute(
                sa.update(entry_table).where(where).values(done=True, sent=tick if sent else row.sent)
            )
        return True

    async def close(self) -> None:
        await self._db.close()
