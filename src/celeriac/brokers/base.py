"""The Broker contract: what every transport provides. It deals in ``Message`` objects, never tasks."""

from __future__ import annotations

import abc
import time
from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from celeriac.protocol.message import Message

if TYPE_CHECKING:
    from celeriac.brokers.fanout import Subscription


@dataclass(slots=True)
class Delivery:
    """A message a broker handed to one consumer, held under a lease until acked or rejected.

    ``message`` is None when the broker could not read its own stored form; ``error`` then says why,
    and the consumer dead-letters the delivery with that reason. ``deliveries`` counts how many times
    this message was handed out, this time included; brokers that cannot count report 1.
    """

    tag: Any
    queue: str
    message: Message | None
    deliveries: int = 1
    error: str | None = None
    raw: bytes = b""
    extra: dict[str, Any] = field(default_factory=dict)
    leased: float = 0.0

    @property
    def redelivered(self) -> bool:
        """Whether this message was handed out before (to this worker or another)."""
        return self.deliveries > 1


class Broker(abc.ABC):
    """A message transport.

    Guarantees every broker keeps:

    * at-least-once: a fetched message stays the consumer's until ``ack`` or ``reject``; if the
      consumer dies first, the message returns to its queue within the lease timeout.
    * ``publish(..., not_before=t)`` keeps the message out of reach until unix time ``t`` in the
      broker itself (no worker holds it meanwhile).
    * ``reject(requeue=False)`` moves the message to the dead-letter place with ``reason``; nothing is
      dropped silently.
    * priorities: within one queue, as ``priority_order`` says: ``"lower-first"`` (0 highest, as on
      Redis with Celery), ``"higher-first"`` (AMQP's order, RabbitMQ with ``x-max-priority``) or
      ``"none"`` (the queue ignores priorities: FIFO).

    All methods are coroutines on the event loop that created the broker.
    """

    #: URL schemes this class serves, e.g. ("sqlite", "postgresql").
    schemes: ClassVar[tuple[str, ...]] = ()
    #: How priorities order messages in one queue (see above); a broker may set it per instance.
    priority_order: str = "lower-first"

    def __init__(self, url: str, *, options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.options: dict[str, Any] = dict(options or {})
        #: The most messages this consumer may hold at once (a worker's pool slots times prefetch
        #: multiplier), set by the worker before it fetches. Brokers that push (AMQP) make it their
        #: prefetch, so a busy worker is never sent what another could run; None: not known.
        self.capacity: int | None = None
        #: The worker's pool slots (its concurrency), set with ``capacity``: a pushing broker consuming
        #: several queues splits ``capacity`` among them but gives each at least this many.
        self.slots: int | None = None
        #: Option ``eta_on_queue``: delayed messages sent by *clients* go to their queue at once, with
        #: their ``eta`` header, as Celery sends them, so Celery workers sharing the broker run them
        #: (they hold them in memory until due); our workers move them to the delayed store on receipt.
        #: For a migration where clients move to celeriac before workers do. Workers never use it.
        self.eta_on_queue = bool(self.options.get("eta_on_queue", False))

    async def connect(self) -> None:  # noqa: B027 - optional hook
        """Open connections; publish and fetch call it on first use."""

    async def declare(self, queue: str) -> None:  # noqa: B027 - optional hook
        """Make sure ``queue`` exists (a no-op where queues need no declaring)."""

    @abc.abstractmethod
    async def publish(self, queue: str, message: Message, *, not_before: float | None = None) -> None:
        """Store ``message`` on ``queue``; with ``not_before`` (unix seconds), not before that time."""

    async def publish_many(self, items: Sequence[tuple[str, Message, float | None]]) -> None:
        """``publish`` each ``(queue, message, not_before)``; brokers that can send a batch in one round
        trip (a pipeline, one INSERT) do so. Either all are stored when it returns, or it raises."""
        for queue, message, not_before in items:
            await self.publish(queue, message, not_before=not_before)

    @abc.abstractmethod
    async def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        """Take up to ``limit`` due messages from ``queues``, waiting up to ``timeout`` s for the first.

        Returns an empty list when nothing came within ``timeout``. Queues earlier in ``queues`` are not
        starved by later ones, and within a queue lower priority numbers come first, then FIFO.
        """

    @abc.abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Forget these deliveries for good: their tasks are done."""

    async def holds(self, deliveries: Sequence[Delivery]) -> list[bool]:
        """Whether this consumer still holds each delivery; one it holds is kept a full lease longer.

        A consumer silent for longer than its lease (paused, cut off) loses what it holds, and another
        consumer is given it and runs its task again. The worker asks before it records a finished run,
        so a late run neither overwrites the newer run's result nor settles its message. This default
        answers True: a broker on which a live consumer cannot lose a delivery (AMQP redelivers only
        once the consumer's channel is gone, and an ack on a dead channel fails) keeps it.
        """
        return [True] * len(deliveries)

    @abc.abstractmethod
    async def reject(self, delivery: Delivery, *, requeue: bool, reason: str = "") -> None:
        """Give a delivery back (``requeue``) or dead-letter it with ``reason``."""

    @abc.abstractmethod
    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back deliveries that never started (warm shutdown); their delivery count is not raised."""

    @abc.abstractmethod
    async def purge(self, queue: str) -> int:
        """Delete every waiting message of ``queue`` (delayed ones too); return how many."""

    @abc.abstractmethod
    async def size(self, queue: str) -> int:
        """How many messages wait on ``queue``, delayed ones included, leased ones not."""

    @abc.abstractmethod
    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        """The most recent dead-lettered messages (of one queue, or all), newest first."""

    async def requeue_dead_letters(
        self, queue: str | None = None, limit: int | None = None, *, ids: Collection[str] | None = None
    ) -> int:
        """Put dead letters back on the queue each came from, oldest first, as if newly published.

        Args:
            queue: only the dead letters of this queue (default: all).
            limit: at most this many (default: every one selected).
            ids: only the dead letters of these task ids (a letter whose message cannot be read has none).

        Each letter is stored on its queue before it leaves the dead letters, so a failure in between
        leaves it in both places (at least once), never in neither. Its delivery count starts afresh.

        Returns:
            How many dead letters were requeued.
        """
        raise NotImplementedError(self._no_dead_letter_admin())

    async def purge_dead_letters(
        self, queue: str | None = None, *, older_than: float | None = None, keep: int | None = None
    ) -> int:
        """Delete dead letters (of ``queue``, or all) for good.

        With neither ``older_than`` nor ``keep``, every selected letter goes. Otherwise a letter goes
        when it was set aside more than ``older_than`` seconds ago, or when ``keep`` newer ones are
        kept (``keep=0`` deletes all); the worker's retention (``broker_dead_letter_max``,
        ``broker_dead_letter_expires``) calls it with both.

        Returns:
            How many dead letters were deleted.
        """
        raise NotImplementedError(self._no_dead_letter_admin())

    def _no_dead_letter_admin(self) -> str:
        return (
            f"{type(self).__name__} cannot requeue or purge its dead letters; it needs "
            "requeue_dead_letters and purge_dead_letters (see celeriac.brokers.base.Broker)"
        )

    async def broadcast(self, exchange: str, message: Message, *, routing_key: str = "") -> None:
        """Send ``message`` to every current subscriber of ``exchange`` (remote control, events).

        Fire and forget, as on Celery's transports: nobody subscribed, nobody gets it; no ack.
        """
        raise NotImplementedError(self._no_broadcast())

    def subscribe(self, exchange: str, pattern: str = "#") -> AbstractAsyncContextManager[Subscription]:
        """Listen to ``exchange``: ``async with broker.subscribe("celery.pidbox") as messages:``.

        The subscription is live when the ``async with`` body starts, and ends with it. ``pattern``
        selects by routing key with ``*``/``#`` wildcards; ``"#"`` takes everything.
        """
        raise NotImplementedError(self._no_broadcast())

    def _no_broadcast(self) -> str:
        return (
            f"{type(self).__name__} cannot broadcast yet; remote control and events need "
            "a broker that can (Redis, RabbitMQ, SQL or memory)"
        )

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release this consumer's leases (messages go back to their queues) and close connections."""


@dataclass(slots=True)
class DeadLetter:
    """A message that was set aside with the reason why."""

    queue: str
    reason: str
    raw: bytes
    message: Message | None
    time: float

    @property
    def task_id(self) -> str | None:
        """The task id of the message, None when the message cannot be read or names none."""
        return self.message.task_id if self.message is not None else None

    @property
    def task_name(self) -> str | None:
        """The task name the message names (protocol v2's ``task`` header), else None."""
        name = self.message.headers.get("task") if self.message is not None else None
        return name if isinstance(name, str) else None

    def selected(self, queue: str | None, ids: Collection[str] | None = None) -> bool:
        """Whether this letter is of ``queue`` (any, when None) and of one of ``ids`` (any, when None)."""
        return (queue is None or self.queue == queue) and (ids is None or self.task_id in ids)


def surely_held(delivery: Delivery, lease_seconds: float) -> bool:
    """Whether the lease on ``delivery`` cannot have run out yet, by this process's clock alone: less
    than half of ``lease_seconds`` passed since it was taken or confirmed (the half allows for clocks
    that run at slightly different rates), so ``holds`` needs no round trip."""
    return time.monotonic() - delivery.leased < lease_seconds / 2


def check_dead_letter_arguments(
    *, limit: int | None = None, older_than: float | None = None, keep: int | None = None
) -> None:
    """Raise ValueError naming the argument of ``requeue_dead_letters``/``purge_dead_letters`` that is
    negative (a count or an age below 0 can only be a mistake)."""
    for name, value in (("limit", limit), ("older_than", older_than), ("keep", keep)):
        if value is not None and value < 0:
            raise ValueError(f"{name} must be 0 or more, not {value!r}")


def doomed(times: Sequence[float], *, older_than: float | None, keep: int | None, now: float) -> list[bool]:
    """For dead letters set aside at ``times`` (newest first), which ``purge_dead_letters`` deletes."""
    if older_than is None and keep is None:
        return [True] * len(times)
    cutoff = None if older_than is None else now - older_than
    return [
        (keep is not None and n >= keep) or (cutoff is not None and when < cutoff)
        for n, when in enumerate(times)
    ]
