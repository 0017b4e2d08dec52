"""celeriac's side of the remote-control interop tests: the same task as ``celery_control_app``, on
the broker ``INTEROP_CONTROL_BROKER`` and backend ``INTEROP_CONTROL_BACKEND``."""

from __future__ import annotations

import os
import time

from celeriac import Celeriac

app = Celeriac(
    "interop_control",
    broker=os.environ.get("INTEROP_CONTROL_BROKER", "redis://127.0.0.1:6379/12"),
    backend=os.environ.get("INTEROP_CONTROL_BACKEND", "redis://127.0.0.1:6379/12"),
)


@app.task(name="interop.control.nap")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
