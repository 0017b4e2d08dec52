"""``acks_late=False`` (at most once): a task whose pool process dies is acked already, so it is not run
again, and its result says it was lost (WorkerLostError), never left PENDING."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from celeriac import Celeriac, states
from celeriac.exceptions import WorkerLostError
from celeriac.testing import start_worker


def test_an_early_acked_task_whose_process_dies_is_reported_lost_and_not_run_again(
    celeriac_app: Celeriac, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"

    @celeriac_app.task(name="early.dies", acks_late=False)
    def dies() -> None:
        with runs.open("a") as out:
            out.write("run\n")
        os.kill(os.getpid(), signal.SIGKILL)

    @celeriac_app.task(name="early.marker")
    def marker() -> str:
        return "after"

    with start_worker(celeriac_app, pool="processes", concurrency=1):
        lost = dies.delay()
        with pytest.raises(WorkerLostError):
            lost.get(timeout=20)
        assert lost.state == states.FAILURE
        assert marker.delay().get(timeout=20) == "after"  # the replaced child serves the queue
    assert runs.read_text().splitlines() == ["run"]
