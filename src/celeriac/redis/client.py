"""Redis clients from URLs, for the Redis broker and result backend.

URLs, as Celery writes them:

* ``redis://[:password@]host[:port][/db]`` and ``rediss://`` (TLS; options under ``ssl``, with redis-py's
  names: ``ssl_cert_reqs``, ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``);
* ``redis+socket:///path/to/redis.sock[?virtual_host=<db>]``, a Unix socket;
* ``sentinel://host:26379[;sentinel://host2:26379...]`` with the option ``master_name`` (and optionally
  ``sentinel_kwargs``, e.g. a password for the sentinels themselves); the client follows the master
  through failovers;
* ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS): a Redis Cluster, found from any node.

Every client keeps its sockets alive (TCP keepalive, a health check after a quiet spell) and retries a
command a few times, with jittered backoff, when its connection drops; longer outages are the caller's to
wait out.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

from celeriac.exceptions import ConfigurationError, MissingDependency

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["is_cluster", "lua_script", "redis_client"]

_SSL_KEYS = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``, ``rediss+cluster://``)."""
    return url.partition("://")[0].lower().endswith("+cluster")


def lua_script(name: str) -> str:
    """The text of the Lua script ``<name>.lua`` kept in this package."""
    return (
        importlib.resources.files(__package__ or "celeriac.redis").joinpath(f"{name}.lua").read_text("utf-8")
    )


def redis_client(url: str, options: Mapping[str, Any], *, what: str) -> Redis:
    """A client for ``url``; ``what`` names the user ("the Redis broker") in errors.

    A cluster client is returned typed as ``Redis``: it answers the same commands, and scripts whose keys
    share one hash tag run on it unchanged.
    """
    try:
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.exceptions import ConnectionError, TimeoutError
    except ImportError as exc:
        raise MissingDependency(what, "redis") from exc

    common: dict[str, Any] = {
        "decode_responses": False,
        "socket_keepalive": True,
        "health_check_interval": float(options.get("health_check_interval", 25.0)),
        "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), 3),
        "retry_on_error": [ConnectionError, TimeoutError],
    }
    for key in ("socket_timeout", "socket_connect_timeout", "password", "username", "client_name"):
        if options.get(key) is not None:
            common[key] = options[key]
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    tls = scheme.startswith("rediss")
    if tls:
        ssl = dict(options.get("ssl") or {})
        unknown = set(ssl) - set(_SSL_KEYS)
        if unknown:
            raise ConfigurationError(
                f"unknown TLS option(s) {sorted(unknown)} for {what}; known: {', '.join(_SSL_KEYS)}"
            )
        common.update(ssl)

    if scheme.endswith("+cluster"):
        from redis.asyncio.cluster import RedisCluster

        plain = ("rediss" if tls else "redis") + "://" + rest
        common.pop("health_check_interval")
        return cast("Redis", RedisCluster.from_url(plain, **common))
    if scheme == "sentinel":
        return _sentinel_master(url, options, common, what)
    if scheme == "redis+socket":
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        db = int(query.pop("virtual_host", query.pop("db", "0")) or 0)
        return Redis(unix_socket_path=parts.path, db=db, **common)
    if scheme not in ("redis", "rediss"):
        raise ConfigurationError(f"{what} cannot use URL scheme {scheme!r}")
    return Redis.from_url(url, **common)


def _sentinel_master(url: str, options: Mapping[str, Any], common: dict[str, Any], what: str) -> Redis:
    from redis.asyncio import Redis
    from redis.asyncio.sentinel import Sentinel

    master = options.get("master_name")
    if not master:
        raise ConfigurationError(
            f"{what} on Sentinel needs the transport option 'master_name' (the name the sentinels "
            "monitor), e.g. broker_transport_options={'master_name': 'mymaster'}"
        )
    hosts: list[tuple[str, int]] = []
    db, password = 0, None
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if parts.scheme.lower() != "sentinel" or not parts.hostname:
            raise ConfigurationError(f"{what}: {part!r} is not a sentinel://host:port address")
        hosts.append((parts.hostname, parts.port or 26379))
        if parts.path.strip("/"):
            db = int(parts.path.strip("/"))
        password = password or parts.password
    if password and "password" not in common:
        common["password"] = password
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        hosts, sentinel_kwargs=dict(options.get("sentinel_kwargs") or {}), **common
    )

    class SentinelMaster(Redis):
        """The master's client, which also closes its connections to the sentinels."""

        async def aclose(self, close_connection_pool: bool | None = None) -> None:
            await super().aclose(close_connection_pool)
            for client in sentinel.sentinels:
                await client.aclose()

    return cast(Redis, sentinel.master_for(str(master), redis_class=SentinelMaster, db=db))
