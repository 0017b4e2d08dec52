"""Retries: a task that ended with ``Retry`` is sent again, with ``retries + 1``, before its ack."""

from __future__ import annotations

import dataclasses
import inspect
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.exceptions import Retry
from celeriac.middleware.base import Middleware, WorkItem
from celeriac.protocol import encode_task
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.worker.worker import Worker


class Retries(Middleware):
    """Sends a task that raised ``Retry`` again, as Celery does: same id, ``retries + 1``, its eta."""

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """Publish the retry before the message is acked: a worker dying in between runs it twice rather
        than never (a retry due beyond ``worker_eta_horizon`` goes to the broker's delayed store)."""
        if outcome.status != states.RETRY or not isinstance(outcome.exc, Retry):
            return
        retry = outcome.exc
        now = datetime.now(UTC)
        when = retry.when
        if isinstance(when, datetime):
            eta = when if when.tzinfo else when.replace(tzinfo=UTC)
        else:
            eta = now + timedelta(seconds=float(when or 0))
        options = retry.options
        call = dataclasses.replace(
            item.call,
            retries=item.call.retries + 1,
            eta=eta,
            parent_id=item.call.id,  # what Celery 5.7 sends on a retry
            **_retried_arguments(item, options),
            argsrepr=None,
            kwargsrepr=None,
        )
        if item.task.redaction:
            call.argsrepr, call.kwargsrepr = item.task.redaction.reprs(call.args, call.kwargs)
        message = item.delivery.message
        assert message is not None
        conf = worker.app.conf
        encoded = encode_task(
            call,
            serializer=item.task.serializer or conf.task_serializer,
            compression=message.headers.get("compression")
            and (item.task.compression or conf.task_compression),
            max_bytes=conf.task_message_max_bytes,
        )
        queue = options.get("queue") or item.delivery.queue
        delay = (eta - now).total_seconds()
        # A retry due within the horizon goes straight back to its queue, its eta in the message: the
        # worker that takes it waits out the rest in memory (the Eta middleware), as for any ETA task
        # due that soon. Delayed stores may count in coarser steps (RabbitMQ's delay queues: 1 s).
        not_before = eta.timestamp() if delay > conf.worker_eta_horizon else None
        # As a write: a broker outage is waited out; the message is acked only once the retry is out.
        await worker.writer.send(
            lambda: worker.app.publish(queue, encoded, not_before=not_before),
            what=f"send the retry of {item.task.name}[{item.call.id}]",
        )
        worker.log.info(
            "Task %s[%s] retry %d %s: %r",
            item.task.name,
            item.call.id,
            call.retries,
            retry.humanize(),
            retry.exc,
        )


def _retried_arguments(item: WorkItem, options: dict[str, Any]) -> dict[str, Any]:
    """The arguments of the retried call: ``retry(args=...)`` or ``retry(kwargs=...)`` replace the
    parameters they name and keep the others, as Celery 5.7 does (new positional arguments drop the
    keyword arguments they now fill; new keyword arguments take the place of the positional ones)."""
    call = item.call
    new_args, new_kwargs = options.get("args"), options.get("kwargs")
    if new_args is None and new_kwargs is None:
        return {"args": list(call.args), "kwargs": dict(call.kwargs)}
    params = list(inspect.signature(item.task.__wrapped__).parameters.values())[1 if item.task.bind else 0 :]
    positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if any(p.kind is p.VAR_POSITIONAL for p in params) or len(call.args) > len(positional):
        # Names cannot say which is which: each half given replaces that half.
        return {
            "args": list(call.args if new_args is None else new_args),
            "kwargs": dict(call.kwargs if new_kwargs is None else new_kwargs),
        }
    if new_args is not None:
        filled = set(positional[: len(new_args)])
        kwargs = {
            k: v for k, v in (call.kwargs if new_kwargs is None else new_kwargs).items() if k not in filled
        }
        return {"args": list(new_args), "kwargs": kwargs}
    named = dict(zip(positional, call.args, strict=False))
    return {"args": [], "kwargs": {**named, **call.kwargs, **(new_kwargs or {})}}
