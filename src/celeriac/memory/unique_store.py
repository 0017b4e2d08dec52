"""The in-process key store (``memory://``), for tests: every store with the same URL and scope in one
process shares the keys. The clock is ``time.monotonic``."""

from __future__ import annotations

import threading
import time

from celeriac.memory._stores import Stores
from celeriac.unique.store import KeyStore

__all__ = ["MemoryKeyStore", "reset"]


class _Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: (scope, kind, key) -> (task id, expiry on the monotonic clock); kind "held" or "finished"
        self.records: dict[tuple[str, str, str], tuple[str, float]] = {}


_stores: Stores[_Shared] = Stores(_Shared)


def reset(url: str | None = None) -> None:
    """Forget the keys kept at ``url`` (every URL when None)."""
    _stores.reset(url)


class MemoryKeyStore(KeyStore):
    """Keys in this process's memory."""

    def _get(self, shared: _Shared, kind: str, key: str) -> str | None:
        found = shared.records.get((self.scope, kind, key))
        if found is None:
            return None
        if found[1] <= time.monotonic():
            del shared.records[(self.scope, kind, key)]
            return None
        return found[0]

    async def hold(self, key: str, task_id: str, ttl: float) -> str:
        shared = _stores.get(self.url)
        with shared.lock:
            holder = self._get(shared, "held", key)
            if holder is None:
                shared.records[(self.scope, "held", key)] = (task_id, time.monotonic() + ttl)
                return task_id
            return holder

    async def release(self, key: str, task_id: str) -> None:
        shared = _stores.get(self.url)
        with shared.lock:
            if self._get(shared, "held", key) == task_id:
                del shared.records[(self.scope, "held", key)]

    async def finish(self, key: str, task_id: str, ttl: float) -> None:
        shared = _stores.get(self.url)
        with shared.lock:
            shared.records[(self.scope, "finished", key)] = (task_id, time.monotonic() + ttl)

    async def finished(self, key: str) -> str | None:
        shared = _stores.get(self.url)
        with shared.lock:
            return self._get(shared, "finished", key)
