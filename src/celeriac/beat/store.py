"""The schedule store: where beats keep each entry's last tick and take turns as leader.

One small contract, ``ScheduleStore``, with one implementation per technology in that technology's
package (``celeriac.redis.beat_store``, ``celeriac.sql.beat_store``, ``celeriac.memory.beat_store``),
found by URL scheme like brokers and backends. ``store_for(app)`` picks the broker's store when the
broker can hold one (Redis, SQL, memory), else the result backend's (a RabbitMQ broker with a Redis or
SQL backend).

Ticks are whole microseconds since the epoch (UTC), so every store compares them exactly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac._plugins import Registry
from celeriac._store_place import builtin_stores, shared_place

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["EntryState", "ScheduleStore", "create_store", "store_for"]

ENTRY_POINT_GROUP = "celeriac.schedule_stores"


@dataclass(frozen=True, slots=True)
class EntryState:
    """What the store knows of one entry.

    ``tick`` is the last tick claimed (microseconds since the epoch); ``done`` whether that tick was
    dealt with (published, or skipped on purpose) after its claim; ``sent`` the last tick actually
    published (None: none yet). A claimed tick that is not done was taken by a leader that may have
    died before publishing it: the next leader publishes it again, with the same task id.
    """

    tick: int
    done: bool
    sent: int | None


class ScheduleStore(ABC):
    """Leader lease and per-entry tick state shared by every beat of one app (``scope``).

    Every write is fenced: it happens only while the writer's ``token`` (from ``acquire``) is still the
    lease's current one, so a leader that lost its lease (paused, partitioned) can no longer claim.
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> None:
        self.url = url
        self.options = dict(options or {})
        self.scope = scope

    @abstractmethod
    async def acquire(self, holder: str, ttl: float) -> int | None:
        """Take or renew the lease for ``ttl`` seconds; the fencing token while ``holder`` holds it,
        None when another holder does. A new holder gets a token greater than every earlier one."""

    @abstractmethod
    async def release(self, holder: str, token: int) -> None:
        """Give the lease up at once (a clean stop), if ``holder`` still holds it with ``token``."""

    @abstractmethod
    async def states(self, names: Sequence[str]) -> dict[str, EntryState]:
        """The state of each named entry that has one."""

    @abstractmethod
    async def claim(self, name: str, expected: int | None, tick: int, token: int, done: bool = False) -> bool:
        """Set the entry's tick to ``tick`` if it is still ``expected`` (None: the entry has no state yet)
        and ``token`` is still the lease's; True if this call did it. The tick is not done, unless
        ``done`` (an entry's first state: the instant its ticks count from, with nothing to send)."""

    @abstractmethod
    async def finish(self, name: str, tick: int, sent: bool, token: int) -> bool:
        """Mark the claimed ``tick`` done (and, if ``sent``, the last one published) if it is still the
        entry's tick and ``token`` the lease's; True if this call did it."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close the store's connections."""


_BUILTIN = builtin_stores("beat_store", "MemoryScheduleStore", "SQLScheduleStore", "RedisScheduleStore")

_registry = Registry("schedule store", ENTRY_POINT_GROUP, ScheduleStore, _BUILTIN, prefix="sqla+")  # type: ignore[type-abstract]


def create_store(url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> ScheduleStore:
    """A new, unconnected store for ``url`` (a broker's or a result backend's URL)."""
    return _registry.find(url.removeprefix("db+"))(url, options, scope=scope)


def store_for(app: Celeriac) -> ScheduleStore:
    """The store the app's beats share: the broker's, else the result backend's.

    Raises ConfigurationError when neither can hold one (a RabbitMQ broker with rpc:// or no backend).
    """
    url, options, scope = shared_place(app, _registry, "beat keeps its schedule state and leader lease")
    return create_store(url, options, scope=scope)
