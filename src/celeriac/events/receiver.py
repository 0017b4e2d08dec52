"""Receiving events: ``async with receive(broker) as events: async for event in events: ...``.

A message may carry one event or, from a worker that batches (Celery's and ours), a list of them; each
event comes out on its own, with ``local_received`` (this machine's epoch seconds) added, as Celery's
receiver adds it. A message that is not a JSON event is logged and skipped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from celeriac.events import EXCHANGE
from celeriac.exceptions import DecodeError
from celeriac.protocol.serializers import json_loads

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker
    from celeriac.brokers.fanout import Subscription
    from celeriac.protocol.message import Message

__all__ = ["events_of", "receive"]

log = logging.getLogger("celeriac.events")


#: The largest event message read (the default of task_message_max_bytes); a larger one is skipped.
MAX_BYTES = 16 * 1024 * 1024


def events_of(message: Message, max_bytes: int = MAX_BYTES) -> list[dict[str, Any]]:
    """The events a message carries: none when it carries no readable event or is over ``max_bytes``."""
    if len(message.body) > max_bytes:
        log.warning(
            "skipped an event message of %d bytes, over the limit of %d", len(message.body), max_bytes
        )
        return []
    if message.content_type != "application/json":
        log.warning("skipped an event message of content type %r (events are JSON)", message.content_type)
        return []
    try:
        body = json_loads(message.body)
    except DecodeError as exc:
        log.warning("skipped an unreadable event message: %s", exc.reason)
        return []
    found = body if isinstance(body, list) else [body]
    now = time.time()
    events = [event for event in found if isinstance(event, dict) and isinstance(event.get("type"), str)]
    for event in events:
        event["local_received"] = now
    return events


@contextlib.asynccontextmanager
async def receive(broker: Broker, pattern: str = "#") -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Listen to the events whose routing key matches ``pattern`` (``"#"``: all, ``"worker.*"``, ...).

    Events sent before the subscription is live are not seen. Iteration ends with the error that broke
    the subscription (a lost connection): subscribe again to go on.
    """
    async with broker.subscribe(EXCHANGE, pattern) as messages:
        yield _each(messages)


async def _each(messages: Subscription) -> AsyncIterator[dict[str, Any]]:
    async for message in messages:
        for event in events_of(message):
            yield event
