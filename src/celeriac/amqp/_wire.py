"""Messages on AMQP: our ``Message`` as native properties and headers, and back, 1:1 as Celery sends them.

A ``Message`` maps to an AMQP basic message directly: ``headers`` are the application headers,
``content_type``/``content_encoding`` the content properties, the body travels as is, and the keys of
``properties`` that are AMQP properties (``correlation_id``, ``reply_to``, ``priority``,
``delivery_mode``, ``expiration``, ...) go into the property fields of the same name. Other keys of
``properties`` (``delivery_info``, ``body_encoding``) are local and never sent.

Headers of our own, which a delivery strips before handing the message out:

* ``x-celeriac-deliveries``: how many times earlier copies of this message were delivered (a message
  republished to count a redelivery, to release it, or to requeue it carries it).
* ``x-celeriac-dead-queue``, ``x-celeriac-dead-reason``, ``x-celeriac-dead-time``: on a dead letter,
  the queue it came from, why, and when (unix seconds).

RabbitMQ's ``x-delivery-count`` (quorum queues) is read for the count and stripped too.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any

from celeriac.amqp._codec import PROPERTY_NAMES, Properties
from celeriac.brokers.delivery import clamped_priority
from celeriac.protocol.message import Message

if TYPE_CHECKING:
    from aiormq.abc import DeliveredMessage
    from pamqp.commands import Basic

    from celeriac.amqp._link import Delivered

    #: A message read by our consuming link, or by aiormq (``basic.get`` of dead letters).
    AnyDelivered = Delivered | DeliveredMessage

__all__ = [
    "COUNT",
    "DEAD_QUEUE",
    "DEAD_REASON",
    "DEAD_TIME",
    "delay_routing_key",
    "deliveries_of",
    "from_amqp",
    "strip_delay_prefix",
    "to_amqp",
]

COUNT = "x-celeriac-deliveries"
DEAD_QUEUE, DEAD_REASON, DEAD_TIME = "x-celeriac-dead-queue", "x-celeriac-dead-reason", "x-celeriac-dead-time"
_QUORUM_COUNT = "x-delivery-count"
_LOCAL_HEADERS = (COUNT, DEAD_QUEUE, DEAD_REASON, DEAD_TIME, _QUORUM_COUNT)
#: What RabbitMQ writes into a message it dead-letters (every hop of the delay scheme does). Not part of
#: the task: a message re-sent with them (a retry) is taken by RabbitMQ for a dead-letter cycle when it
#: passes the same delay queue again, and silently dropped.
_DEATH_HEADERS = ("x-death", "x-first-death-", "x-last-death-")
#: The AMQP properties a ``Message`` carries in ``properties`` under the same names (``correlation_id`` up
#: to ``app_id``, in wire order; content type and encoding, headers, delivery mode and priority are
#: fields of their own, ``cluster_id`` is deprecated).
_PROPERTIES = PROPERTY_NAMES[5:13]

#: kombu's native delayed delivery: 28 bits of the delay in seconds, one word each, before the key.
DELAY_BITS = 28
MAX_DELAY = 2**DELAY_BITS - 1
_DELAY_PREFIX = re.compile(rf"^(?:[01]\.){{{DELAY_BITS}}}")


def to_amqp(message: Message, **extra_headers: Any) -> tuple[bytes, Properties]:
    """The body and AMQP properties of ``message`` (for the ``Publisher``): persistent
    (``delivery_mode`` 2) and priority 0 unless it says otherwise; ``extra_headers`` are added to its
    application headers."""
    props = message.properties
    fields: dict[str, Any] = {key: props[key] for key in _PROPERTIES if props.get(key) is not None}
    if "expiration" in fields:
        fields["expiration"] = str(fields["expiration"])
    if props.get("type") is not None and "message_type" not in fields:
        fields["message_type"] = str(props["type"])
    headers = dict(message.headers)
    headers.update(extra_headers)
    mode = props.get("delivery_mode")
    properties = Properties(
        content_type=message.content_type,
        content_encoding=message.content_encoding,
        headers=headers,
        delivery_mode=mode if mode in (1, 2) else 2,
        priority=clamped_priority(message.priority),
        **fields,
    )
    return message.body, properties


def properties_of(delivered: AnyDelivered) -> Properties | Basic.Properties:
    """A delivery's AMQP properties, whichever client read it."""
    props = getattr(delivered, "properties", None)
    return props if props is not None else delivered.header.properties  # type: ignore[union-attr]


def from_amqp(delivered: AnyDelivered, deliveries: int) -> Message:
    """The ``Message`` of a delivery; ``delivery_info`` names its exchange and routing key (the key
    without a delay prefix) and ``redelivered`` says whether it was delivered before."""
    props = properties_of(delivered)
    headers = {
        k: v
        for k, v in (props.headers or {}).items()
        if k not in _LOCAL_HEADERS and not k.startswith(_DEATH_HEADERS)
    }
    properties: dict[str, Any] = {
        "delivery_mode": props.delivery_mode or 1,
        "priority": props.priority or 0,
    }
    for key in _PROPERTIES:
        value = getattr(props, key, None)
        if value is not None:
            properties[key] = value
    properties["delivery_info"] = {
        "exchange": delivered.exchange or "",
        "routing_key": strip_delay_prefix(delivered.routing_key or ""),
        "redelivered": deliveries > 1,
    }
    return Message(
        body=delivered.body,
        headers=headers,
        content_type=props.content_type or "application/json",
        content_encoding=props.content_encoding or "utf-8",
        properties=properties,
    )


def deliveries_of(delivered: AnyDelivered) -> int:
    """How many times this message was delivered, this time included, as far as the headers tell.

    Earlier copies' deliveries (our header) plus the quorum queue's count of returns, plus this one. A
    classic queue's bare ``redelivered`` flag is not counted here: the broker turns such a delivery into
    a counted copy before handing it out.
    """
    headers = properties_of(delivered).headers or {}
    return _int(headers.get(COUNT)) + _int(headers.get(_QUORUM_COUNT)) + 1


def counted_by_broker(delivered: AnyDelivered) -> bool:
    """Whether the queue counts redeliveries itself (quorum queues add ``x-delivery-count``)."""
    return _QUORUM_COUNT in (properties_of(delivered).headers or {})


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def delay_routing_key(not_before: float, routing_key: str, *, now: float | None = None) -> str:
    """kombu's delayed routing key: the delay in whole seconds (rounded up, so a message is never early)
    as 28 binary words, then ``routing_key``.

    Raises:
        ValueError: the delay is longer than 2**28 - 1 seconds (about 8.5 years).
    """
    seconds = max(math.ceil(not_before - (time.time() if now is None else now)), 1)
    if seconds > MAX_DELAY:
        raise ValueError(
            f"cannot delay a message by {seconds} s: RabbitMQ's delay scheme reaches {MAX_DELAY} s "
            "(about 8.5 years)"
        )
    return ".".join(f"{seconds:0{DELAY_BITS}b}") + "." + strip_delay_prefix(routing_key)


def strip_delay_prefix(routing_key: str) -> str:
    """A routing key without the delay words a delayed message carries (kombu strips them too)."""
    return _DELAY_PREFIX.sub("", routing_key)


def dead_letter_info(delivered: DeliveredMessage) -> tuple[str, str, float]:
    """The queue, reason and time a dead letter was set aside with; RabbitMQ's own dead-lettering
    (``x-death``: delivery limit, rejection, expiry) is read when our headers are absent."""
    headers = delivered.header.properties.headers or {}
    queue, reason, when = headers.get(DEAD_QUEUE), headers.get(DEAD_REASON), headers.get(DEAD_TIME)
    if isinstance(queue, str) and isinstance(reason, str):
        return queue, reason, float(when) if isinstance(when, (int, float)) else 0.0
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        death = deaths[0]
        stamp = death.get("time")
        seconds = stamp.timestamp() if isinstance(stamp, datetime) else 0.0
        return str(death.get("queue", "")), f"RabbitMQ: {death.get('reason', 'dead-lettered')!s}", seconds
    return "", "dead-lettered (no reason recorded)", 0.0
