"""What the RabbitMQ broker declares, and how: the same entities, flags and arguments as Celery 5.7.

A queue is declared as Celery declares it, because RabbitMQ refuses (PRECONDITION_FAILED) a second
declaration with other arguments: durable, and with no arguments for a classic queue unless the user
configured some (``task_queue_max_priority`` gives ``x-max-priority``; ``queue_arguments`` of a
``task_queues`` entry are passed as they are); ``{"x-queue-type": "quorum"}`` for
``task_default_queue_type = "quorum"``. A queue listed in ``task_queues`` is bound to its exchange (direct,
topic or fanout, durable) with its routing key, as Celery binds it.

The delay scheme is kombu's native delayed delivery (Celery 5.5+), names and arguments alike, so Celery
workers and ours hand delayed messages to each other: 28 topic exchanges and queues
``celery_delayed_<level>`` (level 0 to 27); queue ``level`` holds messages for ``2**level`` seconds
(``x-message-ttl``) and then dead-letters them to exchange ``level - 1`` (level 0: to the topic exchange
``celery_delayed_delivery``). A delayed message is published to ``celery_delayed_27`` with a routing key
made of the delay's 28 binary digits, one word each, then the destination's routing key; each level's
exchange sends it through its queue when its digit is 1 and straight on when it is 0. Our queues are
bound to ``celery_delayed_delivery`` with 28 ``*`` words and their own name, so a delayed message
reaches exactly its queue (kombu binds ``#.<routing key>`` for Celery's topic exchanges).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from celeriac.amqp._wire import DELAY_BITS
from celeriac.routing import QueueSpec

__all__ = [
    "DELAY_LEVELS",
    "DELIVERY_EXCHANGE",
    "broadcast_queue",
    "delay_levels",
    "delay_pattern",
    "delivery_exchange",
    "exchange_kind",
    "level_name",
    "queue_arguments",
]

DELIVERY_EXCHANGE = "celery_delayed_delivery"
DELAY_LEVELS = DELAY_BITS


def queue_arguments(spec: QueueSpec | None, *, queue_type: str, max_priority: int | None) -> dict[str, Any]:
    """The arguments to declare a queue with, as Celery 5.7 declares it with the same settings."""
    arguments: dict[str, Any] = {}
    if queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
    elif max_priority is not None:
        arguments["x-max-priority"] = int(max_priority)
    if spec is not None:
        arguments.update(spec.arguments)
    return arguments


def level_name(level: int, prefix: str = "") -> str:
    """kombu's name of one level's exchange and queue (``<prefix>_`` first when a prefix is set)."""
    return f"{prefix}_celery_delayed_{level}" if prefix else f"celery_delayed_{level}"


def delivery_exchange(prefix: str = "") -> str:
    return f"{prefix}_{DELIVERY_EXCHANGE}" if prefix else DELIVERY_EXCHANGE


@dataclass(frozen=True, slots=True)
class Level:
    """One level of the delay scheme: its exchange and queue (``name``) and how they are wired."""

    name: str
    arguments: dict[str, Any]
    queue_pattern: str  # binds the level's queue to its exchange
    next_exchange: str  # where its queue dead-letters to, and where a 0 digit goes on
    next_pattern: str  # binds the next exchange to this level's exchange (a 0 digit)


def delay_levels(queue_type: str, prefix: str = "") -> list[Level]:
    """The 28 levels, highest first, exactly as kombu declares them."""
    levels = []
    for level in range(DELAY_BITS - 1, -1, -1):
        stars = "*." * (DELAY_BITS - 1 - level)
        next_exchange = level_name(level - 1, prefix) if level > 0 else delivery_exchange(prefix)
        arguments: dict[str, Any] = {
            "x-queue-type": queue_type,
            "x-overflow": "reject-publish",
            "x-message-ttl": 2**level * 1000,
            "x-dead-letter-exchange": next_exchange,
        }
        if queue_type == "quorum":
            arguments["x-dead-letter-strategy"] = "at-least-once"
        levels.append(
            Level(level_name(level, prefix), arguments, stars + "1.#", next_exchange, stars + "0.#")
        )
    return levels


def delay_pattern(queue: str) -> str:
    """The binding of ``queue`` to the delivery exchange: exactly the delay's words, then its name."""
    return "*." * DELAY_BITS + queue


def exchange_kind(exchange: str) -> tuple[str, bool]:
    """The type and durability of a broadcast exchange, as Celery declares it: ``celery.pidbox`` fanout
    and transient, ``reply.celery.pidbox`` direct and transient, others (``celeryev``) topic, durable."""
    if exchange.startswith("reply.") and exchange.endswith("pidbox"):
        return "direct", False
    if exchange.endswith("pidbox"):
        return "fanout", False
    return "topic", True


def broadcast_queue(exchange: str, tag: str) -> tuple[str, dict[str, Any]]:
    """The name and arguments of a subscriber's queue (exclusive, auto-delete), Celery's for the
    exchange: a pidbox queue keeps messages 300 s and lives 10 s unused; an event queue 5 s and 60 s."""
    if exchange.endswith("pidbox"):
        return f"{tag}.{exchange}", {"x-message-ttl": 300_000, "x-expires": 10_000}
    return f"{exchange}.{tag}", {"x-message-ttl": 5_000, "x-expires": 60_000}
