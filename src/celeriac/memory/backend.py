"""An in-process result backend for tests and eager use.

Every ``MemoryBackend`` with the same URL in one process shares one store (``memory://`` and
``memory://name`` are different stores), across threads and event loops. Records are kept encoded
with the result serializer, in Celery's JSON layout (what the Redis backend stores), so a result
that could not be stored on a real backend fails here too.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from celeriac._wakeup import Wakeup
from celeriac.backends.base import Backend, ChordClaim, ChordPart, ResultMeta
from celeriac.exceptions import TimeoutError
from celeriac.memory._stores import Stores

__all__ = ["MemoryBackend", "reset"]


@dataclass
class _Chord:
    # (task id, index) -> part, in the order they arrived
    parts: dict[tuple[str, int | None], ChordPart] = field(default_factory=dict)
    token: str | None = None
    lease_until: float = 0.0
    grown: int = 0  # parts add_to_chord counted beyond the header's size
    done: bool = False
    touched: datetime = field(default_factory=lambda: datetime.now(UTC))


class _Store:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wakeup = Wakeup()
        # task id -> (date_done, content type, encoded record); group id -> (saved, type, encoded tuple)
        self.records: dict[str, tuple[datetime | None, str, bytes]] = {}
        self.groups: dict[str, tuple[datetime, str, bytes]] = {}
        self.chords: dict[str, _Chord] = {}


_stores: Stores[_Store] = Stores(_Store)


def reset(url: str | None = None) -> None:
    """Forget every record of the memory store at ``url`` (of every store when None)."""
    _stores.reset(url)


class MemoryBackend(Backend):
    """A result backend in this process's memory; ``wait`` wakes as soon as a record is stored."""

    schemes = ("memory",)

    def setup(self) -> None:
        self._store = _stores.get(self.url)

    async def store(self, metas: Sequence[ResultMeta]) -> None:
        encoded = [(m.task_id, m.date_done, *self.encode(m.to_dict())) for m in metas]
        store = self._store
        with store.lock:
            for task_id, date_done, content_type, data in encoded:
                store.records[task_id] = (date_done, content_type, data)
        store.wakeup.notify()

    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        with self._store.lock:
            found = {t: self._store.records[t] for t in task_ids if t in self._store.records}
        return {t: ResultMeta.from_dict(self.decode(data, ctype)) for t, (_, ctype, data) in found.items()}

    async def forget(self, task_id: str) -> None:
        with self._store.lock:
            self._store.records.pop(task_id, None)

    async def save_group(self, group_id: str, result: Any) -> None:
        content_type, data = self.encode(result)
        with self._store.lock:
            self._store.groups[group_id] = (datetime.now(UTC), content_type, data)

    async def restore_group(self, group_id: str) -> Any | None:
        with self._store.lock:
            saved = self._store.groups.get(group_id)
        return None if saved is None else self.decode(saved[2], saved[1])

    async def forget_group(self, group_id: str) -> None:
        with self._store.lock:
            self._store.groups.pop(group_id, None)

    async def chord_begin(self, group_id: str, size: int) -> None:
        with self._store.lock:
            chord = self._store.chords.get(group_id)
            if chord is not None and chord.done:
                del self._store.chords[group_id]

    async def chord_part(
        self, group_id: str, part: ChordPart, size: int, *, lease: float = 60.0
    ) -> ChordClaim | None:
        # Encoded and decoded like a stored record, so a result that a real backend could not keep
        # fails here too.
        part = ChordPart(part.task_id, part.index, part.status, self.decode(self.encode(part.result)[1]))
        with self._store.lock:
            chord = self._store.chords.setdefault(group_id, _Chord())
            chord.touched = datetime.now(UTC)
            if chord.done:
                return None
            chord.parts.setdefault((part.task_id, part.index), part)
            now = time.monotonic()
            if len(chord.parts) < size + chord.grown or (chord.token is not None and now < chord.lease_until):
                return None
            token = chord.token = uuid.uuid4().hex
            chord.lease_until = now + lease
            arrived = list(chord.parts.values())
        order = sorted(
            range(len(arrived)), key=lambda n: (arrived[n].index is None, arrived[n].index or 0, n)
        )
        return ChordClaim(group_id, token, tuple(arrived[n] for n in order))

    async def chord_grow(self, group_id: str, by: int = 1) -> None:
        with self._store.lock:
            self._store.chords.setdefault(group_id, _Chord()).grown += by

    async def chord_done(self, claim: ChordClaim) -> None:
        with self._store.lock:
            chord = self._store.chords.get(claim.group_id)
            if chord is not None and chord.token == claim.token:
                chord.parts.clear()
                chord.done = True
                chord.touched = datetime.now(UTC)

    async def wait(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> ResultMeta:
        """Wait until ``task_id`` is ready, woken by the store itself; ``interval`` is not needed here."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            with self._store.wakeup.armed() as stored:
                meta = await self.get(task_id)
                if meta.ready:
                    return meta
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"task {task_id} not ready after {timeout}s (state {meta.status})")
                await asyncio.wait((stored,), timeout=left)

    async def cleanup(self, now: datetime | None = None) -> int:
        """Delete records whose ``date_done`` is older than ``expires``; return how many.

        Saved groups and chord states untouched for that long go too.
        """
        if self.expires is None:
            return 0
        cutoff = _aware(now or datetime.now(UTC)) - timedelta(seconds=self.expires)
        with self._store.lock:
            records = self._store.records
            old = [t for t, (done, _, _) in records.items() if done is not None and _aware(done) < cutoff]
            for task_id in old:
                del records[task_id]
            for group_id in [g for g, (saved, _, _) in self._store.groups.items() if saved < cutoff]:
                del self._store.groups[group_id]
            for group_id in [g for g, chord in self._store.chords.items() if chord.touched < cutoff]:
                del self._store.chords[group_id]
        return len(old)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
