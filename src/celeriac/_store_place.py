"""Where an app keeps state its processes share (the beat's schedule, unique tasks' keys): on the
broker when the broker can hold it, else on the result backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac._plugins import Registry
from celeriac.exceptions import ConfigurationError

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def builtin_stores(module: str, memory: str, sql: str, redis: str) -> dict[str, str]:
    """The built-in classes of a kind of shared store, by URL scheme: ``celeriac.<tech>.<module>:<class>``."""
    return {
        "memory": f"celeriac.memory.{module}:{memory}",
        **dict.fromkeys(
            ("sqlite", "postgresql", "postgres", "mysql", "mariadb"), f"celeriac.sql.{module}:{sql}"
        ),
        **dict.fromkeys(
            ("redis", "rediss", "redis+socket", "redis+cluster", "rediss+cluster", "sentinel"),
            f"celeriac.redis.{module}:{redis}",
        ),
    }


def shared_place(app: Celeriac, stores: Registry[Any], what: str) -> tuple[str, dict[str, Any], str]:
    """The URL, its transport options and the app's scope (its name) for ``what``, kept in a store of
    ``stores`` (one class per URL scheme).

    Raises ConfigurationError naming both URLs when no store serves either (a RabbitMQ broker with
    rpc:// or no result backend).
    """
    conf = app.conf
    scope = app.main if app.main and app.main != "__main__" else "celery"
    if _serves(stores, app.broker_url):
        return app.broker_url, dict(conf.broker_transport_options), scope
    if _serves(stores, app.backend_url):
        return app.backend_url, dict(conf.result_backend_transport_options), scope
    raise ConfigurationError(
        f"{what} on the broker or the result backend, and neither "
        f"{app.broker_url.partition('://')[0]}:// (broker) nor {app.backend_url.partition('://')[0]}:// "
        "(result_backend) can hold it: set result_backend to a redis:// or database URL"
    )


def _serves(stores: Registry[Any], url: str) -> bool:
    try:
        stores.find(url.removeprefix("db+"))
    except ConfigurationError:
        return False
    return True
