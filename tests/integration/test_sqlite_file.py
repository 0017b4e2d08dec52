"""The SQLite file renamed or deleted under a running worker: the worker, the callers and ``celeriac
status`` notice that the path names another file (or none), say so, and go on with the file at the
path, instead of polling a file nobody else reaches or failing with SQLite's bare "disk I/O error"."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.integration import appmod
from tests.integration.conftest import ROOT, log_of, wait_until


def test_a_renamed_then_deleted_file_is_followed_by_worker_and_callers(
    app: Any, start_worker: Any, sqlite_env: dict[str, str], tmp_path: Path
) -> None:
    db = tmp_path / "broker.sqlite3"
    worker = start_worker("-c", "1", "-P", "threads")
    assert appmod.add.delay(1, 2).get(timeout=20) == 3

    # Renamed, as `mv` does: only the main file moves; its -wal and -shm stay at the old names.
    db.rename(tmp_path / "moved.sqlite3")
    status = subprocess.run(
        [sys.executable, "-m", "celeriac", "-A", "tests.integration.appmod", "status"],
        cwd=ROOT,
        env=sqlite_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert status.returncode == 0, status.stderr
    assert "disk I/O error" not in status.stderr and re.search(r"^celery\s+0$", status.stdout, re.M)
    assert appmod.add.delay(3, 4).get(timeout=20) == 7  # sent to the new file, run by the worker
    assert wait_until(lambda: "was deleted or renamed while this process had it open" in log_of(worker), 10)
    # The old file's -wal was set aside, not lost: next to the moved file, it makes that file whole.
    [orphan] = tmp_path.glob("broker.sqlite3-wal.orphaned-*")
    shutil.copy(orphan, tmp_path / "moved-copy.sqlite3-wal")
    shutil.copy(tmp_path / "moved.sqlite3", tmp_path / "moved-copy.sqlite3")
    with sqlite3.connect(tmp_path / "moved-copy.sqlite3") as old:
        assert old.execute("select count(*) from celery_taskmeta").fetchone() == (1,)  # add(1, 2)

    # Deleted, with its -wal and -shm, as `rm broker.sqlite3*` does.
    for path in tmp_path.glob("broker.sqlite3*"):
        path.unlink()
    assert appmod.add.delay(5, 6).get(timeout=20) == 11
    assert log_of(worker).count("while this process had it open") == 2, log_of(worker)  # once per event
    assert db.exists() and (tmp_path / "moved.sqlite3").exists()
