"""The request of the task running now: what ``self.request`` shows, kept in a context variable.

The worker's tracer sets it around each run; the client reads it when it sends (the running task becomes
the parent of what it sends), when it waits for a result (never inside a task), and when it logs.
Nothing here imports the rest of celeriac, so every one of those may read it.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.protocol.message import TaskCall


@dataclass(slots=True)
class Context:
    """What a running task knows about its call: ``self.request`` (Celery's names)."""

    id: str | None = None
    task: str | None = None
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    retries: int = 0
    eta: datetime | None = None
    expires: datetime | None = None
    hostname: str | None = None
    delivery_info: dict[str, Any] = field(default_factory=dict)
    root_id: str | None = None
    parent_id: str | None = None
    group: str | None = None
    group_index: int | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    callbacks: list[dict[str, Any]] | None = None
    errbacks: list[dict[str, Any]] | None = None
    origin: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    timelimit: tuple[float | None, float | None] = (None, None)
    time_limit: float | None = None
    soft_time_limit: float | None = None
    ignore_result: bool = False
    headers: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    replaced_task_nesting: int = 0
    shadow: str | None = None
    stamped_headers: list[str] | None = None
    stamps: dict[str, Any] | None = None
    utc: bool = True
    logfile: str | None = None
    loglevel: int | None = None
    is_eager: bool = False
    called_directly: bool = True
    children: list[str] = field(default_factory=list)

    @property
    def taskset(self) -> str | None:
        """The group's id under Celery's old name."""
        return self.group

    def as_dict(self) -> dict[str, Any]:
        """Every field by its name, as Celery's ``request.as_dict()`` gives them."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


#: The running task's request; the tracer sets it for the length of a run.
current: ContextVar[Context | None] = ContextVar("celeriac_current_request", default=None)


def current_request() -> Context | None:
    """The request of the task running in this thread or coroutine, if any."""
    return current.get()


def request_fields(
    call: TaskCall,
    hostname: str,
    *,
    queue: str | None = None,
    redelivered: bool = False,
    ignore_result: bool = False,
    properties: dict[str, Any] | None = None,
    limits: tuple[float | None, float | None] | None = None,
) -> dict[str, Any]:
    """The fields of the request (``celeriac.task.Context``) of a run of ``call`` on ``hostname``,
    delivered from ``queue`` with the message ``properties``; ``limits`` are the (hard, soft) time limits
    the run has (the message's, else the task's), by default the message's own."""
    headers = call.headers
    stamped = headers.get("stamped_headers")
    stamped = [str(name) for name in stamped] if isinstance(stamped, list) else None
    stamps = headers.get("stamps")
    stamps = stamps if isinstance(stamps, dict) else {}
    hard, soft = limits if limits is not None else (call.time_limit, call.soft_time_limit)
    nesting = headers.get("replaced_task_nesting")
    return {
        "id": call.id,
        "task": call.name,
        "args": call.args,
        "kwargs": call.kwargs,
        "retries": call.retries,
        "eta": call.eta,
        "expires": call.expires,
        "hostname": hostname,
        "delivery_info": {
            "exchange": "",
            "routing_key": queue,
            "priority": call.priority,
            "redelivered": redelivered,
        },
        "root_id": call.root_id,
        "parent_id": call.parent_id,
        "group": call.group_id,
        "group_index": call.group_index,
        "chain": call.chain,
        "chord": call.chord,
        "callbacks": call.callbacks,
        "errbacks": call.errbacks,
        "origin": call.origin,
        "reply_to": call.reply_to,
        "correlation_id": call.id,
        "timelimit": (call.time_limit, call.soft_time_limit),
        "time_limit": hard,
        "soft_time_limit": soft,
        "ignore_result": ignore_result,
        "headers": headers,
        "properties": dict(properties or {}),
        "replaced_task_nesting": nesting if isinstance(nesting, int) else 0,
        "shadow": call.shadow,
        "stamped_headers": stamped,
        # Celery's wire: the names in ``stamped_headers``, the values in ``stamps``.
        "stamps": {name: stamps.get(name) for name in stamped} if stamped is not None else None,
    }


__all__ = ["Context", "current", "current_request", "request_fields"]
