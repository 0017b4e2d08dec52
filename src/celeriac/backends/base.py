"""The Backend contract: where task results and states are kept, in Celery's record layout."""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar

from celeriac import states
from celeriac.exceptions import TimeoutError as ResultTimeout
from celeriac.protocol import serializers

#: Fields that ``result_extended`` adds to a record, in Celery's names.
EXTENDED_FIELDS = ("name", "args", "kwargs", "worker", "retries", "queue")


@dataclass(slots=True)
class ResultMeta:
    """One task's state record.

    ``result`` is JSON-able: the return value on SUCCESS, and for exception states the exception as
    ``{"exc_type", "exc_message", "exc_module"}`` (Celery's layout). ``children`` holds Celery's result
    tuples ``[[id, None], None]`` of tasks this task sent.
    """

    task_id: str
    status: str = states.PENDING
    result: Any = None
    traceback: str | None = None
    date_done: datetime | None = None
    children: list[Any] = field(default_factory=list)
    parent_id: str | None = None
    group_id: str | None = None
    extended: dict[str, Any] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.status in states.READY_STATES

    def to_dict(self) -> dict[str, Any]:
        """Celery's JSON layout of a result record (what the Redis backend stores)."""
        data: dict[str, Any] = {
            "status": self.status,
            "result": self.result,
            "traceback": self.traceback,
            "children": self.children,
            "date_done": self.date_done.isoformat() if self.date_done else None,
            "task_id": self.task_id,
        }
        if self.parent_id:
            data["parent_id"] = self.parent_id
        if self.group_id:
            data["group_id"] = self.group_id
        data.update(self.extended)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultMeta:
        date_done = data.get("date_done")
        if isinstance(date_done, str):
            parsed = datetime.fromisoformat(date_done)
            date_done = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return cls(
            task_id=str(data.get("task_id", "")),
            status=str(data.get("status", states.PENDING)),
            result=data.get("result"),
            traceback=data.get("traceback"),
            date_done=date_done if isinstance(date_done, datetime) else None,
            children=list(data.get("children") or []),
            parent_id=data.get("parent_id"),
            group_id=data.get("group_id"),
            extended={k: data[k] for k in EXTENDED_FIELDS if k in data},
        )


class Backend(abc.ABC):
    """A result store.

    Guarantees: ``store`` is durable when it returns; a record read back equals the record stored;
    ``wait`` returns as soon as the task is ready (or raises ``TimeoutError``), never later than one
    polling interval after it. All methods are coroutines on the loop that created the backend.
    """

    schemes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        url: str,
        *,
        serializer: str = "json",
        accept: Sequence[str] = ("json",),
        expires: float | None = 86400.0,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.url = url
        self.serializer = serializer
        self.accept = tuple(accept)
        self.expires = expires
        self.options: dict[str, Any] = dict(options or {})

    def encode(self, value: Any) -> tuple[str, bytes]:
        """Serialize ``value`` with the result serializer; returns (content type, bytes)."""
        return serializers.dumps(value, self.serializer)

    def decode(self, data: bytes, content_type: str | None = None) -> Any:
        """Deserialize bytes written by ``encode`` (or by Celery with the same serializer)."""
        return serializers.loads(
            data, content_type or serializers.content_type_of(self.serializer), self.accept
        )

    @abc.abstractmethod
    async def store(self, metas: Sequence[ResultMeta]) -> None:
        """Write these records (one round trip where the store allows), replacing older ones."""

    @abc.abstractmethod
    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        """The records that exist among ``task_ids``; missing ids are left out."""

    @abc.abstractmethod
    async def forget(self, task_id: str) -> None:
        """Delete a task's record."""

    async def get(self, task_id: str) -> ResultMeta:
        """The record of ``task_id``, or a PENDING one when there is none."""
        found = await self.get_many([task_id])
        return found.get(task_id) or ResultMeta(task_id=task_id)

    async def wait(self, task_id: str, timeout: float | None = None, interval: float = 0.5) -> ResultMeta:
        """Wait until ``task_id`` is ready; poll with backoff from 1 ms up to ``interval``.

        Backends that can be told about new results (pub/sub, notifications) override this.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while True:
            meta = await self.get(task_id)
            if meta.ready:
                return meta
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeout(f"task {task_id} not ready after {timeout}s (state {meta.status})")
                delay = min(delay, left)
            await asyncio.sleep(delay)
            delay = min(delay * 2, interval)

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
