"""The SQL broker's and backend's kits for the contract suites (``celeriac.testing.contract``).

A test on a shared database (PostgreSQL, MySQL/MariaDB) works on queues and task ids of its own;
``clean`` deletes their rows, and leaves the tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from celeriac.brokers import Broker
from celeriac.sql.backend import chord_parts, chords, group_meta, task_meta
from celeriac.sql.broker import SQLBroker, dead_letters, messages
from celeriac.sql.database import engine_url
from celeriac.testing.contract.kit import BackendKit, BrokerKit

__all__ = ["SQLBackendKit", "SQLBrokerKit"]


@contextmanager
def _transaction(url: str) -> Iterator[sa.Connection]:
    engine = sa.create_engine(engine_url(url))
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


class SQLBrokerKit(BrokerKit):
    """SQL brokers (SQLite, PostgreSQL, MySQL/MariaDB); ``clean`` deletes the rows of the test's queues."""

    broadcasts = True

    async def put_raw(self, broker: Broker, queue: str, payload: bytes) -> None:
        """Insert a due row of priority 0 holding ``payload``, where the broker keeps an envelope."""
        assert isinstance(broker, SQLBroker)
        await broker.connect()
        row = {"queue": queue, "priority": 0, "not_before": 0.0, "payload": payload, "created": 0.0}
        await broker._db.call(broker._db.write, lambda conn: conn.execute(messages.insert(), row))

    def freeze(self, broker: Broker) -> None:
        """Cancel the broker's lease heartbeat: its leases run out, as a dead process's do."""
        assert isinstance(broker, SQLBroker)
        if broker._heartbeat is not None:
            broker._heartbeat.cancel()

    def clean(self) -> None:
        """Delete the waiting, leased and dead-lettered messages of the test's queues."""
        if not self.queues:
            return
        with _transaction(self.url) as conn:
            if sa.inspect(conn).has_table(messages.name):
                conn.execute(messages.delete().where(messages.c.queue.in_(self.queues)))
                conn.execute(dead_letters.delete().where(dead_letters.c.queue.in_(self.queues)))


class SQLBackendKit(BackendKit):
    """SQL result backends; ``clean`` deletes the test's records, saved groups and chord counters."""

    def clean(self) -> None:
        """Delete the rows of the test's task and group ids."""
        if not (self.task_ids or self.group_ids):
            return
        groups = self.group_ids
        with _transaction(self.url) as conn:
            tables = sa.inspect(conn)
            if tables.has_table(task_meta.name):
                conn.execute(task_meta.delete().where(task_meta.c.task_id.in_(self.task_ids)))
            if groups and tables.has_table(chords.name):
                conn.execute(group_meta.delete().where(group_meta.c.taskset_id.in_(groups)))
                conn.execute(chord_parts.delete().where(chord_parts.c.group_id.in_(groups)))
                conn.execute(chords.delete().where(chords.c.group_id.in_(groups)))
