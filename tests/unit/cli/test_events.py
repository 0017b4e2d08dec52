"""``celeriac events``: the live view drawn from the fleet state, and a clear error where there are no
events to follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from celeriac.cli.events import render
from celeriac.cli.main import main
from celeriac.events.state import Fleet


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


def test_events_on_a_broker_that_cannot_broadcast_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-b", f"sqlite:///{tmp_path}/events.sqlite3", "events", "--dump"]) == 2
    assert "no events to follow" in capsys.readouterr().err
