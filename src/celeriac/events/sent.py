"""``task-sent``: what a client says about each task message it published, when ``task_send_sent_event``
is on. Its hostname is the client's ``gen<pid>@<host>``, as Celery's clients name themselves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.events import EXCHANGE
from celeriac.events.dispatcher import envelope, event_message

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker
    from celeriac.protocol.message import Message

__all__ = ["send_task_sent"]

log = logging.getLogger("celeriac.events")

#: Brokers that said they cannot broadcast (told once per broker class, not once per message).
_told: set[type] = set()


def _fields(queue: str, message: Message) -> dict[str, Any]:
    headers = message.headers
    route = message.properties.get("delivery_info") or {}
    return {
        "uuid": headers.get("id"),
        "root_id": headers.get("root_id"),
        "parent_id": headers.get("parent_id"),
        "name": headers.get("task"),
        "args": headers.get("argsrepr"),
        "kwargs": headers.get("kwargsrepr"),
        "retries": headers.get("retries", 0),
        "eta": headers.get("eta"),
        "expires": headers.get("expires"),
        "queue": queue,
        "exchange": route.get("exchange", ""),
        "routing_key": route.get("routing_key", queue),
    }


async def send_task_sent(broker: Broker, items: Sequence[tuple[str, Message, float | None]]) -> None:
    """Broadcast a ``task-sent`` event for each published ``(queue, message, not_before)``.

    Never raises: an event that cannot go is logged, and the publish it reports stands.
    """
    sends = []
    for queue, message, _ in items:
        if "task" not in message.headers:
            continue
        hostname = message.headers.get("origin") or "celeriac"
        event = envelope("task-sent", hostname, _fields(queue, message))
        sends.append(broker.broadcast(EXCHANGE, event_message(event, hostname), routing_key="task.sent"))
    for outcome in await asyncio.gather(*sends, return_exceptions=True):
        if isinstance(outcome, NotImplementedError):
            if type(broker) not in _told:
                _told.add(type(broker))
                log.warning("task-sent events are not sent: %s", outcome)
        elif isinstance(outcome, Exception):
            log.warning("could not send a task-sent event: %r", outcome)
