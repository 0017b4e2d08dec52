"""What the dashboard's ``/metrics`` shows: task counts and runtimes summed from the events of every
worker, workers up by their heartbeats, and queue lengths and dead letters read from the broker.

Events go through ``FleetMetrics.apply`` as they arrive; the broker is read only when scraped, at most
once per ``cache_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from celeriac._prometheus import Counter, Gauge, Histogram, Sample, render
from celeriac.events.state import Fleet

if TYPE_CHECKING:
    from celeriac.brokers.base import Broker

__all__ = ["OTHER", "UNKNOWN", "BrokerReadings", "FleetMetrics"]

#: The ``name`` label of tasks beyond ``max_names`` distinct names (none of them registered in the app).
OTHER = "(other)"
#: The ``name`` label of a task whose name the dashboard never heard (it was received before it started).
UNKNOWN = "(unknown)"

#: The ``state`` label of each task event.
_STATES = {
    "task-sent": "sent",
    "task-received": "received",
    "task-started": "started",
    "task-succeeded": "succeeded",
    "task-failed": "failed",
    "task-retried": "retried",
    "task-rejected": "rejected",
    "task-revoked": "revoked",
}
#: Events after which a task is done with (a retried task is received again, under the same id).
_LAST = frozenset({"task-succeeded", "task-failed", "task-rejected", "task-revoked"})


class FleetMetrics:
    """Task counts by name and state, task runtimes, and workers, from the events of a whole fleet.

    Only ``task-sent`` and ``task-received`` carry the task's name: it is remembered by task id until the
    task's last event (at most ``max_tasks`` ids; the oldest are forgotten first). Names the app has not
    registered are labels too, up to ``max_names`` distinct ones; further ones count as ``(other)``.
    """

    def __init__(
        self,
        registered: Iterable[str] = (),
        *,
        max_names: int = 200,
        max_tasks: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.registered = frozenset(registered)
        self.max_names, self.max_tasks, self.clock = max_names, max_tasks, clock
        self.fleet = Fleet()
        self.events = 0
        self._names: dict[str, str] = {}  # task id -> name label, until its last event
        self._seen_names: set[str] = set()
        self.tasks = Counter(
            "celeriac_tasks_total", "Task events of every worker, by task name and state.", ("name", "state")
        )
        self.runtime = Histogram(
            "celeriac_task_runtime_seconds", "How long tasks that succeeded ran (task-succeeded).", ("name",)
        )

    def apply(self, event: dict[str, Any]) -> None:
        """Take one event into account."""
        self.events += 1
        self.fleet.apply(event)
        kind = event.get("type")
        state = _STATES.get(kind) if isinstance(kind, str) else None
        uuid = event.get("uuid")
        if state is None or not isinstance(uuid, str):
            return
        name = event.get("name")
        if isinstance(name, str) and name:
            label = self._names[uuid] = self._label(name)
            if len(self._names) > self.max_tasks:
                del self._names[next(iter(self._names))]
        else:
            label = self._names.get(uuid, UNKNOWN)
        if kind in _LAST:
            self._names.pop(uuid, None)
        self.tasks.inc((label, state))
        runtime = event.get("runtime")
        if kind == "task-succeeded" and isinstance(runtime, int | float):
            self.runtime.observe((label,), float(runtime))

    def _label(self, name: str) -> str:
        if name in self.registered or name in self._seen_names:
            return name
        if len(self._seen_names) >= self.max_names:
            return OTHER
        self._seen_names.add(name)
        return name

    def worker_samples(self) -> list[Sample]:
        """``celeriac_worker_up``: 1 for each worker whose heartbeat is recent, 0 for the others."""
        now = self.clock()
        return [
            ((("hostname", host),), 1 if worker.alive(now) else 0)
            for host, worker in sorted(self.fleet.workers.items())
        ]

    def families(self) -> list[Any]:
        """The metric families these events make, for ``render``."""

        def up() -> list[Sample]:
            return [((), sum(value for _, value in self.worker_samples()))]

        def active() -> list[Sample]:
            now = self.clock()
            return [
                ((("hostname", host),), worker.active)
                for host, worker in sorted(self.fleet.workers.items())
                if worker.alive(now)
            ]

        return [
            self.tasks,
            self.runtime,
            Gauge("celeriac_worker_up", "1 while a worker's heartbeats arrive, else 0.", self.worker_samples),
            Gauge("celeriac_workers_up", "Workers whose heartbeats arrive.", up),
            Gauge("celeriac_worker_active", "Tasks a live worker runs, as its last heartbeat says.", active),
            Gauge(
                "celeriac_events_total",
                "Events the dashboard received.",
                lambda: [((), self.events)],
                "counter",
            ),
        ]


class BrokerReadings:
    """Queue lengths and dead letters, read from the broker when scraped, at most once per
    ``cache_seconds`` (scrapes in between get the last reading).

    Dead letters are counted from the newest ``dead_letter_limit`` (reading them costs their bodies);
    a broker that cannot be read leaves the last reading and counts a read error.
    """

    def __init__(
        self,
        queues: Sequence[str],
        *,
        cache_seconds: float = 2.0,
        dead_letter_limit: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queues = list(queues)
        self.cache_seconds, self.dead_letter_limit, self.clock = cache_seconds, dead_letter_limit, clock
        self.lengths: dict[str, int] = {}
        self.dead_letters: dict[str, int] = {}
        self.errors = 0
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def refresh(self, broker: Broker) -> None:
        """Read the broker again unless the last reading is younger than ``cache_seconds``."""
        async with self._lock:
            if self._read_at is not None and self.clock() - self._read_at < self.cache_seconds:
                return
            self._read_at = self.clock()  # a failing broker is not asked on every scrape either
            try:
                lengths = {queue: await broker.size(queue) for queue in self.queues}
                dead: dict[str, int] = dict.fromkeys(self.queues, 0)
                for letter in await broker.dead_letters(limit=self.dead_letter_limit):
                    dead[letter.queue] = dead.get(letter.queue, 0) + 1
            except Exception:
                self.errors += 1
                raise
            self.lengths, self.dead_letters = lengths, dead

    def families(self) -> list[Gauge]:
        """The metric families of the last reading, for ``render``."""

        def by_queue(attribute: str) -> Callable[[], list[Sample]]:
            # The reading is replaced as a whole: look it up when scraped, not now.
            def read() -> list[Sample]:
                values: dict[str, int] = getattr(self, attribute)
                return [((("queue", queue),), count) for queue, count in sorted(values.items())]

            return read

        return [
            Gauge(
                "celeriac_queue_length",
                "Messages waiting in each queue (delayed ones too).",
                by_queue("lengths"),
            ),
            Gauge(
                "celeriac_dead_letters",
                f"Dead letters by the queue they came from (of the newest {self.dead_letter_limit}).",
                by_queue("dead_letters"),
            ),
            Gauge(
                "celeriac_broker_read_errors_total",
                "Scrapes that could not read the broker (the last reading was shown).",
                lambda: [((), self.errors)],
                "counter",
            ),
        ]


def exposition(fleet: FleetMetrics, readings: BrokerReadings) -> str:
    """The dashboard's whole ``/metrics`` text."""
    return render([*fleet.families(), *readings.families()])
