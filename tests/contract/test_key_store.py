"""The key store contract (``celeriac.testing.contract.KeyStoreContract``) on every store this machine
has: SQLite, PostgreSQL, MySQL/MariaDB, Redis (and a private Redis Cluster) and memory. Each test works
in a scope of its own and removes what it wrote."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from celeriac.testing.contract import KeyStoreContract
from celeriac.unique.store import KeyStore, create_key_store
from tests.contract.conftest import STORE_KINDS, store_url


async def _clean(kind: str, url: str, scope: str) -> None:
    if kind in ("postgresql", "mysql", "sqlite"):
        import sqlalchemy as sa

        from celeriac.sql.unique_store import SQLKeyStore, key_table

        store = SQLKeyStore(url, scope=scope)
        db = store._db
        await db.open()
        await db.call(
            db.write, lambda conn: conn.execute(sa.delete(key_table).where(key_table.c.scope == scope))
        )
        await store.close()
    elif kind.startswith("redis"):
        from celeriac.redis.client import redis_client

        client = redis_client(url, {}, what="the test")
        async for key in client.scan_iter(match=f"celeriac.unique.{scope}.*"):
            await client.delete(key)
        await client.aclose()


class TestKeyStores(KeyStoreContract):
    @pytest.fixture(params=STORE_KINDS)
    def key_store_factory(
        self, request: pytest.FixtureRequest, tmp_path: Path
    ) -> Iterator[Callable[[], KeyStore]]:
        kind = request.param
        url = store_url(kind, request, tmp_path)
        scope = f"contract-{uuid.uuid4().hex[:12]}"
        yield lambda: create_key_store(url, scope=scope)
        asyncio.run(_clean(kind, url, scope))
