"""``celeriac events``: the live view drawn from the fleet state, and a clear error where there are no
events to follow."""

from __future__ import annotations

from typing import Any

import pytest

from celeriac import brokers
from celeriac.brokers import Broker
from celeriac.cli.events import TextLines, render
from celeriac.cli.main import main
from celeriac.events.state import Fleet
from celeriac.memory.broker import MemoryBroker


def event(kind: str, at: float, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "hostname": "w1@h", "timestamp": at, "local_received": at, **fields}


def test_the_live_view_lists_workers_and_the_newest_tasks_first() -> None:
    fleet = Fleet()
    fleet.apply(event("worker-heartbeat", 100.0, freq=2.0, active=2, processed=9, loadavg=[1.0, 0.5, 0.25]))
    fleet.apply(event("task-received", 100.0, uuid="first", name="add"))
    fleet.apply(event("task-succeeded", 100.5, uuid="second", name="mul", runtime=0.125))
    text = render(fleet, now=101.0)
    assert "w1@h" in text and "online" in text and "1.00 0.50 0.25" in text
    assert text.index("second") < text.index("first") and "0.125s" in text and "RECEIVED" in text
    assert "offline" in render(fleet, now=200.0)


class QuietBroker(MemoryBroker):
    """A plug-in broker without broadcasts: it keeps the Broker contract's refusing defaults."""

    broadcast = Broker.broadcast  # type: ignore[assignment]
    subscribe = Broker.subscribe  # type: ignore[assignment]


def test_events_on_a_broker_that_cannot_broadcast_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Every broker celeriac ships broadcasts (SQL through its broadcast table); a plug-in may not.
    monkeypatch.setitem(brokers._BUILTIN, "quiet", f"{__name__}:QuietBroker")
    assert main(["-b", "quiet://events", "events", "--dump"]) == 2
    assert "no events to follow" in capsys.readouterr().err


def test_text_lines_name_each_event_and_remember_the_task_name_by_id() -> None:
    lines = TextLines(remembered=2)
    received = event(
        "task-received", 1796666400.25, uuid="t1", name="proj.add", args="(2, 2)", pid=7, clock=3
    )
    assert lines.line(received) == (
        "w1@h [2026-12-07 18:00:00.250] task-received uuid=t1 name=proj.add args=(2, 2)"
    )
    done = event("task-succeeded", 1796666400.5, uuid="t1", result="4", runtime=0.001)
    assert lines.line(done).endswith("task-succeeded uuid=t1 name=proj.add result=4 runtime=0.001")
    beat = event("worker-heartbeat", 1796666401.0, active=0, processed=1, loadavg=[0.5, 0.25, 0.0])
    assert lines.line(beat) == (
        "w1@h [2026-12-07 18:00:01.000] worker-heartbeat active=0 loadavg=[0.5, 0.25, 0.0] processed=1"
    )
    for n in range(3):  # only the latest ``remembered`` names are kept
        lines.line(event("task-received", 1.0, uuid=f"x{n}", name="other"))
    assert "name=" not in lines.line(event("task-started", 2.0, uuid="t1"))
    assert lines.line({"type": "odd"}) == "? [?] odd"
