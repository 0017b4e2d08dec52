"""The key store contract (``celeriac.unique.store.KeyStore``): unique tasks' keys taken by one task at
a time for a window, let go early by their holder only, and successful keyed runs recorded.

A plug-in supplies the fixture ``key_store_factory``: a function that makes a new, unconnected store
each time it is called, every one on the same place and scope (as the senders and workers of one app
are), and cleans that scope up after the test. Each test runs on one event loop and closes its stores.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from celeriac.unique.store import KeyStore

__all__ = ["KeyStoreContract"]

Factory = Callable[[], KeyStore]


def _run(factory: Factory, body: Callable[[list[KeyStore]], Awaitable[None]], count: int = 2) -> None:
    async def go() -> None:
        stores = [factory() for _ in range(count)]
        try:
            # Each store connects first (a cluster client learns its slots), so that the short windows
            # below measure the store, not how long connecting takes.
            for store in stores:
                await store.finished("contract-warm-up")
            await body(stores)
        finally:
            for store in stores:
                await store.close()

    asyncio.run(go())


class KeyStoreContract:
    """What every key store promises; needs the fixture ``key_store_factory``."""

    def test_the_first_holder_keeps_the_key_for_its_window(self, key_store_factory: Factory) -> None:
        async def go(stores: list[KeyStore]) -> None:
            a, b = stores
            assert await a.hold("k", "id-1", 1.0) == "id-1"
            assert await b.hold("k", "id-2", 5) == "id-1"
            assert await a.hold("k", "id-1", 5) == "id-1"  # asking again changes nothing
            assert await b.hold("other", "id-3", 5) == "id-3"  # keys are independent
            await asyncio.sleep(1.1)  # the first window ends
            assert await b.hold("k", "id-2", 5) == "id-2"
            assert await a.hold("k", "id-1", 5) == "id-2"

        _run(key_store_factory, go)

    def test_only_the_holder_lets_the_key_go(self, key_store_factory: Factory) -> None:
        async def go(stores: list[KeyStore]) -> None:
            a, b = stores
            assert await a.hold("k", "id-1", 30) == "id-1"
            await b.release("k", "id-2")  # not the holder: nothing happens
            assert await b.hold("k", "id-2", 30) == "id-1"
            await a.release("k", "id-1")
            assert await b.hold("k", "id-2", 30) == "id-2"
            await a.release("never-held", "id-1")

        _run(key_store_factory, go)

    def test_of_concurrent_holders_exactly_one_takes_a_free_key(self, key_store_factory: Factory) -> None:
        async def go(stores: list[KeyStore]) -> None:
            ids = [f"id-{n}" for n in range(len(stores))]
            holders = await asyncio.gather(
                *(store.hold("k", task_id, 30) for store, task_id in zip(stores, ids, strict=True))
            )
            assert len(set(holders)) == 1 and holders[0] in ids

        _run(key_store_factory, go, count=8)

    def test_finished_runs_are_recorded_for_their_time(self, key_store_factory: Factory) -> None:
        async def go(stores: list[KeyStore]) -> None:
            a, b = stores
            assert await b.finished("k") is None
            await a.finish("k", "id-1", 1.0)
            assert await b.finished("k") == "id-1"
            assert await b.hold("k", "id-2", 30) == "id-2"  # held and finished records are apart
            await a.finish("k", "id-2", 30)  # a later successful run with the same key
            assert await b.finished("k") == "id-2"
            await a.finish("short", "id-3", 0.5)
            await asyncio.sleep(0.6)
            assert await b.finished("short") is None

        _run(key_store_factory, go)

    def test_long_keys_are_kept_apart(self, key_store_factory: Factory) -> None:
        async def go(stores: list[KeyStore]) -> None:
            a, b = stores
            stem = "proj.tasks.report:key:" + "x" * 400
            first, second = stem + "1", stem + "2"
            assert await a.hold(first, "id-1", 30) == "id-1"
            assert await b.hold(second, "id-2", 30) == "id-2"
            assert await b.hold(first, "id-3", 30) == "id-1"
            await a.finish(first, f"id-{uuid.uuid4().hex}", 30)
            assert await b.finished(second) is None

        _run(key_store_factory, go)
