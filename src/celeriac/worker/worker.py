"""The worker: one asyncio loop that fetches, decodes, hands tasks to a pool and acks (D4).

Everything else a worker does — expiry, revocation, ETA, rate limits, retries, results, workflows —
is middleware (``celeriac.middleware``); this module is the loop and its shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import threading
from collections.abc import Coroutine, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from celeriac import states
from celeriac._exceptions import exception_to_dict
from celeriac.backends.base import EXTENDED_FIELDS, Backend, ResultMeta
from celeriac.brokers.base import Broker, Delivery
from celeriac.exceptions import DecodeError, NotRegistered, Reject, WorkerLostError
from celeriac.middleware import Middleware, Skip, WorkItem, default_middleware
from celeriac.protocol import decode_task
from celeriac.worker._batch import Batcher
from celeriac.worker.pools import pool_class
from celeriac.worker.pools.base import Job, Outcome, Pool

if TYPE_CHECKING:
    from celeriac.app import Celeriac


class Worker:
    """A worker serving ``queues`` with a pool of ``concurrency`` slots.

    ``run()`` blocks until SIGTERM/SIGINT (warm shutdown: running tasks finish, waiting ones go back to
    the broker) or a second signal (cold: running tasks are stopped and their messages requeued).
    ``app_path`` is how child processes import the app (``-A`` of the CLI).
    """

    def __init__(
        self,
        app: Celeriac,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int | None = None,
        pool: str | None = None,
        hostname: str | None = None,
        app_path: str | None = None,
        max_tasks_per_child: int | None = None,
        max_memory_per_child: int | None = None,
        prefetch_multiplier: int | None = None,
        shutdown_timeout: float | None = None,
        middleware: Sequence[Middleware] | None = None,
        fetch_timeout: float = 1.0,
    ) -> None:
        conf = app.conf
        self.app = app
        self.queues = list(queues or [conf.task_default_queue])
        self.pool_name = pool or conf.worker_pool
        self.concurrency = concurrency or conf.worker_concurrency or os.cpu_count() or 1
        if self.pool_name == "solo":
            self.concurrency = 1
        self.hostname = hostname or f"celeriac@{socket.gethostname()}"
        self.app_path = app_path
        self.max_tasks_per_child = max_tasks_per_child or conf.worker_max_tasks_per_child
        self.max_memory_per_child = max_memory_per_child or conf.worker_max_memory_per_child
        self.prefetch_multiplier = max(1, prefetch_multiplier or conf.worker_prefetch_multiplier)
        self.shutdown_timeout = (
            shutdown_timeout if shutdown_timeout is not None else conf.worker_shutdown_timeout
        )
        self.middleware = list(middleware) if middleware is not None else default_middleware()
        self.fetch_timeout = fetch_timeout
        self.pid = os.getpid()
        self.log = logging.getLogger("celeriac.worker")
        self.broker: Broker
        self.backend: Backend | None = None
        self.pool: Pool
        self.stats: dict[str, int] = {
            "received": 0,
            "succeeded": 0,
            "failed": 0,
            "retried": 0,
            "dead_lettered": 0,
            "requeued": 0,
        }
        self._stop_level = 0
        self._stopped = asyncio.Event()
        self._slot_freed: asyncio.Event | None = None
        self._waiting: dict[asyncio.Task[None], WorkItem] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._acks: Batcher[Delivery]
        self._slots: asyncio.Semaphore
        self._stores: Batcher[ResultMeta]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self.ready = asyncio.Event()

    # -- lifecycle ----------------------------------------------------------------------------------
    def run(self) -> int:
        """Serve until stopped; return the exit code (0 after a warm or cold shutdown)."""
        return asyncio.run(self.arun())

    async def arun(self, install_signals: bool = True) -> int:
        loop = self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._slot_freed = asyncio.Event()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        self.app.import_includes()
        self.broker = self.app.broker()
        self.backend = None if self.app.backend_url.startswith("disabled") else self.app.backend()
        for queue in self.queues:
            await self.broker.declare(queue)
        self.pool = pool_class(self.pool_name)(
            self.app,
            self.concurrency,
            app_path=self.app_path,
            max_tasks_per_child=self.max_tasks_per_child,
            max_memory_per_child=self.max_memory_per_child,
            hostname=self.hostname,
        )
        await self.pool.start()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._acks = Batcher(self.broker.ack)
        self._stores = Batcher(self._store_batch)
        for mw in self.middleware:
            await mw.worker_start(self)
        self.log.info(
            "%s ready: pool=%s concurrency=%d queues=%s broker=%s",
            self.hostname,
            self.pool_name,
            self.concurrency,
            ",".join(self.queues),
            _safe_url(self.app.broker_url),
        )
        self.ready.set()
        try:
            await self._consume()
        finally:
            await self._shutdown()
            if install_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        return 0

    def request_stop(self, cold: bool = False) -> None:
        """Ask for a warm shutdown; asked again (or with ``cold``), a cold one. Safe from any thread."""
        loop = self._loop
        if loop is None:
            return
        if threading.get_ident() != self._thread:
            loop.call_soon_threadsafe(self.request_stop, cold)
            return
        self._stop_level = max(self._stop_level + 1, 2 if cold else 1)
        if self._stop_level == 1:
            self.log.info(
                "warm shutdown: finishing %d running task(s); signal again to stop now", len(self._running)
            )
        else:
            self.log.warning("cold shutdown: stopping running tasks; their messages go back to the queue")
            self._spawn(self.pool.stop(cold=True))
        self._stopped.set()
        if self._slot_freed is not None:
            self._slot_freed.set()

    async def _shutdown(self) -> None:
        for task in list(self._waiting):
            task.cancel()
        await asyncio.gather(*self._waiting, return_exceptions=True)
        self._stop_level = max(self._stop_level, 1)  # the loop also ends when a caller stops it
        if self._running:
            _, pending = await asyncio.wait(set(self._running), timeout=self.shutdown_timeout)
            if pending:
                self.log.warning("shutdown timeout: %d task(s) still running; stopping them", len(pending))
                await self.pool.stop(cold=True)
                await asyncio.wait(pending, timeout=5)
        await self.pool.stop(cold=self._stop_level > 1)
        for mw in self.middleware:
            await mw.worker_stop(self)
        await self.broker.close()
        if self.backend is not None:
            await self.backend.close()
        self.log.info("%s stopped: %s", self.hostname, ", ".join(f"{k}={v}" for k, v in self.stats.items()))

    # -- the loop -----------------------------------------------------------------------------------
    async def _consume(self) -> None:
        assert self._slot_freed is not None
        while not self._stop_level:
            room = self.concurrency * self.prefetch_multiplier - len(self._waiting) - len(self._running)
            if room <= 0:
                self._slot_freed.clear()
                await self._slot_freed.wait()
                continue
            deliveries = await self.broker.fetch(self.queues, room, self.fetch_timeout)
            if not deliveries:
                continue
            if self._stop_level:
                await self.broker.release(deliveries)
                break
            items = [item for item in [await self._accept(d) for d in deliveries] if item is not None]
            for mw in self.middleware:
                await mw.after_fetch(self, [i for i in items if "skip" not in i.extra])
            for item in items:
                skip = item.extra.get("skip")
                if skip is not None:
                    await self._dispose(item, *skip)
                    continue
                task = asyncio.create_task(self._process(item))
                self._waiting[task] = item
                task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._waiting.pop(task, None)
        self._running.discard(task)
        if self._slot_freed is not None:
            self._slot_freed.set()
        if not task.cancelled() and task.exception() is not None:
            self.log.error("internal error handling a task", exc_info=task.exception())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a coroutine beside the loop, keeping a reference until it ends (asyncio holds weak ones)."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def skip(self, item: WorkItem, action: Literal["ack", "release", "reject"], reason: str = "") -> None:
        """Drop an item from the batch being started (for ``after_fetch`` hooks)."""
        item.extra["skip"] = (action, reason)

    async def _accept(self, delivery: Delivery) -> WorkItem | None:
        """Decode and validate; bad messages are dead-lettered here with their reason."""
        self.stats["received"] += 1
        message = delivery.message
        if message is None:
            await self.dead_letter(delivery, f"unreadable message: {delivery.error}")
            return None
        limit = self.app.conf.broker_max_deliveries
        if limit and delivery.deliveries > limit:
            await self.dead_letter(
                delivery,
                f"delivered {delivery.deliveries} times without finishing: the process running it "
                f"died each time (broker_max_deliveries={limit})",
                WorkerLostError("task killed its worker too many times"),
            )
            return None
        conf = self.app.conf
        try:
            call = decode_task(message, accept=conf.accept_content, max_bytes=conf.task_message_max_bytes)
        except DecodeError as exc:
            await self.dead_letter(delivery, f"undecodable message: {exc.reason}", exc)
            return None
        task = self.app.tasks.get(call.name)
        if task is None:
            known = ", ".join(sorted(n for n in self.app.tasks if not n.startswith("celery."))[:20])
            await self.dead_letter(
                delivery,
                f"unknown task {call.name!r}: not registered on this worker (registered: {known}); "
                "is the module that defines it in -A or include?",
                NotRegistered(f"task {call.name!r} is not registered on {self.hostname}"),
                call.id,
            )
            return None
        try:
            task.check_arguments(call.args, call.kwargs)
        except TypeError as exc:
            await self.dead_letter(delivery, f"wrong arguments for {call.name}: {exc}", exc, call.id)
            return None
        self.log.info("Task %s[%s] received", call.name, call.id)
        return WorkItem(delivery=delivery, call=call, task=task)

    async def _process(self, item: WorkItem) -> None:
        try:
            for mw in self.middleware:
                await mw.before_start(self, item)
            # Until a pool slot is free the item is only waiting: a warm shutdown hands it back.
            await self._slots.acquire()
        except Skip as skip:
            await self._dispose(item, skip.action, skip.reason)
            return
        except asyncio.CancelledError:
            await self.broker.release([item.delivery])
            raise
        current = asyncio.current_task()
        assert current is not None
        self._waiting.pop(current, None)
        self._running.add(current)
        try:
            if not item.acks_late:
                await self.ack(item.delivery)
                item.acked = True
            outcome = await self.pool.run(self._job(item), lambda: self._started(item))
        finally:
            self._slots.release()
        self._log_outcome(item, outcome)
        reject_lost = item.task.reject_on_worker_lost
        if reject_lost is None:
            reject_lost = self.app.conf.task_reject_on_worker_lost
        # A child killed at its hard time limit failed for good; only an unexplained death requeues.
        lost = outcome.worker_lost and isinstance(outcome.exc, WorkerLostError)
        if lost and reject_lost is not False and not item.acked:
            item.extra["requeue"] = True
        try:
            for mw in self.middleware:
                await mw.after_outcome(self, item, outcome)
        except Exception:
            self.log.exception(
                "Task %s[%s]: finishing failed; its message goes back to the queue",
                item.task.name,
                item.call.id,
            )
            item.extra["requeue"] = True
        if item.extra.get("requeue"):
            self.stats["requeued"] += 1
            if item.acked:
                pass
            elif self._stop_level:
                # Stopped by this worker's own shutdown, not killed by the task: this delivery must not
                # count towards broker_max_deliveries, or a long task dies of rolling restarts.
                await self.broker.release([item.delivery])
            else:
                await self.broker.reject(item.delivery, requeue=True, reason="worker lost")
        elif outcome.status == states.REJECTED and isinstance(outcome.exc, Reject):
            await self._rejected(item, outcome.exc)
        elif not item.acked:
            await self.ack(item.delivery)

    async def _rejected(self, item: WorkItem, reject: Reject) -> None:
        """A task raised ``Reject``: requeue its message, or dead-letter it and fail its result."""
        if reject.requeue and not item.acked:
            self.stats["requeued"] += 1
            await self.broker.reject(item.delivery, requeue=True, reason="requeued by the task")
            return
        reason = f"rejected by the task {item.task.name}: {reject.reason or 'no reason given'}"
        if not item.acked:
            await self.dead_letter(item.delivery, reason, reject, item.call.id)
        else:
            self.log.error(
                "Task %s[%s] %s (already acked: acks_late is off)", item.task.name, item.call.id, reason
            )
            await self.store_state(item, states.FAILURE, reject, traceback=reason)

    def _started(self, item: WorkItem) -> None:
        for mw in self.middleware:
            self._spawn(mw.on_start(self, item))

    def _job(self, item: WorkItem) -> Job:
        call = item.call
        return Job(
            id=call.id,
            name=call.name,
            args=call.args,
            kwargs=call.kwargs,
            time_limit=call.time_limit if call.time_limit is not None else item.task.time_limit,
            soft_time_limit=call.soft_time_limit
            if call.soft_time_limit is not None
            else item.task.soft_time_limit,
            request={
                "id": call.id,
                "task": call.name,
                "args": call.args,
                "kwargs": call.kwargs,
                "retries": call.retries,
                "eta": call.eta,
                "expires": call.expires,
                "hostname": self.hostname,
                "delivery_info": {
                    "exchange": "",
                    "routing_key": item.delivery.queue,
                    "priority": call.priority,
                    "redelivered": item.delivery.redelivered,
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
                "ignore_result": item.ignore_result,
                "headers": call.headers,
            },
        )

    def _log_outcome(self, item: WorkItem, outcome: Outcome) -> None:
        name, tid = item.task.name, item.call.id
        if outcome.status == states.SUCCESS:
            self.stats["succeeded"] += 1
            self.log.info("Task %s[%s] succeeded in %.4fs: %.200r", name, tid, outcome.runtime, outcome.value)
        elif outcome.status == states.RETRY:
            self.stats["retried"] += 1
        elif outcome.status == states.FAILURE:
            self.stats["failed"] += 1
            if outcome.expected:
                self.log.info("Task %s[%s] raised expected: %r", name, tid, outcome.exc)
            else:
                self.log.error(
                    "Task %s[%s] failed in %.4fs: %r\n%s",
                    name,
                    tid,
                    outcome.runtime,
                    outcome.exc,
                    outcome.traceback or "",
                )

    async def _dispose(self, item: WorkItem, action: str, reason: str) -> None:
        self.log.info("Task %s[%s] not run: %s", item.task.name, item.call.id, reason)
        if action == "ack":
            await self.ack(item.delivery)
        elif action == "release":
            await self.broker.release([item.delivery])
        else:
            await self.dead_letter(item.delivery, reason)

    # -- shared by middleware -----------------------------------------------------------------------
    async def ack(self, delivery: Delivery) -> None:
        """Ack one delivery; acks made in the same moment travel to the broker together."""
        await self._acks.add(delivery)

    async def _store_batch(self, metas: Sequence[ResultMeta]) -> list[BaseException | None] | None:
        assert self.backend is not None
        try:
            await self.backend.store(metas)
            return None
        except (TypeError, ValueError):
            if len(metas) == 1:
                raise
        # One record could not be serialized: store the others one by one and fail only that one.
        errors: list[BaseException | None] = []
        for meta in metas:
            try:
                await self.backend.store([meta])
                errors.append(None)
            except (TypeError, ValueError) as exc:
                errors.append(exc)
        return errors

    async def dead_letter(
        self, delivery: Delivery, reason: str, exc: BaseException | None = None, task_id: str | None = None
    ) -> None:
        """Set a message aside with ``reason``, log it, and fail its result so no caller waits forever."""
        self.stats["dead_lettered"] += 1
        self.log.error("message dead-lettered from queue %r: %s", delivery.queue, reason)
        await self.broker.reject(delivery, requeue=False, reason=reason)
        task_id = task_id or (delivery.message.task_id if delivery.message else None)
        if exc is not None and task_id and self.backend is not None:
            with contextlib.suppress(Exception):
                await self.backend.store(
                    [
                        ResultMeta(
                            task_id=task_id,
                            status=states.FAILURE,
                            result=exception_to_dict(exc),
                            traceback=reason,
                            date_done=datetime.now(UTC),
                        )
                    ]
                )

    async def store_state(
        self,
        item: WorkItem,
        status: str,
        result: Any,
        *,
        traceback: str | None = None,
        children: Sequence[str] = (),
    ) -> None:
        """Write a task's state to the backend (no-op without one)."""
        if self.backend is None:
            return
        call = item.call
        meta = ResultMeta(
            task_id=call.id,
            status=status,
            result=exception_to_dict(result) if isinstance(result, BaseException) else result,
            traceback=traceback,
            date_done=datetime.now(UTC) if status in states.READY_STATES else None,
            children=[[[child, None], None] for child in children],
            parent_id=call.parent_id,
            group_id=call.group_id,
        )
        if self.app.conf.result_extended:
            values = (call.name, call.args, call.kwargs, self.hostname, call.retries, item.delivery.queue)
            meta.extended = dict(zip(EXTENDED_FIELDS, values, strict=True))
        try:
            await self._stores.add(meta)
        except (TypeError, ValueError) as exc:
            if status != states.SUCCESS:
                raise
            error = TypeError(
                f"the result of {call.name}[{call.id}] cannot be stored with the "
                f"{self.backend.serializer!r} serializer: {exc}"
            )
            meta.status, meta.result = states.FAILURE, exception_to_dict(error)
            await self.backend.store([meta])


def _safe_url(url: str) -> str:
    """The URL with its password hidden, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"
