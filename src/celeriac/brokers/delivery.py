"""What brokers hand out for a stored envelope, and the priority they order messages by."""

from __future__ import annotations

from typing import Any

from celeriac.brokers.base import DeadLetter, Delivery
from celeriac.exceptions import DecodeError
from celeriac.protocol.envelope import from_envelope
from celeriac.protocol.message import Message

__all__ = ["clamped_priority", "priority_of", "read_dead_letter", "read_delivery"]


def read_delivery(tag: Any, queue: str, payload: bytes, deliveries: int) -> Delivery:
    """A Delivery for a stored envelope; an unreadable one gets ``message=None`` and the reason."""
    try:
        message = from_envelope(payload)
    except DecodeError as exc:
        return Delivery(
            tag=tag, queue=queue, message=None, deliveries=deliveries, error=exc.reason, raw=payload
        )
    info = message.properties.get("delivery_info")
    info = dict(info) if isinstance(info, dict) else {}
    info.setdefault("exchange", "")
    info.setdefault("routing_key", queue)
    info["redelivered"] = deliveries > 1
    message.properties["delivery_info"] = info
    return Delivery(tag=tag, queue=queue, message=message, deliveries=deliveries, raw=payload)


def read_dead_letter(queue: str, reason: str, payload: bytes, when: float) -> DeadLetter:
    """A DeadLetter for a stored envelope, with ``message=None`` when it cannot be read."""
    try:
        message: Message | None = from_envelope(payload)
    except DecodeError:
        message = None
    return DeadLetter(queue=queue, reason=reason, raw=payload, message=message, time=when)


def priority_of(message: Message) -> int:
    """The message's priority as brokers order it: 0 (first) to 255, 0 when unset."""
    return clamped_priority(message.priority)


def clamped_priority(priority: int | None) -> int:
    """A priority as brokers order it: 0 (first) to 255, 0 when unset."""
    return min(max(int(priority or 0), 0), 255)
