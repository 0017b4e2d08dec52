"""The Backend contract: where task results and states are kept, in Celery's record layout.

Three concerns, each a few coroutines:

* task records: ``store``, ``get_many`` (and ``get``), ``wait``, ``forget``;
* saved groups: ``save_group``, ``restore_group``, ``forget_group`` keep Celery's result tuple of a
  group (what ``GroupResult.save`` writes and ``GroupResult.restore`` reads);
* the chord counter: ``chord_part`` counts one finished header task and hands the header's results, in
  order, to exactly one caller; ``chord_done`` ends the chord once its body was sent; the optional
  ``chord_begin`` announces a chord before its header is sent.
"""

from __future__ import annotations

import abc
import asyncio
import time
from collections.abc import AsyncIterator, Sequence
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
    #: Where the record goes, for backends that answer the caller (rpc://) and are not stored: the
    #: ``reply_to`` of the task's message, "" when the message named none, None for a record not
    #: written for a message (a revoke). Not part of the record itself.
    reply_to: str | None = field(default=None, compare=False)

    @property
    def ready(self) -> bool:
        """Whether the task has finished: SUCCESS, FAILURE or REVOKED."""
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
        """A record from Celery's JSON layout (``to_dict``'s inverse); ``date_done`` may be ISO text."""
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


@dataclass(frozen=True, slots=True)
class ChordPart:
    """One finished header task of a chord.

    ``index`` is the task's place in the header (the message's ``group_index``); parts without one
    come after the others, in the order they arrived. ``result`` is JSON-able, as in ``ResultMeta``:
    the value, or for exception states the exception in Celery's dict layout.
    """

    task_id: str
    index: int | None
    status: str
    result: Any = None


@dataclass(frozen=True, slots=True)
class ChordClaim:
    """The right to send a chord's body, held by one caller at a time: the header's parts, in order.

    ``token`` names this claim; ``chord_done`` needs it, so that a claimant whose lease ran out cannot
    end a chord that another caller claimed since.
    """

    group_id: str
    token: str
    parts: tuple[ChordPart, ...]

    @property
    def values(self) -> list[Any]:
        """The parts' results, in header order (what the body receives)."""
        return [part.result for part in self.parts]


class Backend(abc.ABC):
    """A result store.

    Guarantees: ``store`` is durable when it returns; a record read back equals the record stored;
    ``wait`` returns as soon as the task is ready (or raises ``TimeoutError``), never later than one
    polling interval after it. All methods are coroutines on the loop that created the backend.
    """

    schemes: ClassVar[tuple[str, ...]] = ()
    #: True when ``chord_part`` can find a chord's size that a Celery client recorded (``size`` 0): Redis,
    #: where Celery's client sets it. On other backends Celery's own polling task counts its chords.
    reads_chord_size: ClassVar[bool] = False
    #: True when results are sent to the client that sent the task, not stored (rpc://): the app then
    #: calls ``expect_reply`` before it sends a task whose ``reply_to`` is its own.
    answers_caller: ClassVar[bool] = False
    #: True when ``revocations`` pushes revoked ids to workers, who then look nothing up per fetched batch.
    pushes_revocations: ClassVar[bool] = False

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
        self.setup()

    def setup(self) -> None:  # noqa: B027 - optional hook
        """Make this backend's own state from ``url`` and ``options`` (subclasses; no I/O here)."""

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

    async def revoke(self, metas: Sequence[ResultMeta]) -> None:
        """Store REVOKED records; a backend that ``pushes_revocations`` also tells the workers watching."""
        await self.store(metas)

    def revocations(self) -> AsyncIterator[list[str]]:
        """Revoked task ids as they happen, for backends that ``pushes_revocations``.

        The first batch is every id revoked within ``expires`` (read after the feed is listening, so a
        revocation in between is not missed); then one batch per revocation. The iterator raises when the
        feed breaks: ids revoked meanwhile are not pushed, so the caller looks them up until it has a new
        feed and its first batch.
        """
        raise NotImplementedError(f"{type(self).__name__} does not push revocations")

    @abc.abstractmethod
    async def get_many(self, task_ids: Sequence[str]) -> dict[str, ResultMeta]:
        """The records that exist among ``task_ids``; missing ids are left out."""

    @abc.abstractmethod
    async def forget(self, task_id: str) -> None:
        """Delete a task's record."""

    # -- saved groups -------------------------------------------------------------------------------
    @abc.abstractmethod
    async def save_group(self, group_id: str, result: Any) -> None:
        """Keep a group's result tuple for ``restore_group``, replacing an earlier one.

        ``result`` is Celery's ``GroupResult.as_tuple()``: ``[[group_id, parent tuple or None],
        [member tuples]]``, a member being ``[[task_id, parent], None]`` or a nested group's tuple.
        """

    @abc.abstractmethod
    async def restore_group(self, group_id: str) -> Any | None:
        """The result tuple saved for ``group_id`` (lists for tuples), or None when there is none."""

    @abc.abstractmethod
    async def forget_group(self, group_id: str) -> None:
        """Delete a saved group (its members' records stay)."""

    # -- the chord counter --------------------------------------------------------------------------
    async def chord_begin(self, group_id: str, size: int) -> None:  # noqa: B027 - optional hook
        """Announce chord ``group_id`` with ``size`` parts before its header is sent (optional).

        ``chord_part`` needs no announcement. This one lets a chord id run again after it was done (a
        frozen chord applied twice), and on Redis records the size where a Celery worker counting
        some of the header looks for it (Celery's ``set_chord_size``).
        """

    @abc.abstractmethod
    async def chord_part(
        self, group_id: str, part: ChordPart, size: int, *, lease: float = 60.0
    ) -> ChordClaim | None:
        """Count ``part`` as finished in the header of chord ``group_id``, which has ``size`` parts.

        ``size`` 0 means "as recorded by the client that sent the header" (``reads_chord_size`` backends).

        One atomic step, safe against any number of concurrent callers in any number of processes:

        * A part is counted once: a second report of the same task id and index (a redelivered
          message, a task run twice) changes nothing, and the first report's result stays.
        * The call whose part completes the header gets a ``ChordClaim`` with every part, ordered by
          index; every other call gets None. So the body is sent once even when the last two parts
          finish at the same instant.
        * The claim is a lease: if its holder has not called ``chord_done`` within ``lease`` seconds
          (its worker died before sending the body), the next report of any part of the complete
          header (the dead worker's message, redelivered) claims it again. After ``chord_done``,
          late reports get None.
        """

    async def chord_parts(
        self, reports: Sequence[tuple[str, ChordPart, int]], *, lease: float = 60.0
    ) -> list[ChordClaim | None]:
        """``chord_part`` for several ``(group_id, part, size)`` reports, in order; stores that can
        send them together do (a worker reports the header tasks that ended in the same moment)."""
        return [await self.chord_part(group_id, part, size, lease=lease) for group_id, part, size in reports]

    async def chord_grow(self, group_id: str, by: int = 1) -> None:
        """Count ``by`` more parts in the header of chord ``group_id`` (``Task.add_to_chord``): the body
        then waits for them too. Called by a header task while it runs, so before the header completes.

        Raises:
            NotImplementedError: this backend cannot grow a chord (the default).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot add tasks to a chord (add_to_chord)")

    @abc.abstractmethod
    async def chord_done(self, claim: ChordClaim) -> None:
        """End the chord after its body was sent: drop the counted parts, remember the chord is done.

        Does nothing when ``claim`` is no longer the chord's claim (its lease ran out and another
        caller claimed the chord since). The "done" mark outlives the parts for a while, so late
        duplicates of header tasks are ignored; the rest expires like results do.
        """

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

    async def expect_reply(self, reply_to: str | None) -> None:  # noqa: B027 - optional hook
        """Get ready for results addressed to ``reply_to`` (``answers_caller`` backends)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""
