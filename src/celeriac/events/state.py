"""What events tell about a fleet: its workers (alive or not) and its recent tasks, as Celery's
``events.State`` keeps them, in small. ``celeriac events`` draws its live view from it.

A worker is alive while its last heartbeat is younger than twice its ``freq`` (Celery's rule) and it
has not said ``worker-offline``. Task events count as heartbeats too; a worker first seen through
them is given a ``freq`` of 60 s, as Celery gives it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Fleet", "TaskView", "WorkerView"]

#: The state a task event puts a task in.
STATES = {
    "task-sent": "PENDING",
    "task-received": "RECEIVED",
    "task-started": "STARTED",
    "task-succeeded": "SUCCESS",
    "task-failed": "FAILURE",
    "task-retried": "RETRY",
    "task-rejected": "REJECTED",
    "task-revoked": "REVOKED",
}
#: States a late ``received`` or ``started`` (events may arrive out of order) does not overwrite.
FINAL = frozenset({"SUCCESS", "FAILURE", "REJECTED", "REVOKED"})


@dataclass(slots=True)
class WorkerView:
    """A worker as its events describe it."""

    hostname: str
    freq: float = 60.0
    active: int = 0
    processed: int = 0
    loadavg: list[float] = field(default_factory=list)
    sw_ident: str = ""
    sw_ver: str = ""
    last_seen: float = 0.0
    offline: bool = False

    def alive(self, now: float | None = None) -> bool:
        """Whether it beat within twice its heartbeat interval and has not said goodbye."""
        now = time.time() if now is None else now
        return not self.offline and now < self.last_seen + 2 * self.freq


@dataclass(slots=True)
class TaskView:
    """A task as its events describe it; times are the events' own timestamps."""

    uuid: str
    name: str | None = None
    state: str = "PENDING"
    worker: str | None = None
    args: str | None = None
    kwargs: str | None = None
    received: float | None = None
    started: float | None = None
    ended: float | None = None
    runtime: float | None = None
    result: str | None = None
    exception: str | None = None


class Fleet:
    """Workers and the ``max_tasks`` most recently seen tasks, updated with ``apply(event)``."""

    def __init__(self, max_tasks: int = 1000) -> None:
        self.max_tasks = max_tasks
        self.workers: dict[str, WorkerView] = {}
        self.tasks: OrderedDict[str, TaskView] = OrderedDict()
        self.events = 0

    def apply(self, event: dict[str, Any]) -> None:
        """Take one event into account."""
        self.events += 1
        kind = event.get("type", "")
        hostname = event.get("hostname")
        seen = event.get("local_received") or time.time()
        if kind.startswith("worker-") and isinstance(hostname, str):
            self._worker_event(kind, hostname, event, seen)
        elif kind in STATES and isinstance(event.get("uuid"), str):
            self._task_event(kind, event, seen)

    def _worker_event(self, kind: str, hostname: str, event: dict[str, Any], seen: float) -> None:
        worker = self.workers.get(hostname) or self.workers.setdefault(hostname, WorkerView(hostname))
        for name in ("freq", "active", "processed", "loadavg", "sw_ident", "sw_ver"):
            if name in event:
                setattr(worker, name, event[name])
        worker.offline = kind == "worker-offline"
        worker.last_seen = seen

    def _task_event(self, kind: str, event: dict[str, Any], seen: float) -> None:
        uuid = event["uuid"]
        task = self.tasks.pop(uuid, None) or TaskView(uuid)
        self.tasks[uuid] = task  # most recent last
        while len(self.tasks) > self.max_tasks:
            self.tasks.popitem(last=False)
        state = STATES[kind]
        if not (task.state in FINAL and state in ("PENDING", "RECEIVED", "STARTED")):
            task.state = state
        stamp = event.get("timestamp")
        for name in ("name", "args", "kwargs", "runtime", "result", "exception"):
            if event.get(name) is not None:
                setattr(task, name, event[name])
        if kind == "task-received":
            task.received = stamp
        elif kind == "task-started":
            task.started = stamp
        elif state in FINAL:
            task.ended = stamp
        hostname = event.get("hostname")
        if kind != "task-sent" and isinstance(hostname, str):
            task.worker = hostname
            worker = self.workers.setdefault(hostname, WorkerView(hostname))
            worker.last_seen = max(worker.last_seen, seen)
            worker.offline = False
