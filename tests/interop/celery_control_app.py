"""The real Celery's side of the remote-control interop tests: an app with remote control on, on the
broker ``INTEROP_CONTROL_BROKER`` and backend ``INTEROP_CONTROL_BACKEND`` (the tests set both)."""

from __future__ import annotations

import os
import time

from celery import Celery  # type: ignore[import-untyped]

app = Celery(
    "interop_control",
    broker=os.environ.get("INTEROP_CONTROL_BROKER", "redis://127.0.0.1:6379/12"),
    backend=os.environ.get("INTEROP_CONTROL_BACKEND", "redis://127.0.0.1:6379/12"),
    set_as_current=False,
)
app.conf.update(broker_connection_retry_on_startup=True, worker_hijack_root_logger=False, result_expires=600)


@app.task(name="interop.control.nap", shared=False)  # type: ignore[untyped-decorator]
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds
