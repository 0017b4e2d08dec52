"""Brokers, found by URL scheme.

The built-in schemes map to classes imported only when used, so ``import celeriac`` pulls in no
database driver. Other packages add schemes with an entry point in the group ``celeriac.brokers``
(name: the scheme, value: ``"package.module:Class"``). kombu's ``sqla+`` prefix and SQLAlchemy's
``+driver`` suffix are understood: ``sqla+postgresql+psycopg://`` is served by the ``postgresql``
broker.
"""

from __future__ import annotations

from typing import Any

from celeriac._plugins import Registry
from celeriac.brokers.base import Broker, DeadLetter, Delivery

__all__ = ["Broker", "DeadLetter", "Delivery", "broker_class", "create_broker", "known_schemes"]

ENTRY_POINT_GROUP = "celeriac.brokers"

_SQL = "celeriac.sql.broker:SQLBroker"
_BUILTIN = {
    "memory": "celeriac.memory.broker:MemoryBroker",
    "sqs": "celeriac.sqs.broker:SQSBroker",
    "sqlite": _SQL,
    "postgresql": _SQL,
    "postgres": _SQL,
    "mysql": _SQL,
    "mariadb": _SQL,
    **dict.fromkeys(
        ("redis", "rediss", "redis+socket", "redis+cluster", "rediss+cluster", "sentinel"),
        "celeriac.redis.broker:RedisBroker",
    ),
    **dict.fromkeys(("amqp", "amqps", "pyamqp", "pyamqps"), "celeriac.amqp.broker:AMQPBroker"),
}


_registry = Registry("broker", ENTRY_POINT_GROUP, Broker, _BUILTIN, prefix="sqla+")  # type: ignore[type-abstract]
known_schemes = _registry.known_schemes


def broker_class(url: str) -> type[Broker]:
    """The broker class serving ``url``; ConfigurationError naming the known schemes if none does."""
    return _registry.find(url)


def create_broker(url: str, options: dict[str, Any] | None = None) -> Broker:
    """A new, unconnected broker for ``url``, with transport ``options``."""
    return broker_class(url)(url, options=options)
