"""The fleet state behind ``celeriac events``: Celery's alive rule, task states merged in any order."""

from __future__ import annotations

from typing import Any

from celeriac.events.state import Fleet


def event(kind: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "hostname": "w1@h", "timestamp": at, "local_received": at, **fields}


def test_a_worker_is_alive_for_twice_its_heartbeat_interval_and_offline_at_once() -> None:
    fleet = Fleet()
    fleet.apply(event("worker-heartbeat", 100.0, freq=2.0, active=1, processed=7, loadavg=[0.5, 0.1, 0.0]))
    worker = fleet.workers["w1@h"]
    assert (worker.active, worker.processed) == (1, 7)
    assert worker.alive(103.9) and not worker.alive(104.1)
    fleet.apply(event("worker-offline", 101.0, freq=2.0))
    assert not worker.alive(101.5)


def test_a_worker_seen_only_through_task_events_lives_a_minute_per_event() -> None:
    fleet = Fleet()
    fleet.apply(event("task-started", 10.0, uuid="t1"))
    assert fleet.workers["w1@h"].alive(129.0) and not fleet.workers["w1@h"].alive(131.0)


def test_task_states_merge_in_any_order_and_old_tasks_are_forgotten() -> None:
    fleet = Fleet(max_tasks=2)
    fleet.apply(event("task-succeeded", 3.0, uuid="t1", result="5", runtime=0.25))
    fleet.apply(event("task-received", 1.0, uuid="t1", name="add", args="(2, 3)", kwargs="{}"))
    fleet.apply(event("task-started", 2.0, uuid="t1"))
    task = fleet.tasks["t1"]
    assert (task.state, task.name, task.result, task.runtime, task.worker) == (
        "SUCCESS",
        "add",
        "5",
        0.25,
        "w1@h",
    )
    assert (task.received, task.started, task.ended) == (1.0, 2.0, 3.0)
    fleet.apply(event("task-failed", 4.0, uuid="t2", exception="ValueError('x')"))
    fleet.apply(event("task-sent", 5.0, uuid="t3", name="mul"))
    assert list(fleet.tasks) == ["t2", "t3"] and fleet.tasks["t3"].state == "PENDING"
    assert fleet.tasks["t2"].exception == "ValueError('x')"
