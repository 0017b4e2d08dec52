"""Brokers, found by URL scheme.

The built-in schemes map to classes imported only when used, so ``import celeriac`` pulls in no
database driver. Other packages add schemes with an entry point in the group ``celeriac.brokers``
(name: the scheme, value: ``"package.module:Class"``). kombu's ``sqla+`` prefix and SQLAlchemy's
``+driver`` suffix are understood: ``sqla+postgresql+psycopg://`` is served by the ``postgresql``
broker.
"""

from __future__ import annotations

from importlib import import_module, metadata
from typing import Any

from celeriac.brokers.base import Broker, DeadLetter, Delivery
from celeriac.exceptions import ConfigurationError

__all__ = ["Broker", "DeadLetter", "Delivery", "broker_class", "create_broker", "known_schemes"]

ENTRY_POINT_GROUP = "celeriac.brokers"

_SQL = "celeriac.brokers.sql:SQLBroker"
_BUILTIN = {
    "memory": "celeriac.brokers.memory:MemoryBroker",
    "sqlite": _SQL,
    "postgresql": _SQL,
    "postgres": _SQL,
    "mysql": _SQL,
    "mariadb": _SQL,
}


def known_schemes() -> list[str]:
    """Every scheme a broker URL may use: the built-in ones and those of installed plug-ins."""
    return sorted({*_BUILTIN, *(ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP))})


def broker_class(url: str) -> type[Broker]:
    """The broker class serving ``url``.

    Raises:
        ConfigurationError: no broker serves the URL's scheme (the message lists those that do), or
            a plug-in's entry point does not name a Broker class.
    """
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    for name in _candidates(scheme):
        if name in _BUILTIN:
            return _load(_BUILTIN[name])
        for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP, name=name):
            return _load(entry_point.value)
    raise ConfigurationError(f"no broker for URL {url!r}; known schemes: {', '.join(known_schemes())}")


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    """A new, unconnected broker for ``url``, with transport ``options``."""
    return broker_class(url)(url, options=options)


def _candidates(scheme: str) -> list[str]:
    # The exact scheme first, so a plug-in may claim "redis+socket"; then without kombu's "sqla+"
    # prefix and SQLAlchemy's "+driver" suffix.
    base = scheme.removeprefix("sqla+")
    return list(dict.fromkeys([scheme, base, base.partition("+")[0]])) if scheme else []


def _load(target: str) -> type[Broker]:
    module, _, name = target.partition(":")
    cls = getattr(import_module(module), name, None)
    if not (isinstance(cls, type) and issubclass(cls, Broker)):
        raise ConfigurationError(f"{target!r} is not a Broker class")
    return cls
