"""The schedule store contract on every store this machine has: the leader lease with its fencing token,
and each entry's compare-and-set claim, on SQLite, PostgreSQL, MySQL/MariaDB, Redis (and a Redis
Cluster) and memory. Each test works in a scope of its own and removes what it wrote."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from celeriac.beat.store import EntryState, ScheduleStore, create_store
from tests.contract.conftest import SERVERS, _require

STORES = ["memory", "sqlite", "postgresql", "mysql", "redis", "redis-cluster"]


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "memory":
        return f"memory://{uuid.uuid4().hex}"
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/beat.sqlite3"
    if kind == "redis-cluster":
        return str(request.getfixturevalue("redis_cluster_url"))
    _require(kind)
    return SERVERS[kind][3]


Body = Callable[[ScheduleStore, ScheduleStore], Awaitable[None]]


@pytest.fixture(params=STORES)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[Body], None]:
    """Runs a test's body with two stores (as two beat processes would have) on one place, in a scope
    of the test's own, on one event loop; then cleans up."""
    kind = request.param
    url = _url(kind, request, tmp_path)

    def run(body: Body) -> None:
        async def go() -> None:
            scope = f"contract-{uuid.uuid4().hex[:12]}"
            pair = (create_store(url, scope=scope), create_store(url, scope=scope))
            try:
                await body(*pair)
            finally:
                await _clean(kind, url, scope, pair)

        asyncio.run(go())

    return run


async def _clean(kind: str, url: str, scope: str, pair: tuple[ScheduleStore, ScheduleStore]) -> None:
    if kind in ("postgresql", "mysql", "sqlite"):
        import sqlalchemy as sa

        from celeriac.sql.beat_store import entry_table, lease_table

        db = pair[0]._db  # type: ignore[attr-defined]
        await db.open()

        def wipe(conn: sa.Connection) -> None:
            conn.execute(sa.delete(entry_table).where(entry_table.c.scope == scope))
            conn.execute(sa.delete(lease_table).where(lease_table.c.scope == scope))

        await db.call(db.write, wipe)
    elif kind.startswith("redis"):
        from celeriac.redis.client import redis_client

        client = redis_client(url, {}, what="the test")
        base = f"celeriac.beat.{{{scope}}}"
        await client.delete(base + ".lease", base + ".token", base + ".entries")
        await client.aclose()
    for store in pair:
        await store.close()


def test_one_holder_at_a_time_and_a_newer_token_for_each_new_holder(stores) -> None:
    async def go(a: ScheduleStore, b: ScheduleStore) -> None:
        first = await a.acquire("a", 0.3)
        assert first is not None
        assert await b.acquire("b", 0.3) is None
        assert await a.acquire("a", 0.3) == first  # renewed: the same token
        await asyncio.sleep(0.4)  # a stops renewing (dies): its lease runs out
        second = await b.acquire("b", 5)
        assert second is not None and second > first
        assert await a.acquire("a", 5) is None
        await b.release("b", second)  # a clean stop: another takes over at once
        third = await a.acquire("a", 5)
        assert third is not None and third > second

    stores(go)


def test_claims_compare_and_set_the_tick_and_are_fenced_by_the_token(stores) -> None:
    async def go(a: ScheduleStore, b: ScheduleStore) -> None:
        old = await a.acquire("a", 0.2)
        assert old is not None
        assert await a.claim("e", None, 1_000, old, done=True)
        assert await a.states(["e", "other"]) == {"e": EntryState(1_000, True, None)}
        await asyncio.sleep(0.3)
        new = await b.acquire("b", 5)
        assert new is not None
        assert not await a.claim("e", 1_000, 2_000, old)  # the old leader, paused past its lease
        assert not await b.claim("e", 999, 2_000, new)  # not the tick it is: compare-and-set fails
        assert await b.claim("e", 1_000, 2_000, new)
        assert await b.states(["e"]) == {"e": EntryState(2_000, False, None)}
        assert not await a.finish("e", 2_000, True, old)
        assert await b.finish("e", 2_000, True, new)
        assert await a.states(["e"]) == {"e": EntryState(2_000, True, 2_000)}
        assert await b.claim("e", 2_000, 3_000, new)
        assert await b.finish("e", 3_000, False, new)  # skipped: the last sent tick stays
        assert await a.states(["e"]) == {"e": EntryState(3_000, True, 2_000)}
        # add_periodic_task names an entry after its signature's repr, which may be long.
        long = "proj.tasks.report(" + "x" * 400 + ")"
        assert await b.claim(long, None, 5, new, done=True)
        assert await b.claim(long, 5, 6, new)
        assert await a.states([long, "e"]) == {
            long: EntryState(6, False, None),
            "e": EntryState(3_000, True, 2_000),
        }

    stores(go)


def test_two_claims_of_one_tick_at_once_one_wins(stores) -> None:
    async def go(a: ScheduleStore, b: ScheduleStore) -> None:
        token = await a.acquire("a", 5)
        assert token is not None
        assert await a.claim("e", None, 10, token, done=True)
        # Both hold the current token here (as a leader and its own retry would): still one claim.
        results = await asyncio.gather(*(s.claim("e", 10, 20, token) for s in (a, b, a, b)))
        assert sorted(results) == [False, False, False, True]

    stores(go)
