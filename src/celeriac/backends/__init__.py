"""Result backends, found by URL scheme.

The built-in schemes map to classes imported only when used, so ``import celeriac`` pulls in no
database driver. Other packages add schemes with an entry point in the group ``celeriac.backends``
(name: the scheme, value: ``"package.module:Class"``). Celery's ``db+`` prefix and SQLAlchemy's
``+driver`` suffix are understood: ``db+postgresql+psycopg://`` is served by the ``postgresql``
backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import import_module, metadata
from typing import Any

from celeriac.backends.base import Backend, ResultMeta
from celeriac.exceptions import ConfigurationError

__all__ = ["Backend", "ResultMeta", "backend_class", "create_backend", "known_schemes"]

ENTRY_POINT_GROUP = "celeriac.backends"

_SQL = "celeriac.backends.sql:SQLBackend"
_BUILTIN = {
    "memory": "celeriac.backends.memory:MemoryBackend",
    "disabled": "celeriac.backends.disabled:DisabledBackend",
    "sqlite": _SQL,
    "postgresql": _SQL,
    "postgres": _SQL,
    "mysql": _SQL,
    "mariadb": _SQL,
}


def known_schemes() -> list[str]:
    """Every scheme a backend URL may use: the built-in ones and those of installed plug-ins."""
    return sorted({*_BUILTIN, *(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))})


def backend_class(url: str) -> type[Backend]:
    """The backend class serving ``url``.

    Raises:
        ConfigurationError: no backend serves the URL's scheme (the message lists those that do), or
            a plug-in's entry point does not name a Backend class.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    for name in _candidates(scheme):
        if name in _BUILTIN:
            return _load(_BUILTIN[name])
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
            return _load(entry_point.value)
    raise ConfigurationError(
        f"no result backend for URL {url!r}; known schemes: {', '.join(known_schemes())}"
    )


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


def _candidates(scheme: str) -> list[str]:
    # The exact scheme first, so a plug-in may claim "redis+socket"; then without Celery's "db+"
    # prefix and SQLAlchemy's "+driver" suffix.
    base = scheme.removeprefix("db+")
    return list(dict.fromkeys([scheme, base, base.partition("+")[0]])) if scheme else []


def _load(target: str) -> type[Backend]:
    module, _, name = target.partition(":")
    cls = getattr(import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise ConfigurationError(f"{target!r} is not a Backend class")
    return cls
