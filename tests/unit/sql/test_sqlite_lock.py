"""Waiting for a SQLite file's write lock: bounded, logged, and the error names the file and holder."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from celeriac.exceptions import OperationalError
from celeriac.protocol.message import Message
from celeriac.sql import _sqlite_lock
from celeriac.sql.broker import SQLBroker


def message() -> Message:
    return Message(headers={"id": "t1", "task": "t"}, properties={}, body=b"[[], {}, {}]")


def hold_the_lock(path: Path) -> sqlite3.Connection:
    """Another connection that begins a write and keeps it open: the file's write lock is taken."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


def publish(broker: SQLBroker) -> float:
    async def go() -> float:
        began = time.monotonic()
        try:
            await broker.publish("q", message())
            return time.monotonic() - began
        finally:
            await broker.close()

    return asyncio.run(go())


def test_a_held_lock_fails_a_write_after_busy_timeout_naming_the_file_and_holder(tmp_path: Path) -> None:
    path = tmp_path / "locked.sqlite3"
    broker = SQLBroker(f"sqlite:///{path}", options={"busy_timeout": 0.8})
    publish(broker)  # the file and its tables exist
    holder = hold_the_lock(path)
    try:
        began = time.monotonic()
        with pytest.raises(OperationalError) as failed:
            publish(SQLBroker(f"sqlite:///{path}", options={"busy_timeout": 0.8}))
        took = time.monotonic() - began
    finally:
        holder.rollback()
        holder.close()
    assert 0.8 <= took < 3.0
    text = str(failed.value)
    assert str(path) in text and "stayed locked" in text and "busy_timeout" in text
    # The holder is this very process (a POSIX lock is the process's), and Linux tells it.
    assert f"pid {os.getpid()} (running)" in text
    cause = failed.value.__cause__
    assert cause is not None and _sqlite_lock._is_locked(cause)  # SQLite's own error, chained


def test_a_long_wait_is_logged_and_so_is_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_sqlite_lock, "WARN_AFTER", 0.3)
    path = tmp_path / "slow.sqlite3"
    publish(SQLBroker(f"sqlite:///{path}"))
    holder = hold_the_lock(path)
    release = threading.Timer(1.2, holder.rollback)
    release.start()
    try:
        with caplog.at_level(logging.INFO, logger="celeriac.sql"):
            took = publish(SQLBroker(f"sqlite:///{path}"))  # waits, then goes through
    finally:
        release.join()
        holder.close()
    assert 1.0 <= took < 4.0
    waited = [r for r in caplog.records if "has been locked" in r.getMessage()]
    assert len(waited) == 1 and waited[0].levelno == logging.WARNING
    assert str(path) in waited[0].getMessage()
    assert any("is writable again after" in r.getMessage() for r in caplog.records)


def test_holders_is_empty_for_a_file_nobody_locks(tmp_path: Path) -> None:
    path = tmp_path / "free.sqlite3"
    publish(SQLBroker(f"sqlite:///{path}"))
    assert _sqlite_lock.holders(str(path)) == []
    assert _sqlite_lock.holders(str(tmp_path / "missing.sqlite3")) == []
