"""Retries: a task that ended with ``Retry`` is sent again, with ``retries + 1``, before its ack."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

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
            args=list(options.get("args", item.call.args)),
            kwargs=dict(options.get("kwargs", item.call.kwargs)),
            argsrepr=None,
            kwargsrepr=None,
        )
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
        await worker.app.publish(queue, encoded, not_before=not_before)
        worker.log.info(
            "Task %s[%s] retry %d %s: %r",
            item.task.name,
            item.call.id,
            call.retries,
            retry.humanize(),
            retry.exc,
        )
