"""The in-process schedule store (``memory://``), for tests: every store with the same URL and scope in
one process shares the lease and the entries' state."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from celeriac.beat.store import EntryState, ScheduleStore
from celeriac.memory._stores import Stores

__all__ = ["MemoryScheduleStore", "reset"]


@dataclass
class _Scope:
    holder: str | None = None
    token: int = 0
    expires: float = 0.0
    entries: dict[str, EntryState] = field(default_factory=dict)


class _Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.scopes: dict[str, _Scope] = {}


_stores: Stores[_Shared] = Stores(_Shared)


def reset(url: str | None = None) -> None:
    """Forget the schedule state kept at ``url`` (every URL when None)."""
    _stores.reset(url)


class MemoryScheduleStore(ScheduleStore):
    """Lease and state in this process's memory; the clock is ``time.monotonic``."""

    def _scope(self) -> tuple[threading.Lock, _Scope]:
        shared = _stores.get(self.url)
        return shared.lock, shared.scopes.setdefault(self.scope, _Scope())

    async def acquire(self, holder: str, ttl: float) -> int | None:
        lock, scope = self._scope()
        now = time.monotonic()
        with lock:
            if scope.holder != holder and scope.holder is not None and scope.expires > now:
                return None
            if scope.holder != holder:
                scope.holder, scope.token = holder, scope.token + 1
            scope.expires = now + ttl
            return scope.token

    async def release(self, holder: str, token: int) -> None:
        lock, scope = self._scope()
        with lock:
            if scope.holder == holder and scope.token == token:
                scope.holder, scope.expires = None, 0.0

    async def states(self, names: Sequence[str]) -> dict[str, EntryState]:
        lock, scope = self._scope()
        with lock:
            return {name: scope.entries[name] for name in names if name in scope.entries}

    async def claim(self, name: str, expected: int | None, tick: int, token: int, done: bool = False) -> bool:
        lock, scope = self._scope()
        with lock:
            state = scope.entries.get(name)
            if scope.token != token or (state.tick if state else None) != expected:
                return False
            scope.entries[name] = EntryState(tick, done, state.sent if state else None)
            return True

    async def finish(self, name: str, tick: int, sent: bool, token: int) -> bool:
        lock, scope = self._scope()
        with lock:
            state = scope.entries.get(name)
            if scope.token != token or state is None or state.tick != tick:
                return False
            scope.entries[name] = EntryState(tick, True, tick if sent else state.sent)
            return True
