"""Tasks for the chaos tests; worker subprocesses import this module with -A.

Every task writes its run to the ledger named by ``LEDGER_DB`` (not a ``CELERIAC_*`` variable: celeriac
rejects names it does not know), a SQLite file that no fault touches.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from celeriac import Celeriac
from tests.chaos.harness import Ledger

app = Celeriac("chaos")  # broker and backend come from the CELERIAC_* variables the tests set

_ledger: Ledger | None = None


def ledger() -> Ledger:
    """This process's ledger connection, opened on first use (pool children open their own)."""
    global _ledger
    if _ledger is None or _ledger.pid != os.getpid():
        _ledger = Ledger(os.environ["LEDGER_DB"])
    return _ledger


@app.task(bind=True)
def step(self: Any, n: int, ms: float) -> int:
    """Sleep ``ms`` milliseconds between a "started" and a "finished" row in the ledger."""
    run = ledger().started(self.request.id, self.request.retries, self.request.delivery_info)
    time.sleep(ms / 1000)
    ledger().finished(run)
    return n


@app.task(bind=True)
def poison(self: Any) -> None:
    """Kill the process running it, every time, as an OOM kill or a segfault in C code would."""
    ledger().started(self.request.id, self.request.retries, self.request.delivery_info)
    os.kill(os.getpid(), signal.SIGKILL)
