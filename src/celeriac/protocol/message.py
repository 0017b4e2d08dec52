"""The two shapes of a task on its way: ``Message`` (what travels) and ``TaskCall`` (what it means)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Message:
    """A message as a broker carries it: protocol headers, AMQP-style properties and an encoded body.

    ``properties`` holds ``correlation_id``, ``reply_to``, ``priority``, ``delivery_mode`` and, once a
    broker delivered it, ``delivery_info`` (``exchange``, ``routing_key``, ``redelivered``).
    """

    body: bytes
    headers: dict[str, Any]
    content_type: str = "application/json"
    content_encoding: str = "utf-8"
    properties: dict[str, Any] = field(default_factory=dict)

    @property
    def task_id(self) -> str | None:
        """The task id from the headers (protocol v2), if present and a string."""
        value = self.headers.get("id")
        return value if isinstance(value, str) else None

    @property
    def priority(self) -> int | None:
        """The ``priority`` property when it is an integer, else None."""
        value = self.properties.get("priority")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(slots=True)
class TaskCall:
    """One task call, decoded and validated: everything a worker needs to run it.

    ``eta`` and ``expires`` are timezone-aware datetimes (UTC once decoded; a sender's keep the zone they
    are written in). ``time_limit``/``soft_time_limit`` are
    seconds. ``headers`` keeps every header of the message, including custom ones, so a message can be
    re-sent (for a retry) without losing what this version does not understand.
    """

    id: str
    name: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    eta: datetime | None = None
    expires: datetime | None = None
    retries: int = 0
    time_limit: float | None = None
    soft_time_limit: float | None = None
    root_id: str | None = None
    parent_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    origin: str | None = None
    shadow: str | None = None
    ignore_result: bool | None = None  # None: the message leaves it to the task's own option
    reply_to: str | None = None
    priority: int | None = None
    argsrepr: str | None = None
    kwargsrepr: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
