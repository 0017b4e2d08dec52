"""The schedule store contract (``celeriac.testing.contract.ScheduleStoreContract``) on every store this
machine has: SQLite, PostgreSQL, MySQL/MariaDB, Redis (and a private Redis Cluster) and memory. Each test
works in a scope of its own and removes what it wrote."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac.beat.store import ScheduleStore, create_store
from celeriac.testing.contract import ScheduleStoreContract
from tests.contract.conftest import STORE_KINDS, store_url


async def _clean(kind: str, url: str, scope: str) -> None:
    if kind in ("postgresql", "mysql", "sqlite"):
        import sqlalchemy as sa

        from celeriac.sql.beat_store import SQLScheduleStore, entry_table, lease_table

        store = SQLScheduleStore(url, scope=scope)
        db = store._db
        await db.open()

        def wipe(conn: sa.Connection) -> None:
            conn.execute(sa.delete(entry_table).where(entry_table.c.scope == scope))
            conn.execute(sa.delete(lease_table).where(lease_table.c.scope == scope))

        await db.call(db.write, wipe)
        await store.close()
    elif kind.startswith("redis"):
        from celeriac.redis.client import redis_client

        client = redis_client(url, {}, what="the test")
        base = f"celeriac.beat.{{{scope}}}"
        await client.delete(base + ".lease", base + ".token", base + ".entries")
        await client.aclose()


class TestScheduleStores(ScheduleStoreContract):
    @pytest.fixture(params=STORE_KINDS)
    def schedule_store_factory(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[Callable[[], ScheduleStore]]:
        kind = request.param
        url = store_url(kind, request, tmp_path)
        scope = f"contract-{uuid.uuid4().hex[:12]}"
        yield lambda: create_store(url, scope=scope)
        asyncio.run(_clean(kind, url, scope))
