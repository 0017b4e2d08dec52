"""Helpers for the Redis fleet tests: worker subprocesses of both kinds, and a key space to clean up.

A ``FleetProcess`` is a real ``celery worker`` or ``celeriac worker`` subprocess in its own session,
its output in a log file; ``stop()`` sends SIGTERM, waits, then SIGKILLs the whole group. A
``Space`` names this run's queues, ledgers and task ids after one token, so the keys left in the
shared Redis are found (and deleted) by that token.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import redis

ROOT = Path(__file__).resolve().parents[2]
WAIT = 15.0


class FleetProcess:
    """A worker subprocess (``kind`` is ``celery`` or ``celeriac``) and its log."""

    def __init__(self, kind: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.kind, self.args, self.log, self.env = kind, args, log, env
        self.proc: subprocess.Popen[bytes] | None = None

    @classmethod
    def celery(
        cls,
        queues: list[str],
        log: Path,
        env: dict[str, str],
        *,
        concurrency: int = 2,
        prefetch: int = 4,
        app: str = "tests.interop.celery_redis_app",
    ) -> FleetProcess:
        args = [
            sys.executable, "-m", "celery", "-A", app, "worker",
            "-P", "threads", "-c", str(concurrency), "--prefetch-multiplier", str(prefetch),
            "-Q", ",".join(queues), "-n", f"celery-{uuid.uuid4().hex[:6]}@interop",
            "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info",
        ]  # fmt: skip
        return cls("celery", args, log, env)

    @classmethod
    def celeriac(
        cls,
        queues: list[str],
        log: Path,
        env: dict[str, str],
        *,
        concurrency: int = 2,
        prefetch: int = 1,
        app: str = "tests.interop.celeriac_redis_app",
    ) -> FleetProcess:
        args = [
            sys.executable, "-m", "celeriac", "-A", app, "worker",
            "-P", "threads", "-c", str(concurrency), "--prefetch-multiplier", str(prefetch),
            "-Q", ",".join(queues), "-n", f"celeriac-{uuid.uuid4().hex[:6]}@interop", "-l", "info",
        ]  # fmt: skip
        return cls("celeriac", args, log, env)

    def start(self) -> FleetProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                self.args,
                cwd=ROOT,
                env={**self.env, "PYTHONUNBUFFERED": "1"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Both print "ready" once they consume: Celery "celery@host ready.", celeriac "... ready: pool=".
        self.wait_for_log(" ready", timeout=30)
        return self

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.text():
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.kind} worker never logged {text!r}; log:\n{self.text()}")

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM (warm shutdown), then SIGKILL the group if it is still there after ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode


class Space:
    """Queue names, ledger keys and task ids of one test module, all carrying one token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.token = f"ifleet-{uuid.uuid4().hex[:10]}"
        self.client = redis.Redis.from_url(url)
        self.tracked: list[str] = []

    def name(self, what: str) -> str:
        """A fresh key or queue name, e.g. ``ifleet-1a2b.celery.3c4d``."""
        return f"{self.token}.{what}.{uuid.uuid4().hex[:6]}"

    def task_id(self) -> str:
        return f"{self.token}-{uuid.uuid4()}"

    def track(self, task_id: str) -> str:
        """Delete the result of ``task_id`` (an id made without the token) at the end too."""
        self.tracked.append(task_id)
        return task_id

    def ledger(self, key: str) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self._members(self.client.lrange(key, 0, -1))]

    def wait_ledger(
        self, key: str, count: int, timeout: float = WAIT, why: Callable[[], str] = str
    ) -> list[dict[str, Any]]:
        """The ledger once it holds ``count`` entries (or fail after ``timeout``, with ``why()``)."""
        deadline = time.monotonic() + timeout
        while True:
            entries = self.ledger(key)
            if len(entries) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        assert len(entries) >= count, f"{len(entries)} of {count} runs recorded in {timeout}s{why()}"
        return entries

    def raw_result(self, task_id: str) -> dict[str, Any]:
        raw = self.client.get(f"celery-task-meta-{task_id}")
        assert raw is not None, f"no result record for {task_id}"
        record: dict[str, Any] = json.loads(raw)
        return record

    def delayed_holding(self, task_id: str) -> bool:
        """Whether celeriac's delayed zset holds a message of ``task_id``."""
        return any(
            task_id.encode() in m for m in self._members(self.client.zrange("celeriac.delayed", 0, -1))
        )

    def processing_holding(self, task_id: str) -> list[str]:
        """The celeriac processing hashes that hold a message of ``task_id``."""
        found = []
        for key in self.client.scan_iter(match="celeriac.processing.*"):
            if any(task_id.encode() in v for v in self._members(self.client.hvals(key))):
                found.append(key.decode())
        return found

    @staticmethod
    def _members(found: Any) -> list[bytes]:
        # redis-py's sync client answers bytes here; its type hints also allow awaitables and str.
        return list(cast("list[bytes] | set[bytes]", found))

    def clean_delayed(self, task_id: str) -> None:
        """Drop ``task_id``'s messages from celeriac's delayed zset."""
        delayed = self._members(self.client.zrange("celeriac.delayed", 0, -1))
        members = [m for m in delayed if task_id.encode() in m]
        if members:
            self.client.zrem("celeriac.delayed", *members)

    def clean(self) -> None:
        """Delete every key, member and field carrying the token; leave everything else alone."""
        token = self.token.encode()
        client = self.client
        if self.tracked:
            client.delete(*(f"celery-task-meta-{task_id}" for task_id in self.tracked))
        for key in client.scan_iter(match=f"*{self.token}*"):
            client.delete(key)
        for key in client.scan_iter(match="_kombu.*"):
            kind = client.type(key)
            if kind == b"set":
                members = [m for m in self._members(client.smembers(key)) if token in m]
                if members:
                    client.srem(key, *members)
            elif kind == b"zset":
                members = [m for m in self._members(client.zrange(key, 0, -1)) if token in m]
                if members:
                    client.zrem(key, *members)
        for key in (b"celeriac.delayed", b"celeriac.dead_letters", b"unacked"):
            kind = client.type(key)
            if kind == b"zset":
                members = [m for m in self._members(client.zrange(key, 0, -1)) if token in m]
                if members:
                    client.zrem(key, *members)
            elif kind == b"list":
                for m in self._members(client.lrange(key, 0, -1)):
                    if token in m:
                        client.lrem(key, 0, m)  # type: ignore[arg-type]  # redis-py takes bytes too
            elif kind == b"hash":
                values = cast(dict[bytes, bytes], client.hgetall(key))
                fields = [f for f, v in values.items() if token in v]
                if fields:  # kombu's unacked: its index is keyed by the same delivery tags
                    client.hdel(key, *fields)
                    client.zrem(b"unacked_index", *fields)
        client.close()


__all__ = ["ROOT", "WAIT", "FleetProcess", "Space"]
