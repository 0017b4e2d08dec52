"""The dashboard's metrics from events (names remembered by task id, a cap on names, workers up by their
heartbeats on a fake clock) and from the broker (read at most once per cache period), on the memory broker."""

from __future__ import annotations

import asyncio
from typing import Any

from celeriac import Celeriac
from celeriac._prometheus import render
from celeriac.cli.dashboard import is_loopback
from celeriac.dashboard.aggregate import OTHER, UNKNOWN, BrokerReadings, FleetMetrics, exposition
from tests.scrape import parse, value


def event(kind: str, uuid: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": uuid, "hostname": "w1@test", "timestamp": 0.0, **fields}


def test_names_are_remembered_by_task_id_until_the_last_event() -> None:
    metrics = FleetMetrics(["add"])
    metrics.apply(event("task-received", "a", name="add"))
    metrics.apply(event("task-started", "a"))
    metrics.apply(event("task-succeeded", "a", runtime=0.02))
    metrics.apply(event("task-started", "never-received"))
    samples = parse(render(metrics.families()))
    for state in ("received", "started", "succeeded"):
        assert value(samples, "celeriac_tasks_total", name="add", state=state) == 1
    assert value(samples, "celeriac_tasks_total", name=UNKNOWN, state="started") == 1
    assert value(samples, "celeriac_task_runtime_seconds_bucket", name="add", le="0.025") == 1
    assert value(samples, "celeriac_events_total") == 4
    assert metrics._names == {}  # a finished task's id is forgotten


def test_names_beyond_the_cap_count_as_other_but_registered_ones_always_count() -> None:
    metrics = FleetMetrics(["registered"], max_names=2)
    for index in range(5):
        metrics.apply(event("task-received", f"id{index}", name=f"dynamic-{index}"))
    metrics.apply(event("task-received", "r", name="registered"))
    samples = parse(render(metrics.families()))
    assert value(samples, "celeriac_tasks_total", name="dynamic-0", state="received") == 1
    assert value(samples, "celeriac_tasks_total", name="dynamic-1", state="received") == 1
    assert value(samples, "celeriac_tasks_total", name=OTHER, state="received") == 3
    assert value(samples, "celeriac_tasks_total", name="registered", state="received") == 1


def test_a_worker_is_up_while_its_heartbeats_arrive() -> None:
    now = [1000.0]
    metrics = FleetMetrics(clock=lambda: now[0])
    beat = {"type": "worker-heartbeat", "freq": 2.0, "active": 3, "local_received": 1000.0}
    metrics.apply({**beat, "hostname": "w1@test"})
    metrics.apply({**beat, "hostname": "w2@test", "local_received": 995.0})
    samples = parse(render(metrics.families()))
    assert value(samples, "celeriac_worker_up", hostname="w1@test") == 1
    assert value(samples, "celeriac_worker_up", hostname="w2@test") == 0  # silent for over 2 x freq
    assert value(samples, "celeriac_workers_up") == 1
    assert value(samples, "celeriac_worker_active", hostname="w1@test") == 3
    now[0] = 1005.0
    assert value(parse(render(metrics.families())), "celeriac_workers_up") == 0


def test_the_broker_is_read_at_most_once_per_cache_period() -> None:
    app = Celeriac("dash", broker="memory://dashboard-cache", backend="memory://dashboard-cache")
    add = app.task(name="add")(lambda x, y: x + y)
    clock = [0.0]
    readings = BrokerReadings(["celery"], cache_seconds=2.0, clock=lambda: clock[0])

    async def scenario() -> list[float]:
        broker = app.broker()
        seen = []
        await add.adelay(1, 2)
        await readings.refresh(broker)
        seen.append(
            value(parse(exposition(FleetMetrics(), readings)), "celeriac_queue_length", queue="celery")
        )
        await add.adelay(1, 2)
        clock[0] = 1.0  # within the cache period: the last reading stands
        await readings.refresh(broker)
        seen.append(readings.lengths["celery"])
        clock[0] = 2.5
        await readings.refresh(broker)
        seen.append(readings.lengths["celery"])
        return seen

    try:
        assert asyncio.run(scenario()) == [1, 1, 2]
    finally:
        app.close()


def test_loopback_is_told_from_the_rest() -> None:
    assert all(is_loopback(host) for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"))
    assert not any(is_loopback(host) for host in ("0.0.0.0", "::", "10.0.0.5", "example.org"))
