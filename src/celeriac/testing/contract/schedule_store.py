"""The schedule store contract (``celeriac.beat.store.ScheduleStore``): the beat's leader lease with its
fencing token, and each entry's compare-and-set claim.

A plug-in supplies the fixture ``schedule_store_factory``: a function that makes a new, unconnected
store each time it is called, every one on the same place and scope (as the beats of one app are), and
cleans that scope up after the test. Each test runs on one event loop and closes its stores.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from celeriac.beat.store import EntryState, ScheduleStore

__all__ = ["ScheduleStoreContract"]

Factory = Callable[[], ScheduleStore]


def _run(factory: Factory, body: Callable[[ScheduleStore, ScheduleStore], Awaitable[None]]) -> None:
    async def go() -> None:
        a, b = factory(), factory()
        try:
            # Both connect first (a cluster client learns its slots), so that the short leases below
            # measure the store, not how long connecting takes.
            for store in (a, b):
                await store.states(["contract-warm-up"])
            await body(a, b)
        finally:
            await a.close()
            await b.close()

    asyncio.run(go())


class ScheduleStoreContract:
    """What every schedule store promises; needs the fixture ``schedule_store_factory``."""

    def test_one_holder_at_a_time_and_a_newer_token_for_each_new_holder(
        self, schedule_store_factory: Factory
    ) -> None:
        async def go(a: ScheduleStore, b: ScheduleStore) -> None:
            first = await a.acquire("a", 1.0)
            assert first is not None
            assert await b.acquire("b", 1.0) is None
            assert await a.acquire("a", 1.0) == first  # renewed: the same token
            await asyncio.sleep(1.1)  # a stops renewing (dies): its lease runs out
            second = await b.acquire("b", 5)
            assert second is not None and second > first
            assert await a.acquire("a", 5) is None
            await b.release("b", second)  # a clean stop: another takes over at once
            third = await a.acquire("a", 5)
            assert third is not None and third > second

        _run(schedule_store_factory, go)

    def test_claims_compare_and_set_the_tick_and_are_fenced_by_the_token(
        self, schedule_store_factory: Factory
    ) -> None:
        async def go(a: ScheduleStore, b: ScheduleStore) -> None:
            old = await a.acquire("a", 1.0)
            assert old is not None
            assert await a.claim("e", None, 1_000, old, done=True)
            assert await a.states(["e", "other"]) == {"e": EntryState(1_000, True, None)}
            await asyncio.sleep(1.1)
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
            found = await a.states([long, "e"])
            assert found == {long: EntryState(6, False, None), "e": EntryState(3_000, True, 2_000)}

        _run(schedule_store_factory, go)

    def test_two_claims_of_one_tick_at_once_one_wins(self, schedule_store_factory: Factory) -> None:
        async def go(a: ScheduleStore, b: ScheduleStore) -> None:
            token = await a.acquire("a", 5)
            assert token is not None
            assert await a.claim("e", None, 10, token, done=True)
            # Both hold the current token here (as a leader and its own retry would): still one claim.
            results = await asyncio.gather(*(s.claim("e", 10, 20, token) for s in (a, b, a, b)))
            assert sorted(results) == [False, False, False, True]

        _run(schedule_store_factory, go)
