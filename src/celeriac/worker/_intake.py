"""From a delivered message to work a pool can run: a delivery is accepted as a ``WorkItem`` or
refused (and then dead-lettered, with the reason), and an item becomes the ``Job`` a pool runs.

Nothing here writes: the worker settles what is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from celeriac._request import request_fields
from celeriac.exceptions import DecodeError, NotRegistered, SecurityError, WorkerLostError
from celeriac.middleware import WorkItem
from celeriac.protocol import decode_task
from celeriac.worker.pools.base import Job

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.brokers.base import Delivery
    from celeriac.protocol.message import TaskCall


@dataclass(frozen=True, slots=True)
class Refused:
    """A delivery that cannot run: set aside with ``reason``; ``exc`` fails its result, and the decoded
    ``call`` (when there is one) names the workflows waiting on it."""

    reason: str
    exc: BaseException | None = None
    call: TaskCall | None = None


def accept(
    app: Celeriac,
    delivery: Delivery,
    *,
    hostname: str,
    limit: int | None,
    content: Sequence[str],
    max_bytes: int | None,
) -> WorkItem | Refused:
    """Decode and validate a delivery against the settings ``broker_max_deliveries`` (``limit``),
    ``accept_content`` (``content``) and ``task_message_max_bytes``, read once per batch by the caller.
    """
    message = delivery.message
    if message is None:
        # Its result fails too, when an id can be read from what is left of it (Writer.dead_letter).
        reason = f"unreadable message: {delivery.error}"
        return Refused(reason, DecodeError(reason))
    if limit and delivery.deliveries > limit:
        try:
            lost: TaskCall | None = decode_task(message, accept=content, max_bytes=max_bytes)
        except DecodeError:
            lost = None
        return Refused(
            f"delivered {delivery.deliveries} times without finishing: the process running it "
            f"died each time (broker_max_deliveries={limit})",
            WorkerLostError("task killed its worker too many times"),
            lost,
        )
    try:
        call = decode_task(message, accept=content, max_bytes=max_bytes)
    except SecurityError as exc:
        return Refused(f"unverified signed message (not decoded): {exc.reason}", exc)
    except DecodeError as exc:
        return Refused(f"undecodable message: {exc.reason}", exc)
    task = app.tasks.get(call.name)
    if task is None:
        known = ", ".join(sorted(n for n in app.tasks if not n.startswith("celery."))[:20])
        return Refused(
            f"unknown task {call.name!r}: not registered on this worker (registered: {known}); "
            "is the module that defines it in -A or include?",
            NotRegistered(f"task {call.name!r} is not registered on {hostname}"),
            call,
        )
    try:
        task.check_arguments(call.args, call.kwargs)
    except TypeError as exc:
        return Refused(f"wrong arguments for {call.name}: {exc}", exc, call)
    return WorkItem(delivery=delivery, call=call, task=task)


def job_of(item: WorkItem, hostname: str) -> Job:
    """The job a pool runs for ``item``: the call, its time limits (the message's, else the task's, else
    the worker's ``task_time_limit``/``task_soft_time_limit``, as ``--time-limit`` sets them) and the
    request the task sees as ``self.request``."""
    call, task, message = item.call, item.task, item.delivery.message
    conf = task.app.conf
    hard = _first(call.time_limit, task.time_limit, conf.task_time_limit)
    soft = _first(call.soft_time_limit, task.soft_time_limit, conf.task_soft_time_limit)
    return Job(
        id=call.id,
        name=call.name,
        args=call.args,
        kwargs=call.kwargs,
        time_limit=hard,
        soft_time_limit=soft,
        request=request_fields(
            call,
            hostname,
            queue=item.delivery.queue,
            redelivered=item.delivery.redelivered,
            ignore_result=item.ignore_result,
            properties=message.properties if message is not None else None,
            limits=(hard, soft),
        ),
    )


def _first(*limits: float | None) -> float | None:
    return next((limit for limit in limits if limit is not None), None)
