"""Turning ``apply_async`` options into a ``TaskCall`` and a queue: validated once, in one place."""

from __future__ import annotations

import math
import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celeriac._request import current_request
from celeriac.config import closest_of
from celeriac.exceptions import ConfigurationError
from celeriac.protocol.codec import body_of
from celeriac.protocol.message import Message, TaskCall
from celeriac.routing import exchange_name

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.signals import Signal
    from celeriac.task import Task


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a client retries a publish that failed to reach the broker."""

    max_retries: int = 3
    interval_start: float = 0.0
    interval_step: float = 0.2
    interval_max: float = 0.2

    def delays(self) -> list[float]:
        """The wait before each retry, in seconds: one per retry, growing by ``interval_step``."""
        return [
            min(self.interval_start + i * self.interval_step, self.interval_max)
            for i in range(self.max_retries)
        ]


@dataclass(frozen=True, slots=True)
class SendOptions:
    """Every option ``apply_async`` takes (Celery's names); unknown names are rejected."""

    countdown: float | None = None
    eta: datetime | None = None
    expires: float | datetime | None = None
    queue: str | None = None
    routing_key: str | None = None
    exchange: str | None = None
    priority: int | None = None
    task_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    serializer: str | None = None
    compression: str | None = None
    ignore_result: bool | None = None
    link: Any = None
    link_error: Any = None
    retry: bool | None = None
    retry_policy: dict[str, Any] | None = None
    time_limit: float | None = None
    soft_time_limit: float | None = None
    shadow: str | None = None
    parent_id: str | None = None
    root_id: str | None = None
    group_id: str | None = None
    group_index: int | None = None
    chain: list[dict[str, Any]] | None = None
    chord: dict[str, Any] | None = None
    reply_to: str | None = None
    retries: int = 0
    add_to_parent: bool = True
    # kombu's SQS names, sent as message properties: an SQS FIFO queue's group and deduplication id.
    MessageGroupId: str | None = None
    MessageDeduplicationId: str | None = None
    idempotency_key: str | None = None
    unique_for: float | None = None
    unique_until: str | None = None
    #: What events, logs and monitors show for the arguments (Celery's); ``sensitive`` tasks override.
    argsrepr: str | None = None
    kwargsrepr: str | None = None

    @classmethod
    def parse(cls, options: dict[str, Any]) -> SendOptions:
        """The options ``apply_async`` was given, checked: raises TypeError naming an unknown option
        (and the closest known one), ValueError for a value out of range.
        """
        options = options_to_headers(options)
        known = cls.__dataclass_fields__
        unknown = [k for k in options if k not in known]
        if unknown:
            raise TypeError(
                f"apply_async() got an unexpected option {unknown[0]!r}" + closest_of(unknown[0], known)
            )
        opts = cls(**options)
        if opts.countdown is not None and not math.isfinite(float(opts.countdown)):
            raise ValueError(f"countdown must be a finite number of seconds, got {opts.countdown!r}")
        if opts.priority is not None and not (isinstance(opts.priority, int) and 0 <= opts.priority <= 255):
            raise ValueError(f"priority must be an int from 0 to 255, got {opts.priority!r}")
        if opts.eta is not None and opts.countdown is not None:
            raise ValueError("give either eta or countdown, not both")
        return opts


def options_to_headers(options: dict[str, Any]) -> dict[str, Any]:
    """A call's options with what travels as headers moved there: a stamped call's stamps (the names in
    the header ``stamped_headers``, the values in ``stamps``: ``celeriac.canvas.stamping``) and
    ``replaced_task_nesting``."""
    if "replaced_task_nesting" in options:  # Celery keeps it as an option; it travels as a header
        options = dict(options)
        nesting = options.pop("replaced_task_nesting")
        options["headers"] = {**(options.get("headers") or {}), "replaced_task_nesting": nesting}
    if "stamped_headers" not in options:
        return options
    options = dict(options)
    names = options.pop("stamped_headers") or []
    names = [names] if isinstance(names, str) else list(names)
    if not names:
        return options
    stamps = {name: options.pop(name) for name in names if name in options}
    headers = dict(options.get("headers") or {})
    known = headers.get("stamped_headers") or []
    headers["stamped_headers"] = list(dict.fromkeys([*known, *stamps]))
    headers["stamps"] = {**(headers.get("stamps") or {}), **stamps}
    options["headers"] = headers
    return options


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def origin() -> str:
    """Who sent a message, as Celery's ``origin`` header names it: ``gen<pid>@<host>``."""
    return f"gen{os.getpid()}@{socket.gethostname()}"


def _signature_dicts(value: Any) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    items = value if isinstance(value, (list, tuple)) else [value]
    return [dict(item) for item in items]


def build_call(
    app: Celeriac,
    name: str,
    args: Sequence[Any] | None,
    kwargs: dict[str, Any] | None,
    opts: SendOptions,
    task: Task[Any, Any] | None,
) -> tuple[str, TaskCall, float | None, SendOptions]:
    """The queue, the call, its ``not_before`` (unix seconds, or None when due now), and ``opts`` with
    the route's ``exchange`` and ``routing_key`` filled in where the caller gave none (Celery merges a
    route into the options the same way)."""
    args = list(args or ())
    kwargs = dict(kwargs or {})
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise TypeError(f"kwargs for {name!r} must be a dict with str keys")
    if task is not None and task.typing:
        task.check_arguments(args, kwargs)
    conf = app.conf
    # A countdown is elapsed time from now, written in the app's zone as Celery writes it; a datetime
    # keeps its own zone, and a naive one is UTC, as Celery's worker reads it (whatever `timezone` says).
    now = datetime.now(UTC)
    zone = app.timezone
    eta = (
        _aware(opts.eta)
        if opts.eta is not None
        else (
            (now + timedelta(seconds=float(opts.countdown))).astimezone(zone)
            if opts.countdown is not None
            else None
        )
    )
    expires: Any = opts.expires if opts.expires is not None else (task.expires if task else None)
    if isinstance(expires, (int, float)) and not isinstance(expires, bool):
        expires = (now + timedelta(seconds=float(expires))).astimezone(zone)
    elif isinstance(expires, datetime):
        expires = _aware(expires)
    route = app.router.route(name, args, kwargs, {"queue": opts.queue}, task=task)
    opts = _with_route(opts, route)
    queue = opts.queue or route.get("queue")
    if not queue and opts.exchange:
        kind = route.get("exchange_type")
        queue = app.router.bound_queue(
            opts.exchange, opts.routing_key or "", kind if isinstance(kind, str) else None
        )
    queue = queue or (task.queue if task else None) or conf.task_default_queue
    if not isinstance(queue, str):
        raise ConfigurationError(f"queue for {name!r} must be a name, got {queue!r}")
    priority = opts.priority
    if priority is None:
        priority = route.get("priority", task.priority if task else None)
    if priority is None:
        priority = conf.task_default_priority
    parent = current_request()
    task_id = opts.task_id or str(uuid.uuid4())
    parent_id = opts.parent_id or (parent.id if parent and not parent.is_eager else None)
    root_id = opts.root_id or (parent.root_id if parent and parent.id else None) or task_id
    ignore_result = opts.ignore_result
    if ignore_result is None:
        ignore_result = (
            task.ignore_result if task and task.ignore_result is not None else conf.task_ignore_result
        )
    time_limit = opts.time_limit if opts.time_limit is not None else (task.time_limit if task else None)
    soft_limit = (
        opts.soft_time_limit if opts.soft_time_limit is not None else (task.soft_time_limit if task else None)
    )
    argsrepr, kwargsrepr = opts.argsrepr, opts.kwargsrepr
    if task is not None and task.redaction:
        argsrepr, kwargsrepr = task.redaction.reprs(args, kwargs)
    call = TaskCall(
        id=task_id,
        name=name,
        args=args,
        kwargs=kwargs,
        callbacks=_signature_dicts(opts.link),
        errbacks=_signature_dicts(opts.link_error),
        chain=opts.chain,
        chord=opts.chord,
        eta=eta,
        expires=expires,
        retries=opts.retries,
        time_limit=time_limit if time_limit is not None else conf.task_time_limit,
        soft_time_limit=soft_limit if soft_limit is not None else conf.task_soft_time_limit,
        root_id=root_id,
        parent_id=parent_id,
        group_id=opts.group_id,
        group_index=opts.group_index,
        origin=origin(),
        shadow=opts.shadow,
        ignore_result=bool(ignore_result),
        reply_to=opts.reply_to or app.oid,
        priority=priority,
        headers=dict(opts.headers),
        argsrepr=argsrepr,
        kwargsrepr=kwargsrepr,
    )
    if parent is not None and opts.add_to_parent and parent.id:
        parent.children.append(task_id)
    not_before = eta.timestamp() if eta is not None and eta > now else None
    return queue, call, not_before, opts


def _with_route(opts: SendOptions, route: dict[str, Any]) -> SendOptions:
    """``opts`` with the route's exchange and routing key where ``apply_async`` gave none."""
    exchange = opts.exchange if opts.exchange is not None else exchange_name(route.get("exchange"))
    routing_key = opts.routing_key if opts.routing_key is not None else route.get("routing_key")
    if routing_key is not None and not isinstance(routing_key, str):
        raise ConfigurationError(f"a route's routing_key is a string, not {routing_key!r}")
    if (exchange, routing_key) == (opts.exchange, opts.routing_key):
        return opts
    return replace(opts, exchange=exchange, routing_key=routing_key)


def announce(signal: Signal, items: Sequence[tuple[str, Message, float | None]], **extra: Any) -> None:
    """Send ``before_task_publish`` or ``after_task_publish`` for each message about to go (or gone),
    with Celery's arguments. ``headers`` and ``properties`` are the message's own: changes made before
    it is published go with it. Sender: the task's name."""
    for queue, message, _ in items:
        route = message.properties.get("delivery_info") or {}
        try:
            body = body_of(message)
        except Exception:  # a receiver's view of the body must not keep the message from going
            body = None
        signal.send(
            sender=message.headers.get("task"),
            body=body,
            exchange=route.get("exchange", ""),
            routing_key=route.get("routing_key", queue),
            headers=message.headers,
            properties=message.properties,
            **extra,
        )
