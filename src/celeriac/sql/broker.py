"""A broker on a SQL database: SQLite (the embedded default), PostgreSQL, MySQL and MariaDB.

A message is a row of ``celeriac_message`` holding kombu's JSON envelope. A consumer takes rows by
writing its lease (owner and expiry) on them in one transaction, renews the lease with a heartbeat
while it holds them, and deletes them on ack. A row whose lease ran out (its worker died) is due
again, so the same fetch query hands it to the next consumer: no sweeper is needed. Delayed messages
wait in the same table behind ``not_before``; a queue is FIFO by due time within a priority.

Broadcasts (remote control) are rows of ``celeriac_broadcast``: exchange, routing key, envelope and
creation time. A subscriber starts after the newest row of its exchange and polls for later ids, every
few milliseconds after something arrived and backing off to ``broadcast_poll_interval`` (0.1 s) when
idle (to 20 ms at most for a remote-control caller's replies, which it awaits for a second or so); a
broadcast in this process wakes it at once. On PostgreSQL a broadcast also sends a NOTIFY that a
subscriber LISTENs for (``_notify``), so it hears broadcasts of other processes at once too and polls
only every ``broadcast_poll_interval``, as a fallback. It re-reads a window of recent ids, so a row whose
transaction committed after a higher id's (PostgreSQL, MySQL) is still seen, once. Rows older than a
minute are deleted by the next broadcast.

Row locking: PostgreSQL and MySQL/MariaDB take rows with ``FOR UPDATE SKIP LOCKED``, so consumers
never wait on each other; SQLite has one writer at a time and takes rows under ``BEGIN IMMEDIATE``.
Times are the clients' ``time.time()``: keep the clocks of publishers and workers in step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Collection, Sequence
from functools import partial
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from celeriac import signals
from celeriac._wakeup import wakeup_for
from celeriac.brokers.base import Broker, DeadLetter, Delivery, check_dead_letter_arguments, surely_held
from celeriac.brokers.delivery import priority_of, read_dead_letter, read_delivery
from celeriac.brokers.fanout import Subscription, matches
from celeriac.protocol.envelope import to_envelope
from celeriac.protocol.message import Message
from celeriac.sql._notify import Listener, notify
from celeriac.sql.database import Database

__all__ = ["SQLBroker", "broadcasts", "dead_letters", "messages", "metadata"]

log = logging.getLogger(__name__)

metadata = sa.MetaData()
_blob = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

messages = sa.Table(
    "celeriac_message",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("priority", sa.SmallInteger(), nullable=False),
    # Unix seconds as doubles: MySQL's FLOAT is single precision, far too coarse for a timestamp.
    sa.Column("not_before", sa.Double(), nullable=False),
    sa.Column("payload", _blob, nullable=False),
    sa.Column("deliveries", sa.Integer(), nullable=False, default=0),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Double(), nullable=True),
    sa.Column("created", sa.Double(), nullable=False),
    # The fetch query walks this index in order and stops after ``limit`` due rows.
    sa.Index("celeriac_message_fetch", "queue", "priority", "not_before", "id"),
    # Ids are never reused, so an old delivery tag can never name a newer message.
    sqlite_autoincrement=True,
)

dead_letters = sa.Table(
    "celeriac_dead_letter",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("queue", sa.String(200), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("payload", _blob, nullable=False),
    sa.Column("time", sa.Double(), nullable=False),
    sa.Index("celeriac_dead_letter_time", "time"),
    sqlite_autoincrement=True,
)

broadcasts = sa.Table(
    "celeriac_broadcast",
    metadata,
    sa.Column(
        "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    ),
    sa.Column("exchange", sa.String(200), nullable=False),
    sa.Column("routing_key", sa.String(200), nullable=False),
    sa.Column("payload", _blob, nullable=False),
    sa.Column("created", sa.Double(), nullable=False),
    sa.Index("celeriac_broadcast_follow", "exchange", "id"),
    sqlite_autoincrement=True,
)

_m = messages.c
_b = broadcasts.c
#: Broadcast rows are kept this long (s): subscribers only read rows newer than their start.
_BROADCAST_TTL = 60.0
#: How far below the highest id seen a subscriber looks again, for rows that committed late.
_LATE_IDS = 200
_Taken = tuple[int, str, bytes, int]
_d = dead_letters.c
#: Dead letters read per transaction when requeuing.
_REQUEUE_PAGE = 500


class SQLBroker(Broker):
    """A broker whose queues are rows of one table in a SQL database.

    Options:
        lease_seconds: how long a fetched message stays this consumer's without a heartbeat
            (default 30); the heartbeat renews it every fifth of that while the broker is open.
        poll_interval_max: the longest pause between two looks at the table while fetch waits
            (default 0.1 s); a publish in this process wakes the wait at once.
        broadcast_poll_interval: the longest pause between two looks for broadcasts (default 0.1 s);
            on PostgreSQL, where a subscriber is told of each broadcast (LISTEN/NOTIFY), the pause
            between two looks while it is told.
    """

    schemes: ClassVar[tuple[str, ...]] = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options=options)
        self.lease_seconds = float(self.options.get("lease_seconds", 30.0))
        self.poll_interval_max = float(self.options.get("poll_interval_max", 0.1))
        self.broadcast_poll_interval = float(self.options.get("broadcast_poll_interval", 0.1))
        self._pruned = 0.0
        self._db = Database(url, metadata, lock_timeout=float(self.options.get("busy_timeout", 5.0)))
        self._wakeup = wakeup_for("broker " + self._db.key)
        self._heard = wakeup_for("broadcasts " + self._db.key)
        self._owner = uuid.uuid4().hex
        self._held: set[int] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._listener: Listener | None = None

    async def connect(self) -> None:
        await self._db.open()

    async def publish(self, queue: str, message: Message, *, not_before: float | None = None) -> None:
        await self.publish_many([(queue, message, not_before)])

    async def publish_many(self, items: Sequence[tuple[str, Message, float | None]]) -> None:
        await self._db.open()
        now = time.time()
        rows = [
            {
                "queue": queue,
                "priority": priority_of(message),
                "not_before": now if not_before is None else not_before,
                "payload": to_envelope(message, routing_key=queue),
                "deliveries": 0,
                "created": now,
            }
            for queue, message, not_before in items
        ]
        if rows:
            await self._db.call(self._db.write, lambda conn: conn.execute(messages.insert(), rows))
            self._wakeup.notify()

    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        await self._db.open()
        if limit < 1:
            return []
        if not queues:
            await asyncio.sleep(max(timeout, 0.0))
            return []
        deadline = time.monotonic() + max(timeout, 0.0)
        pause, look_ahead, next_due = 0.002, True, None
        while True:
            with self._wakeup.armed() as woken:
                leased = time.monotonic()
                taken, upcoming = await self._db.call(
                    self._take, list(dict.fromkeys(queues)), limit, look_ahead
                )
                if taken:
                    self._hold(t[0] for t in taken)
                    deliveries = [read_delivery(*t) for t in taken]
                    for delivery in deliveries:
                        delivery.leased = leased
                    return deliveries
                if look_ahead:
                    look_ahead, next_due = False, upcoming
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                wait = min(pause, left)
                if next_due is not None:
                    wait = min(wait, max(next_due - time.time(), 0.0))
                await asyncio.wait((woken,), timeout=wait)
            if woken.done():
                # Something changed in this process: look again now, and at what became delayed.
                pause, look_ahead = 0.002, True
            else:
                pause = min(pause * 2, self.poll_interval_max)
            if next_due is not None and time.time() >= next_due:
                look_ahead, next_due = True, None

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        tags = [d.tag for d in deliveries]
        if tags:
            await self._db.open()
            delete = messages.delete().where(_m.id.in_(tags), _m.lease_owner == self._owner)
            await self._db.call(self._db.write, lambda conn: conn.execute(delete))
        self._held.difference_update(tags)

    async def holds(self, deliveries: Sequence[Delivery]) -> list[bool]:
        if all(surely_held(d, self.lease_seconds) for d in deliveries):
            return [True] * len(deliveries)
        asked = time.monotonic()
        kept = await self._db.call(self._db.write, partial(self._keep, [d.tag for d in deliveries]))
        for delivery in deliveries:
            if delivery.tag in kept:
                delivery.leased = asked
            else:
                self._held.discard(delivery.tag)
        return [d.tag in kept for d in deliveries]

    async def reject(self, delivery: Delivery, *, requeue: bool, reason: str = "") -> None:
        await self._db.open()
        mine = sa.and_(_m.id == delivery.tag, _m.lease_owner == self._owner)
        if requeue:
            free = messages.update().where(mine).values(lease_owner=None, lease_until=None)
            await self._db.call(self._db.write, lambda conn: conn.execute(free))
        else:
            await self._db.call(self._db.write, partial(_bury, mine, reason))
        self._held.discard(delivery.tag)
        if requeue:
            self._wakeup.notify()

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        tags = [d.tag for d in deliveries]
        if tags:
            await self._db.open()
            free = (
                messages.update()
                .where(_m.id.in_(tags), _m.lease_owner == self._owner)
                .values(lease_owner=None, lease_until=None, deliveries=_m.deliveries - 1)
            )
            await self._db.call(self._db.write, lambda conn: conn.execute(free))
        self._held.difference_update(tags)
        self._wakeup.notify()

    async def purge(self, queue: str) -> int:
        await self._db.open()

        def purge(conn: sa.Connection) -> int:
            return conn.execute(messages.delete().where(_m.queue == queue, _waiting(time.time()))).rowcount

        return await self._db.call(self._db.write, purge)

    async def size(self, queue: str) -> int:
        await self._db.open()

        def size(conn: sa.Connection) -> int:
            count = sa.select(sa.func.count()).select_from(messages)
            return conn.execute(count.where(_m.queue == queue, _waiting(time.time()))).scalar_one()

        return await self._db.call(self._db.read, size)

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        await self._db.open()
        d = dead_letters.c
        query = (
            sa.select(d.queue, d.reason, d.payload, d.time).order_by(d.time.desc(), d.id.desc()).limit(limit)
        )
        if queue is not None:
            query = query.where(d.queue == queue)
        rows = await self._db.call(self._db.read, partial(_rows, query))
        return [read_dead_letter(r.queue, r.reason, bytes(r.payload), r.time) for r in rows]

    async def requeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        check_dead_letter_arguments(limit=limit)
        await self._db.open()
        moved, after = 0, (-1.0, -1)
        while limit is None or moved < limit:
            rows = await self._db.call(self._db.read, partial(_oldest_dead, queue, after, _REQUEUE_PAGE))
            if not rows:
                break
            after = (rows[-1].time, rows[-1].id)
            chosen = [
                (r.id, r.queue, letter)
                for r in rows
                if (letter := read_dead_letter(r.queue, r.reason, bytes(r.payload), r.time)).selected(
                    queue, ids
                )
            ]
            if limit is not None:
                chosen = chosen[: limit - moved]
            if chosen:
                moved += await self._db.call(self._db.write, partial(_revive, chosen))
        if moved:
            self._wakeup.notify()
        return moved

    async def purge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        check_dead_letter_arguments(older_than=older_than, keep=keep)
        await self._db.open()
        # Look first without the write lock (SQLite has one for the whole file): every worker's
        # retention asks once a minute, and mostly there is nothing to delete.
        if not await self._db.call(self._db.read, partial(_any_doomed, queue, older_than, keep)):
            return 0
        return await self._db.call(self._db.write, partial(_purge_dead, queue, older_than, keep))

    async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
        await self._db.open()
        now = time.time()
        row = {
            "exchange": exchange,
            "routing_key": routing_key,
            "payload": to_envelope(message, routing_key=routing_key, exchange=exchange),
            "created": now,
        }
        prune = now - self._pruned > _BROADCAST_TTL / 4
        if prune:
            self._pruned = now

        postgres = self._postgres

        def insert(conn: sa.Connection) -> None:
            conn.execute(broadcasts.insert(), [row])
            if postgres:
                notify(conn, exchange)
            if prune:
                conn.execute(broadcasts.delete().where(_b.created < now - _BROADCAST_TTL))

        await self._db.call(self._db.write, insert)
        self._heard.notify()

    @contextlib.asynccontextmanager
    async def subscribe(self, exchange: str, pattern: str = "#") -> AsyncIterator[Subscription]:
        await self._db.open()
        newest = sa.select(sa.func.max(_b.id)).where(_b.exchange == exchange)
        start = await self._db.call(self._db.read, lambda conn: conn.execute(newest).scalar()) or 0
        subscription = Subscription(exchange)
        listener = await self._listen() if self._postgres else None
        follower = asyncio.create_task(
            self._follow(exchange, pattern, start, subscription, listener), name="celeriac-sql-broadcasts"
        )
        try:
            yield subscription
        finally:
            follower.cancel()
            await asyncio.wait((follower,))

    @property
    def _postgres(self) -> bool:
        return self._db.url.get_backend_name() == "postgresql"

    async def _listen(self) -> Listener:
        """This broker's one listener for broadcast notifications, started by its first subscription on
        this loop and kept until ``close`` (a connection per subscription would cost each ``inspect``
        call a connect)."""
        listener = self._listener
        if listener is None or not listener.alive:
            listener = self._listener = Listener(self._db.url, self._heard.notify)
            await listener.start()
        return listener

    async def _follow(
        self, exchange: str, pattern: str, start: int, subscription: Subscription, listener: Listener | None
    ) -> None:
        highest, seen, pause = start, set[int](), 0.005
        # A remote-control caller waits on its replies for a second or so: looking often costs little
        # there, and waiting up to the full interval for a reply that came would double a round trip.
        replies = exchange.startswith("reply.") and exchange.endswith("pidbox")
        longest = min(self.broadcast_poll_interval, 0.02) if replies else self.broadcast_poll_interval
        try:
            while True:
                with self._heard.armed() as woken:
                    since = max(start, highest - _LATE_IDS)
                    query = (
                        sa.select(_b.id, _b.routing_key, _b.payload)
                        .where(_b.exchange == exchange, _b.id > since)
                        .order_by(_b.id)
                    )
                    rows = await self._db.call(self._db.read, partial(_rows, query))
                    fresh = [r for r in rows if r.id not in seen]
                    for r in fresh:
                        seen.add(r.id)
                        highest = max(highest, r.id)
                        if matches(pattern, r.routing_key):
                            subscription.feed(bytes(r.payload))
                    if fresh:
                        seen = {i for i in seen if i > highest - _LATE_IDS}
                        pause = 0.005
                    else:
                        pause = min(pause * 2, longest)
                    # Told of every broadcast: the poll is only the fallback.
                    told = listener is not None and listener.listening
                    await asyncio.wait((woken,), timeout=self.broadcast_poll_interval if told else pause)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            subscription.fail(exc)

    async def close(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and listener.alive:
            await listener.stop()
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.wait((self._heartbeat,))
            self._heartbeat = None
        if self._db.opened:
            free = (
                messages.update()
                .where(_m.lease_owner == self._owner)
                .values(lease_owner=None, lease_until=None)
            )
            await self._db.call(self._db.write, lambda conn: conn.execute(free))
            self._wakeup.notify()
        self._held.clear()
        await self._db.close()

    # -- on the database thread

    def _take(self, queues: list[str], limit: int, look_ahead: bool) -> tuple[list[_Taken], float | None]:
        """Lease up to ``limit`` due rows; when none is due and ``look_ahead``, also say when one will be."""
        now = time.time()
        due = sa.and_(_m.queue.in_(queues), _m.not_before <= now, _waiting(now))
        db = self._db
        # On SQLite every BEGIN IMMEDIATE takes the one write lock: look without it first, so idle
        # consumers polling an empty queue never stand in a publisher's way.
        if (
            db.sqlite
            and db.read(lambda conn: conn.execute(sa.select(_m.id).where(due).limit(1)).first()) is None
        ):
            taken: list[_Taken] = []
        else:
            taken = db.write(partial(self._lease, due, limit, now))
        if taken or not look_ahead:
            return taken, None
        soonest = sa.select(sa.func.min(_m.not_before)).where(
            _m.queue.in_(queues), _m.not_before > now, _m.lease_owner.is_(None)
        )
        return taken, db.read(lambda conn: conn.execute(soonest).scalar())

    def _lease(
        self, due: sa.ColumnElement[bool], limit: int, now: float, conn: sa.Connection
    ) -> list[_Taken]:
        query = sa.select(_m.id, _m.queue, _m.payload, _m.deliveries).where(due)
        query = query.order_by(_m.priority, _m.not_before, _m.id).limit(limit)
        if not self._db.sqlite:
            query = query.with_for_update(skip_locked=self._db.skip_locked)
        rows = conn.execute(query).all()
        if rows:
            conn.execute(
                messages.update()
                .where(_m.id.in_([r.id for r in rows]))
                .values(
                    lease_owner=self._owner,
                    lease_until=now + self.lease_seconds,
                    deliveries=_m.deliveries + 1,
                )
            )
        return [(r.id, r.queue, bytes(r.payload), r.deliveries + 1) for r in rows]

    # -- leases

    def _hold(self, tags: Any) -> None:
        self._held.update(tags)
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat(), name="celeriac-sql-lease-heartbeat")

    async def _beat(self) -> None:
        # While this consumer lives its leases never run out, however long a task runs; once it dies
        # they do, and the fetch query of any other consumer takes the messages back.
        while True:
            await asyncio.sleep(self.lease_seconds / 5)
            held = list(self._held)
            if not held:
                return
            try:
                await self._db.call(self._db.write, partial(self._renew, held))
                signals.heartbeat_sent.send(sender=self)
            except Exception:
                log.warning("could not renew message leases; will retry", exc_info=True)

    def _keep(self, tags: list[int], conn: sa.Connection) -> set[int]:
        """Renew the leases of the rows among ``tags`` still this consumer's; return their ids. A row
        whose lease ran out and that another consumer took since is that consumer's now."""
        self._renew(tags, conn)
        mine = sa.and_(_m.id.in_(tags), _m.lease_owner == self._owner)
        return set(conn.execute(sa.select(_m.id).where(mine)).scalars())

    def _renew(self, held: list[int], conn: sa.Connection) -> None:
        mine = sa.and_(_m.id.in_(held), _m.lease_owner == self._owner)
        conn.execute(messages.update().where(mine).values(lease_until=time.time() + self.lease_seconds))


def _rows(query: sa.Select[Any], conn: sa.Connection) -> Sequence[sa.Row[Any]]:
    return conn.execute(query).all()


def _waiting(now: float) -> sa.ColumnElement[bool]:
    """Rows no live consumer holds: never leased, given back, or whose lease ran out."""
    return sa.or_(_m.lease_owner.is_(None), _m.lease_until < now)


def _bury(mine: sa.ColumnElement[bool], reason: str, conn: sa.Connection) -> None:
    copy = sa.select(
        _m.queue, sa.literal(reason, sa.Text()), _m.payload, sa.literal(time.time(), sa.Double())
    )
    d = dead_letters.c
    conn.execute(dead_letters.insert().from_select([d.queue, d.reason, d.payload, d.time], copy.where(mine)))
    conn.execute(messages.delete().where(mine))


def _oldest_dead(
    queue: str | None, after: tuple[float, int], limit: int, conn: sa.Connection
) -> Sequence[sa.Row[Any]]:
    """Up to ``limit`` dead letters (of ``queue``) after ``(time, id)``, oldest first."""
    when, last = after
    query: sa.Select[Any] = sa.select(_d.id, _d.queue, _d.reason, _d.payload, _d.time).where(
        sa.or_(_d.time > when, sa.and_(_d.time == when, _d.id > last))
    )
    if queue is not None:
        query = query.where(_d.queue == queue)
    return conn.execute(query.order_by(_d.time, _d.id).limit(limit)).all()


def _revive(chosen: list[tuple[int, str, DeadLetter]], conn: sa.Connection) -> int:
    """Move dead letters back to their queues in this one transaction; a letter someone else moved or
    deleted meanwhile (no row deleted) is skipped."""
    now, moved = time.time(), 0
    for row_id, queue, letter in chosen:
        if conn.execute(dead_letters.delete().where(_d.id == row_id)).rowcount != 1:
            continue
        priority = priority_of(letter.message) if letter.message is not None else 0
        row = {
            "queue": queue,
            "priority": priority,
            "not_before": now,
            "payload": letter.raw,
            "deliveries": 0,
            "created": now,
        }
        conn.execute(messages.insert(), [row])
        moved += 1
    return moved


def _doomed(
    queue: str | None, older_than: float | None, keep: int | None, conn: sa.Connection
) -> sa.ColumnElement[bool] | None:
    """Which dead letters ``purge_dead_letters`` deletes, as a condition; None when none."""
    of_queue = sa.true() if queue is None else _d.queue == queue
    if older_than is None and keep is None:
        return of_queue
    doomed: list[sa.ColumnElement[bool]] = []
    if older_than is not None:
        doomed.append(_d.time < time.time() - older_than)
    if keep is not None:
        # The newest kept are those before the first dropped, in the order dead_letters lists them.
        newest_first = sa.select(_d.time, _d.id).where(of_queue).order_by(_d.time.desc(), _d.id.desc())
        first = conn.execute(newest_first.offset(keep).limit(1)).first()
        if first is not None:
            doomed.append(sa.or_(_d.time < first.time, sa.and_(_d.time == first.time, _d.id <= first.id)))
    return sa.and_(of_queue, sa.or_(*doomed)) if doomed else None


def _any_doomed(queue: str | None, older_than: float | None, keep: int | None, conn: sa.Connection) -> bool:
    doomed = _doomed(queue, older_than, keep, conn)
    return doomed is not None and conn.execute(sa.select(_d.id).where(doomed).limit(1)).first() is not None


def _purge_dead(queue: str | None, older_than: float | None, keep: int | None, conn: sa.Connection) -> int:
    """Delete the dead letters ``purge_dead_letters`` names, in one statement."""
    doomed = _doomed(queue, older_than, keep, conn)
    return 0 if doomed is None else conn.execute(dead_letters.delete().where(doomed)).rowcount
