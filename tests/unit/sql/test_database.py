"""The SQLite pragmas every broker and backend connection gets."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa

from celeriac.sql.broker import SQLBroker


def test_sqlite_commits_are_synced_to_disk_before_they_return(tmp_path: Path) -> None:
    """``synchronous=FULL`` in WAL mode: a message a ``delay()`` committed survives a power cut."""

    async def pragmas() -> tuple[str, int]:
        broker = SQLBroker(f"sqlite:///{tmp_path / 'b.sqlite3'}")
        await broker.connect()
        try:
            db = broker._db
            return await db.call(
                db.read,
                lambda conn: (
                    conn.execute(sa.text("PRAGMA journal_mode")).scalar_one(),
                    conn.execute(sa.text("PRAGMA synchronous")).scalar_one(),
                ),
            )
        finally:
            await broker.close()

    journal, synchronous = asyncio.run(pragmas())
    assert journal == "wal"
    assert synchronous == 2  # FULL (NORMAL is 1)
