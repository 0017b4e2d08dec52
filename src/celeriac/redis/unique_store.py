"""Unique tasks' keys on Redis: a held key is a string set with ``SET NX PX`` (in a script that also
answers who holds it, in the same step), a finished record a string with ``PX``.

Keys (after the ``global_keyprefix`` option): ``celeriac.unique.<scope>.held.<key>`` and
``celeriac.unique.<scope>.finished.<key>``. Each call touches one key, so on a Cluster they spread over
the slots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac.redis.client import lua_script, redis_client
from celeriac.unique.store import KeyStore

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisKeyStore"]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisKeyStore(KeyStore):
    """Keys on the Redis of the broker (or of the result backend)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> None:
        super().__init__(url, options, scope=scope)
        self._base = f"{self.options.get('global_keyprefix') or ''}celeriac.unique.{scope}."
        self._client: Redis | None = None
        self._hold: AsyncScript | None = None

    def _script(self) -> tuple[Redis, AsyncScript]:
        if self._client is None or self._hold is None:
            self._client = redis_client(self.url, self.options, what="the unique tasks' key store")
            self._hold = self._client.register_script(lua_script("unique_hold"))
        return self._client, self._hold

    async def hold(self, key: str, task_id: str, ttl: float) -> str:
        _, script = self._script()
        return _text(await script([self._base + "held." + key], [task_id, max(1, int(ttl * 1000))]))

    async def release(self, key: str, task_id: str) -> None:
        _, script = self._script()
        await script([self._base + "held." + key], [task_id, "release"])

    async def finish(self, key: str, task_id: str, ttl: float) -> None:
        client, _ = self._script()
        await client.set(self._base + "finished." + key, task_id, px=max(1, int(ttl * 1000)))

    async def finished(self, key: str) -> str | None:
        client, _ = self._script()
        value = await client.get(self._base + "finished." + key)
        return None if value is None else _text(value)

    async def close(self) -> None:
        client, self._client, self._hold = self._client, None, None
        if client is not None:
            await client.aclose()
