"""The app of the beat tests: one entry, a tick every second, sent to a queue the test names (BEAT_QUEUE)
and caught up after a takeover, so that every second has exactly one message; its task writes a line
to LEDGER_PATH when a worker runs it."""

from __future__ import annotations

import os

from celeriac import Celeriac

app = Celeriac("beatapp")  # broker and backend come from CELERIAC_* variables set by the tests
app.conf.beat_schedule = {
    "every-second": {
        "task": "beatapp.tick",
        "schedule": 1.0,
        "catch_up": True,
        "options": {"queue": os.environ.get("BEAT_QUEUE", "celery")},
    }
}


@app.task(name="beatapp.tick", bind=True)
def tick(self) -> str:
    path = os.environ.get("LEDGER_PATH")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{self.request.id}\n".encode())
        finally:
            os.close(fd)
    return str(self.request.id)
