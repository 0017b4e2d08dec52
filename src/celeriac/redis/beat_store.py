"""The beat's schedule store on Redis: the leader lease is a key set with ``SET NX PX`` and holding a
fencing token from a counter; each entry's state is a field of one hash. Both scripts check the token
and change state in one step, so a leader whose lease ran out can no longer claim a tick.

Keys (after the ``global_keyprefix`` option): ``celeriac.beat.{<scope>}.lease``, ``.token`` and
``.entries``; the scope (the app's name) is their hash tag, so on a Cluster they share one slot.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.beat.store import EntryState, ScheduleStore
from celeriac.redis.client import lua_script, redis_client

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

__all__ = ["RedisScheduleStore"]


class RedisScheduleStore(ScheduleStore):
    """Lease and entry state on the Redis of the broker (or of the result backend)."""

    def __init__(self, url: str, options: dict[str, Any] | None = None, *, scope: str = "celery") -> None:
        super().__init__(url, options, scope=scope)
        base = f"{self.options.get('global_keyprefix') or ''}celeriac.beat.{{{scope}}}"
        self._lease, self._token, self._entries = base + ".lease", base + ".token", base + ".entries"
        self._client: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    def _script(self, name: str) -> AsyncScript:
        script = self._scripts.get(name)
        if script is None:
            if self._client is None:
                self._client = redis_client(self.url, self.options, what="the beat's schedule store")
            script = self._scripts[name] = self._client.register_script(lua_script(name))
        return script

    async def acquire(self, holder: str, ttl: float) -> int | None:
        keys = [self._lease, self._token]
        token = await self._script("beat_lease")(keys, [holder, max(1, int(ttl * 1000))])
        return None if token is None else int(token)

    async def release(self, holder: str, token: int) -> None:
        await self._script("beat_lease")([self._lease, self._token], [holder, "release", token])

    async def states(self, names: Sequence[str]) -> dict[str, EntryState]:
        if not names:
            return {}
        self._script("beat_claim")  # makes the client
        assert self._client is not None
        values = await self._client.hmget(self._entries, list(names))
        found: dict[str, EntryState] = {}
        for name, value in zip(names, values, strict=True):
            if value:
                text = value.decode() if isinstance(value, bytes) else str(value)
                tick, done, sent = text.split("|")
                found[name] = EntryState(int(tick), done == "1", int(sent) if sent else None)
        return found

    async def claim(self, name: str, expected: int | None, tick: int, token: int, done: bool = False) -> bool:
        args: list[str | int] = [name, token, "claim", "" if expected is None else expected, tick, int(done)]
        return bool(await self._script("beat_claim")([self._lease, self._entries], args))

    async def finish(self, name: str, tick: int, sent: bool, token: int) -> bool:
        args: list[str | int] = [name, token, "finish-sent" if sent else "finish", tick]
        return bool(await self._script("beat_claim")([self._lease, self._entries], args))

    async def close(self) -> None:
        client, self._client = self._client, None
        self._scripts.clear()
        if client is not None:
            await client.aclose()
