"""Celery's monitoring events, on Celery's exchange ``celeryev``, so Flower and ``celery events`` read ours.

``dispatcher`` sends them (workers buffer task events and send them in batches, as Celery's workers do),
``receiver`` listens to them, and ``state`` keeps what they tell about a fleet (for ``celeriac events``).
Which event fires where, and with which fields, is in ``docs/events.md``.
"""

from __future__ import annotations

#: The exchange events travel on (Celery's ``event_exchange``): a topic exchange on AMQP, a fanout on Redis.
EXCHANGE = "celeryev"


def routing_key(event_type: str) -> str:
    """The routing key of an event type, as Celery makes it: ``task-succeeded`` -> ``task.succeeded``."""
    return event_type.replace("-", ".")


__all__ = ["EXCHANGE", "routing_key"]
