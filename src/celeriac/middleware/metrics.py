"""Prometheus metrics of one worker, served at ``/metrics`` on its own loop (``--metrics-port``).

Counts follow the task events (docs/events.md): a task counted ``received`` is one a ``task-received``
event would report, and so on for ``started``, ``succeeded``, ``failed``, ``retried``, ``rejected`` and
``revoked`` (``ignored`` too, which has no event). Gauges (pool, in-flight, prefetched) are read from the
worker when scraped. Every metric is listed in docs/metrics.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from celeriac import __version__, states
from celeriac._prometheus import Counter, Gauge, Histogram, Sample, render, serve
from celeriac.exceptions import ConfigurationError, DecodeError, NotRegistered, Reject, WorkerLostError
from celeriac.middleware.base import Fate, Middleware, WorkItem
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    import asyncio

    from celeriac.brokers.base import Delivery
    from celeriac.protocol.message import TaskCall
    from celeriac.worker.worker import Worker

#: The ``name`` label of a task this worker has not registered: one value, whatever names arrive.
UNREGISTERED = "(unregistered)"

#: The ``state`` label of a run that ended with each status.
_ENDED = {
    states.SUCCESS: "succeeded",
    states.FAILURE: "failed",
    states.RETRY: "retried",
    states.REJECTED: "rejected",
    states.REVOKED: "revoked",
    states.IGNORED: "ignored",
}


def dead_letter_reason(exc: BaseException | None, call: TaskCall | None) -> str:
    """The ``reason`` label of a refused message: what kind of fault set it aside."""
    if isinstance(exc, WorkerLostError):
        return "max_deliveries"
    if call is None or isinstance(exc, DecodeError):
        return "undecodable"
    if isinstance(exc, NotRegistered):
        return "unregistered"
    if isinstance(exc, TypeError):
        return "bad_arguments"
    return "other"


class Metrics(Middleware):
    """Counts what becomes of each message and serves the counts, with the worker's gauges, to Prometheus.

    Off (the default, no ``worker_metrics_port``) it does nothing: none of its hooks is live. On, its
    per-message work is a few dict updates; the text is made only when scraped.
    """

    def __init__(self) -> None:
        self.tasks = Counter(
            "celeriac_tasks_total", "Tasks by name and what became of them.", ("name", "state")
        )
        self.runtime = Histogram(
            "celeriac_task_runtime_seconds",
            "How long tasks ran in the pool, whatever the outcome.",
            ("name",),
        )
        self.queue_wait = Histogram(
            "celeriac_task_queue_wait_seconds",
            "From the worker's receipt of a message (or its ETA, if later) to its task's start in the pool.",
            ("name",),
        )
        self.dead_lettered = Counter(
            "celeriac_dead_lettered_total", "Messages this worker set aside as dead letters.", ("reason",)
        )
        self.server: asyncio.Server | None = None
        #: The port the metrics are served on once started (the one chosen when asked for port 0).
        self.port: int | None = None

    def live(self, worker: Worker, hook: str) -> bool:
        """Whether metrics are served (``worker.metrics_port`` set)."""
        return worker.metrics_port is not None

    async def worker_start(self, worker: Worker) -> None:
        """Serve ``/metrics`` on ``worker.metrics_host``:``worker.metrics_port``, unless metrics are off."""
        if worker.metrics_port is None:
            return
        families = [self.tasks, self.runtime, self.queue_wait, self.dead_lettered, *self._gauges(worker)]
        where = f"{worker.metrics_host}:{worker.metrics_port}"
        try:
            self.server = await serve(worker.metrics_host, worker.metrics_port, lambda: render(families))
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {where} ({exc.strerror or exc}): choose another --metrics-port "
                "(worker_metrics_port), or 0 for any free one"
            ) from exc
        self.port = int(self.server.sockets[0].getsockname()[1])
        worker.log.info("metrics at http://%s:%d/metrics", worker.metrics_host, self.port)

    async def worker_stop(self, worker: Worker) -> None:
        """Stop serving (after the last tasks were counted)."""
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def after_fetch(self, worker: Worker, items: Sequence[WorkItem]) -> None:
        """Count ``received`` what runs here (as ``task-received``), and note when it was received."""
        received = time.time()
        now: datetime | None = None
        horizon = 0.0
        inc = self.tasks.inc
        for item in items:
            item.time_received = received
            call = item.call
            if call.eta is not None or call.expires is not None:  # most have neither: no clock to read
                if now is None:
                    now = datetime.fromtimestamp(received, UTC)
                    horizon = worker.app.conf.worker_eta_horizon
                if not item.runs_here(now, horizon):
                    continue
            inc((item.task.name, "received"))

    def wants_start(self, worker: Worker, item: WorkItem) -> bool:
        """Count ``started`` and the time the task waited, here and now; wants no ``on_start`` coroutine."""
        name = item.task.name
        self.tasks.inc((name, "started"))
        start, since = item.time_start, item.time_received
        if start is not None and since is not None:
            eta = item.call.eta
            if eta is not None:
                since = max(since, eta.timestamp())
            self.queue_wait.observe((name,), start - since if start > since else 0.0)
        return False

    async def on_start(self, worker: Worker, item: WorkItem) -> None:
        """Never called (``wants_start`` says False); overridden so that the worker asks ``wants_start``."""

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """Count how the run ended and how long it took; a ``Reject`` without requeue is a dead letter."""
        name = item.task.name
        if item.fate is Fate.REQUEUE:  # its run does not count: reported rejected, as the event says
            self.tasks.inc((name, "rejected"))
            return
        state = _ENDED.get(outcome.status)
        if state is None:
            return
        self.tasks.inc((name, state))
        self.runtime.observe((name,), outcome.runtime)
        exc = outcome.exc
        if isinstance(exc, Reject) and not exc.requeue and not item.acked:
            self.dead_lettered.inc(("rejected",))

    async def on_refused(
        self,
        worker: Worker,
        delivery: Delivery,
        reason: str,
        exc: BaseException | None,
        call: TaskCall | None,
    ) -> None:
        """Count the dead letter by the kind of its fault, and a task message ``failed`` (as its event)."""
        self.dead_lettered.inc((dead_letter_reason(exc, call),))
        if call is not None:
            self.tasks.inc((self._name(worker, call), "failed"))

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        """Count ``revoked`` a task revoked or expired before it ran."""
        if status == states.REVOKED:
            self.tasks.inc((self._name(worker, call), "revoked"))

    @staticmethod
    def _name(worker: Worker, call: TaskCall) -> str:
        return call.name if call.name in worker.app.tasks else UNREGISTERED

    @staticmethod
    def _gauges(worker: Worker) -> list[Gauge]:
        def one(value: float) -> Iterator[Sample]:
            yield (), value

        host = worker.hostname
        return [
            Gauge(
                "celeriac_worker_info",
                "The worker: its node name, pool and celeriac version (always 1).",
                lambda: [((("hostname", host), ("pool", worker.pool_name), ("version", __version__)), 1)],
            ),
            Gauge("celeriac_worker_up", "1 while the worker runs.", lambda: [((("hostname", host),), 1)]),
            Gauge(
                "celeriac_pool_capacity", "Pool slots (concurrency).", lambda: one(worker.pool.concurrency)
            ),
            Gauge("celeriac_pool_busy", "Pool slots running a task now.", lambda: one(worker.pool.busy)),
            Gauge(
                "celeriac_tasks_active",
                "Tasks running in the pool now.",
                lambda: one(len(worker.active_items())),
            ),
            Gauge(
                "celeriac_tasks_prefetched",
                "Messages fetched and waiting here for a pool slot, their ETA or a rate limit.",
                lambda: one(len(worker.waiting_items())),
            ),
            Gauge(
                "celeriac_prefetch_limit",
                "The most messages the worker holds at once (slots times prefetch multiplier).",
                lambda: one(worker.prefetch_count),
            ),
            Gauge(
                "celeriac_broker_outages_total",
                "Times the worker lost its broker (fetches failing) since it started.",
                lambda: one(worker.broker_outages),
                kind="counter",
            ),
            Gauge(
                "celeriac_broker_fetch_failures_total",
                "Fetches from the broker that failed (each retried after a backoff).",
                lambda: one(worker.fetch_failures),
                kind="counter",
            ),
        ]
