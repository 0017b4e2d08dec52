"""A process frozen (SIGSTOP) inside a write transaction on the SQLite file holds the file's one write
lock until it runs again: nothing can take it from a live process. What the others must do meanwhile:
a caller's ``delay()`` fails within its bound with our ``OperationalError`` naming the locked file, and
a worker says which file is locked and for how long instead of going quiet; once the frozen process
runs again, everything goes on and nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from celeriac.exceptions import OperationalError
from tests.integration import appmod
from tests.integration.conftest import ROOT, log_of, wait_until

pytestmark = pytest.mark.slow

#: A client that publishes once, then freezes itself after its INSERT and before its COMMIT: a
#: producer (or worker) paused by SIGSTOP, a debugger or a stalled VM at the worst moment.
FREEZES_INSIDE_A_WRITE = """
import os, signal
import sqlalchemy as sa
from tests.integration import appmod

appmod.add.delay(0, 0)  # opens the file
sa.event.listen(sa.Engine, "after_execute", lambda *_: os.kill(os.getpid(), signal.SIGSTOP))
print("freezing", flush=True)
appmod.add.delay(1, 1)
print("committed", flush=True)
"""


def stopped(pid: int) -> bool:
    """Whether the process is stopped (state T in /proc)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T"


def test_a_process_frozen_inside_a_write_blocks_the_file_loudly_and_for_a_bounded_time(
    app: Any, start_worker: Any, sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "broker.sqlite3"
    # The caller waits for the lock 2 s (broker option busy_timeout); the worker the default 5 s.
    app.conf.update(
        broker_transport_options={"busy_timeout": 2.0}, task_publish_retry_policy={"max_retries": 1}
    )
    worker = start_worker("-c", "1", "-P", "threads")
    assert appmod.add.delay(1, 2).get(timeout=20) == 3
    frozen = subprocess.Popen(
        [sys.executable, "-c", FREEZES_INSIDE_A_WRITE],
        cwd=ROOT,
        env=sqlite_env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_until(lambda: stopped(frozen.pid), 20), "the client never froze"
        began = time.monotonic()
        with pytest.raises(OperationalError) as failed:
            appmod.add.delay(2, 2)
        took = time.monotonic() - began
        assert 4.0 <= took < 6.0, f"delay() held its caller {took:.1f}s"  # two tries of 2 s
        message = str(failed.value)
        assert str(db) in message and "locked" in message, message
        assert f"pid {frozen.pid}" in message, message
        # The worker cannot take or settle anything either, and says so, naming the file.
        assert wait_until(lambda: f"{db} has been locked" in log_of(worker), 15), log_of(worker)[-3000:]
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
        out, _ = frozen.communicate(timeout=20)
    assert "committed" in out and frozen.returncode == 0
    # Once the frozen process runs again, the file is free: its task and new ones run.
    assert appmod.add.delay(3, 4).get(timeout=20) == 7
    assert worker.terminate() == 0
