"""Result backends, found by URL scheme.

The built-in schemes map to classes imported only when used, so ``import celeriac`` pulls in no
database driver. Other packages add schemes with an entry point in the group ``celeriac.backends``
(name: the scheme, value: ``"package.module:Class"``). Celery's ``db+`` prefix and SQLAlchemy's
``+driver`` suffix are understood: ``db+postgresql+psycopg://`` is served by the ``postgresql``
backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from celeriac._plugins import Registry
from celeriac.backends.base import Backend, ResultMeta

__all__ = ["Backend", "ResultMeta", "backend_class", "create_backend", "known_schemes"]

ENTRY_POINT_GROUP = "celeriac.backends"

_SQL = "celeriac.sql.backend:SQLBackend"
_BUILTIN = {
    "memory": "celeriac.memory.backend:MemoryBackend",
    "disabled": "celeriac.backends.disabled:DisabledBackend",
    "sqlite": _SQL,
    "postgresql": _SQL,
    "postgres": _SQL,
    "mysql": _SQL,
    "mariadb": _SQL,
    **dict.fromkeys(("redis", "rediss", "redis+socket", "sentinel"), "celeriac.redis.backend:RedisBackend"),
    "rpc": "celeriac.amqp.rpc:RPCBackend",
}


_registry = Registry("result backend", ENTRY_POINT_GROUP, Backend, _BUILTIN, prefix="db+")  # type: ignore[type-abstract]
known_schemes = _registry.known_schemes


def backend_class(url: str) -> type[Backend]:
    """The backend class serving ``url``; ConfigurationError naming the known schemes if none does."""
    return _registry.find(url)


def create_backend(
    url: str,
    *,
    serializer: str = "json",
    accept: Sequence[str] = ("json",),
    expires: float | None = 86400.0,
    options: dict[str, Any] | None = None,
) -> Backend:
    """A new, unconnected backend for ``url``.

    Args:
        url: where results are kept, e.g. ``db+sqlite:///results.sqlite3``.
        serializer: the result serializer's name.
        accept: content types (or serializer names) the backend may read.
        expires: seconds a finished result is kept before ``cleanup`` may delete it; None keeps it.
        options: backend-specific settings.
    """
    cls = backend_class(url)
    return cls(url, serializer=serializer, accept=accept, expires=expires, options=options)
