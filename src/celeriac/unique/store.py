"""The key store: where unique tasks hold their keys and keyed tasks record that they finished.

One small contract, ``KeyStore``, with one implementation per technology in that technology's package
(``celeriac.redis.unique_store``, ``celeriac.sql.unique_store``, ``celeriac.memory.unique_store``),
found by URL scheme like the beat's schedule stores. ``key_store_for(app)`` picks the broker's store
when the broker can hold one (Redis, SQL, memory), else the result backend's (a RabbitMQ broker with a
Redis or SQL backend).

A key has two records, each with its own lifetime: *held* (by the task id that took it, until the
send's window ends or it is released) and *finished* (the task id whose run with that key succeeded).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from celeriac._plugins import Registry
from celeriac._store_place import builtin_stores, shared_place

if TYPE_CHECKING:
    from celeriac.app import Celeriac

__all__ = ["KeyStore", "create_key_store", "key_store_for"]

ENTRY_POINT_GROUP = "celeriac.key_stores"


class KeyStore(ABC):
    """Unique keys shared by every sender and worker of one app (``scope``). Every call is atomic:
    of any number of concurrent ``hold`` calls on a free key, exactly one takes it."""

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> None:
        self.url = url
        self.options = dict(options or {})
        self.scope = scope

    @abstractmethod
    async def hold(self, key: str, task_id: str, ttl: float) -> str:
        """Take ``key`` for ``task_id`` for ``ttl`` seconds unless a task holds it already; the id of
        the task holding it after this call (``task_id`` when this call took it)."""

    @abstractmethod
    async def release(self, key: str, task_id: str) -> None:
        """Let ``key`` go before its time, if ``task_id`` still holds it."""

    @abstractmethod
    async def finish(self, key: str, task_id: str, ttl: float) -> None:
        """Record for ``ttl`` seconds that the run of ``task_id`` with ``key`` succeeded."""

    @abstractmethod
    async def finished(self, key: str) -> str | None:
        """The id of the task whose run with ``key`` was last recorded as succeeded, if still recorded."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Close the store's connections."""


_BUILTIN = builtin_stores("unique_store", "MemoryKeyStore", "SQLKeyStore", "RedisKeyStore")

_registry = Registry("key store", ENTRY_POINT_GROUP, KeyStore, _BUILTIN, prefix="sqla+")  # type: ignore[type-abstract]


def create_key_store(url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> KeyStore:
    """A new, unconnected key store for ``url`` (a broker's or a result backend's URL)."""
    return _registry.find(url.removeprefix("db+"))(url, options, scope=scope)


def key_store_for(app: Celeriac) -> KeyStore:
    """The key store the app's senders and workers share: the broker's, else the result backend's.

    Raises ConfigurationError when neither can hold one (a RabbitMQ broker with rpc:// or no backend).
    """
    url, options, scope = shared_place(app, _registry, "unique tasks keep their keys")
    return create_key_store(url, options, scope=scope)
