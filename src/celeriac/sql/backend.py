"""A result backend in Celery's own tables, so Celery's database backend and celeriac read each other.

What Celery's database backend (``celery/backends/database``) keeps, as read in Celery 5.5 to 5.7:

* ``celery_taskmeta`` holds one row per task (``task_id`` unique). ``status`` is the state name,
  ``traceback`` the formatted traceback, ``date_done`` a naive datetime set for ready states and NULL
  for others (we write and read it as UTC).
* ``result`` holds the *value only*, not the whole record. Celery 5.7 encodes it with
  ``result_serializer``: with JSON a return value of 5 is ``b'5'``, None is ``b'null'``, and a failure
  is the exception as ``{"exc_type": "ValueError", "exc_message": ["boom"], "exc_module": "builtins"}``
  (``exc_message`` is the exception's args). Celery 5.5 and 5.6 declared the column as SQLAlchemy's
  ``PickleType``, so their rows hold the same value pickled (with a JSON serializer the exception is
  still that dict). Celery 5.7 reads such rows by unpickling when decoding fails and the bytes start
  with ``b'\\x80'``; so do we, but only when pickle is in ``accept``.
* ``children`` (a column new in 5.7) holds the result tuples of the tasks this task sent,
  ``[[id, None], None]`` each, encoded with the result serializer, or NULL when there are none.
* With ``result_extended``, ``name``, ``worker``, ``retries`` and ``queue`` are plain columns, and
  ``args`` and ``kwargs`` are encoded with the result serializer. 5.7 adds ``stamps``, which we create
  (so Celery 5.7 can write to our table) but leave alone.
* ``parent_id`` and ``group_id`` have no column: neither Celery nor this backend keeps them here.
* ``celery_tasksetmeta`` holds saved groups (``taskset_id`` unique, ``date_done`` when saved). Celery
  5.7 puts the group's result tuple (``GroupResult.as_tuple()``, ``[[id, parent], [member tuples]]``)
  in ``result``, encoded with ``result_serializer``; so do we. Up to 5.6 the column was a
  ``PickleType`` holding the pickled ``GroupResult`` object; such rows are read by the restricted
  unpickler of ``_safe_pickle``, whatever ``accept`` says, since it never imports or runs anything.

Celery's database backend has no chord counter (it polls with the ``celery.chord_unlock`` task), so
ours has tables of its own: ``celeriac_chord`` (one row per chord: size, parts counted, the claim and
its lease, done) and ``celeriac_chord_part`` (one row per counted part). ``chord_part`` locks the
chord's row (``SELECT ... FOR UPDATE``; SQLite's BEGIN IMMEDIATE locks the whole database) before it
looks at the parts, so reports on one chord run one after another on every database, and a deadlock
MySQL reports between two first reports is retried.

A table that Celery created earlier may lack some of these columns; this backend reads and writes
only the columns the table has. Unlike Celery 5.7, which ignores writes after SUCCESS, ``store``
replaces the record as the Backend contract says.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from celeriac import states
from celeriac._wakeup import wakeup_for
from celeriac.backends.base import Backend, ChordClaim, ChordPart, ResultMeta
from celeriac.exceptions import DecodeError, TimeoutError
from celeriac.sql import _safe_pickle
from celeriac.sql.database import Database

__all__ = ["SQLBackend", "chord_parts", "chords", "group_meta", "metadata", "task_meta"]

T = TypeVar("T")

metadata = sa.MetaData()
# Celery declares plain BLOB and DATETIME; on MySQL those hold 64 KiB and whole seconds only.
_blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
_moment = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

task_meta = sa.Table(
    "celery_taskmeta",
    metadata,
    sa.Column("id", sa.Integer(), sa.Sequence("task_id_sequence"), primary_key=True, autoincrement=True),
    sa.Column("task_id", sa.String(155), unique=True),
    sa.Column("status", sa.String(50)),
    sa.Column("result", _blob, nullable=True),
    sa.Column("date_done", _moment, nullable=True, index=True),
    sa.Column("traceback", sa.Text(), nullable=True),
    sa.Column("children", _blob, nullable=True),
    sa.Column("name", sa.String(155), nullable=True),
    sa.Column("args", _blob, nullable=True),
    sa.Column("kwargs", _blob, nullable=True),
    sa.Column("worker", sa.String(155), nullable=True),
    sa.Column("retries", sa.Integer(), nullable=True),
    sa.Column("queue", sa.String(155), nullable=True),
    sa.Column("stamps", _blob, nullable=True),
    sqlite_autoincrement=True,
)

group_meta = sa.Table(
    "celery_tasksetmeta",
    metadata,
    sa.Column("id", sa.Integer(), sa.Sequence("taskset_id_sequence"), primary_key=True, autoincrement=True),
    sa.Column("taskset_id", sa.String(155), unique=True),
    sa.Column("result", _blob, nullable=True),
    sa.Column("date_done", _moment, nullable=True, index=True),
    sqlite_autoincrement=True,
)

chords = sa.Table(
    "celeriac_chord",
    metadata,
    sa.Column("group_id", sa.String(155), primary_key=True),
    sa.Column("size", sa.Integer(), nullable=False),
    sa.Column("counted", sa.Integer(), nullable=False),
    sa.Column("token", sa.String(32), nullable=True),
    sa.Column("lease_until", sa.Double(), nullable=True),
    sa.Column("done", sa.Boolean(), nullable=False),
    sa.Column("touched", _moment, nullable=False, index=True),
)

chord_parts = sa.Table(
    "celeriac_chord_part",
    metadata,
    sa.Column("group_id", sa.String(155), primary_key=True),
    sa.Column("task_id", sa.String(155), primary_key=True),
    # The header index, -1 for a part that has none (a primary key column cannot be NULL).
    sa.Column("position", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("arrival", sa.Integer(), nullable=False),
    sa.Column("status", sa.String(50), nullable=False),
    sa.Column("result", _blob, nullable=True),
)

_t = task_meta.c
_g = group_meta.c
_PLAIN = ("name", "worker", "retries", "queue")
_ENCODED = ("args", "kwargs")
_PICKLE = "application/x-python-serialize"


class SQLBackend(Backend):
    """Results in ``celery_taskmeta`` on SQLite, PostgreSQL, MySQL or MariaDB.

    ``wait`` polls with backoff and wakes at once when this process stores the awaited result.
    """

    schemes = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")

    def setup(self) -> None:
        self._db = Database(self.url, metadata, lock_timeout=float(self.options.get("busy_timeout", 5.0)))
        self._wakeup = wakeup_for("results " + self._db.key)
        self._columns: frozenset[str] = frozenset()

    async def store(self, metas: Sequence[ResultMeta]) -> None:
        if not metas:
            return
        await self._open()
        # One row per task id: PostgreSQL refuses to upsert one row twice in a statement.
        rows = list({m.task_id: self._row(m) for m in metas}.values())
        await self._db.call(self._db.write, partial(_upsert, task_meta, rows))
        self._wakeup.notify()

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        if not task_ids:
            return {}
        await self._open()
        query = sa.select(*(c for c in task_meta.c if c.name in self._columns))
        query = query.where(_t.task_id.in_(list(dict.fromkeys(task_ids))))
        rows = await self._db.call(self._db.read, lambda conn: conn.execute(query).all())
        return {row.task_id: self._meta(row._mapping) for row in rows}

    async def forget(self, task_id: str) -> None:
        await self._open()
        delete = task_meta.delete().where(_t.task_id == task_id)
        await self._db.call(self._db.write, lambda conn: conn.execute(delete))

    async def save_group(self, group_id: str, result: Any) -> None:
        await self._open()
        row = {"taskset_id": group_id, "result": self.encode(result)[1], "date_done": _naive_utc(_now())}
        await self._db.call(self._db.write, partial(_upsert, group_meta, [row]))

    async def restore_group(self, group_id: str) -> Any | None:
        await self._open()
        query = sa.select(_g.result).where(_g.taskset_id == group_id)
        data = await self._db.call(self._db.read, lambda conn: conn.execute(query).scalar())
        if data is None:
            return None
        data = bytes(data)
        # Pickled groups are Celery's (an object graph naming its classes); never plain pickle.loads.
        return _safe_pickle.loads(data) if data[:1] == b"\x80" else self.decode(data)

    async def forget_group(self, group_id: str) -> None:
        await self._open()
        delete = group_meta.delete().where(_g.taskset_id == group_id)
        await self._db.call(self._db.write, lambda conn: conn.execute(delete))

    async def chord_begin(self, group_id: str, size: int) -> None:
        await self._open()
        again = chords.delete().where((chords.c.group_id == group_id) & chords.c.done)
        await self._db.call(self._db.write, lambda conn: conn.execute(again))

    async def chord_part(
        self, group_id: str, part: ChordPart, size: int, *, lease: float = 60.0
    ) -> ChordClaim | None:
        if size < 1:
            raise ValueError(f"a chord's header has at least one part, not {size}")
        await self._open()
        token = uuid.uuid4().hex
        row = {
            "group_id": group_id,
            "task_id": part.task_id,
            "position": -1 if part.index is None else part.index,
            "status": part.status,
            "result": self.encode(part.result)[1],
        }
        step = partial(_count_part, row, size, token, lease)
        counted = await self._db.call(self._db.write_retrying, step)
        if counted is None:
            return None
        counted.sort(key=lambda r: (r.position < 0, r.position, r.arrival))
        return ChordClaim(
            group_id,
            token,
            tuple(
                ChordPart(r.task_id, None if r.position < 0 else r.position, r.status, self._load(r.result))
                for r in counted
            ),
        )

    async def chord_grow(self, group_id: str, by: int = 1) -> None:
        await self._open()
        await self._db.call(self._db.write_retrying, partial(_grow_chord, group_id, by))

    async def chord_done(self, claim: ChordClaim) -> None:
        await self._open()
        await self._db.call(self._db.write, partial(_end_chord, claim.group_id, claim.token))

    async def wait(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> ResultMeta:
        """Wait until ``task_id`` is ready: poll from 1 ms up to ``interval``, woken by local stores."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            with self._wakeup.armed() as stored:
                meta = await self.get(task_id)
                if meta.ready:
                    return meta
                wait = pause
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"task {task_id} not ready after {timeout}s (state {meta.status})")
                    wait = min(wait, left)
                await asyncio.wait((stored,), timeout=wait)
            pause = min(pause * 2, interval)

    async def cleanup(self, now: datetime | None = None) -> int:
        """Delete task and group records finished more than ``expires`` ago; return how many tasks."""
        if self.expires is None:
            return 0
        await self._open()
        cutoff = _naive_utc(now or datetime.now(UTC)) - timedelta(seconds=self.expires)

        def cleanup(conn: sa.Connection) -> int:
            conn.execute(group_meta.delete().where(_g.date_done < cutoff))
            stale = sa.select(chords.c.group_id).where(chords.c.touched < cutoff)
            conn.execute(chord_parts.delete().where(chord_parts.c.group_id.in_(stale)))
            conn.execute(chords.delete().where(chords.c.touched < cutoff))
            return conn.execute(task_meta.delete().where(_t.date_done < cutoff)).rowcount

        return await self._db.call(self._db.write, cleanup)

    async def close(self) -> None:
        await self._db.close()

    async def _open(self) -> None:
        if not self._columns:
            await self._db.open()
            self._columns = await self._db.call(self._db.read, _columns_of)

    def _row(self, meta: ResultMeta) -> dict[str, Any]:
        done = meta.date_done
        if done is None and meta.status in states.READY_STATES:
            done = datetime.now(UTC)
        row: dict[str, Any] = {
            "task_id": meta.task_id,
            "status": meta.status,
            "result": self.encode(meta.result)[1],
            "traceback": meta.traceback,
            "date_done": None if done is None else _naive_utc(done),
            "children": self.encode(meta.children)[1] if meta.children else None,
        }
        extended = meta.extended
        row.update({name: extended.get(name) for name in _PLAIN})
        row.update({name: self.encode(extended[name])[1] if name in extended else None for name in _ENCODED})
        return {name: value for name, value in row.items() if name in self._columns}

    def _meta(self, row: sa.RowMapping) -> ResultMeta:
        extended = {name: row[name] for name in _PLAIN if row.get(name) is not None}
        extended.update({name: self._load(row[name]) for name in _ENCODED if row.get(name) is not None})
        done = row.get("date_done")
        return ResultMeta(
            task_id=row["task_id"],
            status=row["status"] or states.PENDING,
            result=self._load(row["result"]),
            traceback=row.get("traceback"),
            date_done=None if done is None else _aware_utc(done),
            children=list(self._load(row.get("children")) or []),
            extended=extended,
        )

    def _load(self, data: bytes | None) -> Any:
        if data is None:
            return None
        data = bytes(data)
        try:
            return self.decode(data)
        except DecodeError:
            # Celery up to 5.6 pickled this column; ``decode`` refuses that unless pickle is accepted.
            if data[:1] == b"\x80":
                return self.decode(data, _PICKLE)
            raise


def _columns_of(conn: sa.Connection) -> frozenset[str]:
    return frozenset(column["name"] for column in sa.inspect(conn).get_columns(task_meta.name))


def _upsert(table: sa.Table, rows: list[dict[str, Any]], conn: sa.Connection) -> None:
    """Insert ``rows`` into Celery's ``table``, replacing the rows of the same task (or group) id."""
    key = table.c.task_id if table is task_meta else table.c.taskset_id
    changed = [name for name in rows[0] if name != key.name]
    dialect = conn.dialect.name
    if dialect in ("sqlite", "postgresql"):
        insert = sqlite.insert(table) if dialect == "sqlite" else postgresql.insert(table)
        excluded = insert.excluded
        conn.execute(
            insert.on_conflict_do_update(index_elements=[key], set_={n: excluded[n] for n in changed}),
            rows,
        )
    elif dialect in ("mysql", "mariadb"):
        upsert = mysql.insert(table)
        conn.execute(upsert.on_duplicate_key_update({n: upsert.inserted[n] for n in changed}), rows)
    else:
        ids = [row[key.name] for row in rows]
        present = set(conn.execute(sa.select(key).where(key.in_(ids))).scalars())
        old = [{**row, "key": row[key.name]} for row in rows if row[key.name] in present]
        new = [row for row in rows if row[key.name] not in present]
        if old:
            conn.execute(table.update().where(key == sa.bindparam("key")), old)
        if new:
            conn.execute(table.insert(), new)


def _locked_chord(group_id: str, size: int, conn: sa.Connection) -> sa.Row[Any]:
    """The chord's row, made with ``size`` if it did not exist, and locked: from here on, writes on this
    chord in other transactions wait for this one."""
    c = chords.c
    new = {"group_id": group_id, "size": size, "counted": 0, "done": False, "touched": _naive_utc(_now())}
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        upsert = mysql.insert(chords)
        conn.execute(upsert.on_duplicate_key_update({"group_id": upsert.inserted.group_id}), new)
    else:
        insert = sqlite.insert(chords) if dialect == "sqlite" else postgresql.insert(chords)
        conn.execute(insert.on_conflict_do_nothing(index_elements=[c.group_id]), new)
    return conn.execute(sa.select(chords).where(c.group_id == group_id).with_for_update()).one()


def _grow_chord(group_id: str, by: int, conn: sa.Connection) -> None:
    """``chord_grow`` inside a write transaction. Before the first report the header's size is not known
    here: the row then holds minus the parts added, and the first report adds its size to them."""
    chord = _locked_chord(group_id, 0, conn)
    size = chord.size + by if chord.size > 0 else chord.size - by
    conn.execute(chords.update().where(chords.c.group_id == group_id).values(size=size))


def _count_part(
    part: dict[str, Any], size: int, token: str, lease: float, conn: sa.Connection
) -> list[sa.Row[Any]] | None:
    """One chord report, inside a write transaction: the header's rows if this call claims the chord."""
    c, p = chords.c, chord_parts.c
    group_id, now = part["group_id"], time.time()
    touched = _naive_utc(_now())
    chord = _locked_chord(group_id, size, conn)
    if chord.done:
        return None
    if chord.size <= 0:  # only add_to_chord's parts counted so far (``_grow_chord``)
        chord_size = size - chord.size
        conn.execute(chords.update().where(c.group_id == group_id).values(size=chord_size))
    else:
        chord_size = chord.size
    counted = chord.counted
    key = (p.group_id == group_id) & (p.task_id == part["task_id"]) & (p.position == part["position"])
    if conn.execute(sa.select(p.arrival).where(key)).first() is None:
        conn.execute(chord_parts.insert(), {**part, "arrival": counted})
        counted += 1
    claims = counted >= chord_size and (chord.token is None or (chord.lease_until or 0) < now)
    changes: dict[str, Any] = {"counted": counted, "touched": touched}
    if claims:
        changes.update(token=token, lease_until=now + lease)
    conn.execute(chords.update().where(c.group_id == group_id).values(changes))
    if not claims:
        return None
    return list(conn.execute(sa.select(chord_parts).where(p.group_id == group_id)).all())


def _end_chord(group_id: str, token: str, conn: sa.Connection) -> None:
    c = chords.c
    chord = conn.execute(sa.select(chords).where(c.group_id == group_id).with_for_update()).first()
    if chord is None or chord.token != token:
        return
    conn.execute(chord_parts.delete().where(chord_parts.c.group_id == group_id))
    conn.execute(chords.update().where(c.group_id == group_id).values(done=True, touched=_naive_utc(_now())))


def _now() -> datetime:
    return datetime.now(UTC)


def _naive_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _aware_utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
