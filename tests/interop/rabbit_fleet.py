"""Helpers for the RabbitMQ interop tests: worker subprocesses of both kinds on the shared RabbitMQ, the
Redis ledger tasks record themselves in, and the queues and keys to delete afterwards.

The broker is RabbitMQ on 5672 (shared: never restarted); every queue a test uses is named after this
run's token (``Space.name``) and deleted at the end, with the Redis keys carrying the token (ledgers,
and result records when results are on Redis). Results go to ``rpc://`` or to Redis db 13.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from pathlib import Path
from typing import Any

from celery import Celery  # type: ignore[import-untyped]

from celeriac.amqp.testkit import delete_amqp
from tests.contract.test_rpc_backend import AMQP
from tests.interop.conftest import close_celery
from tests.interop.redis_fleet import FleetProcess, Space

#: Where the tasks' ledgers live, and the Redis result backend of these tests.
REDIS = "redis://127.0.0.1:6379/13"
RESULTS = {"rpc": "rpc://", "redis": REDIS}


def celery_process(
    queues: list[str],
    log: Path,
    env: dict[str, str],
    *,
    concurrency: int = 2,
    prefetch: int = 4,
) -> FleetProcess:
    """A ``celery worker`` (threads) on RabbitMQ with ``celery_rabbit_app``'s tasks.

    Unlike the Redis fleet's, it keeps its heartbeat timer: on pyamqp with no timer at all, Celery's
    event loop blocks in ``epoll`` with no timeout and a warm shutdown never gets to run.
    """
    args = [
        sys.executable, "-m", "celery", "-A", "tests.interop.celery_rabbit_app", "worker",
        "-P", "threads", "-c", str(concurrency), "--prefetch-multiplier", str(prefetch),
        "-Q", ",".join(queues), "-n", f"celery-{uuid.uuid4().hex[:6]}@interop",
        "--without-gossip", "--without-mingle", "-l", "info",
    ]  # fmt: skip
    return FleetProcess("celery", args, log, env)


def celeriac_process(
    queues: list[str], log: Path, env: dict[str, str], *, concurrency: int = 2, prefetch: int = 1
) -> FleetProcess:
    """A ``celeriac worker`` (threads) on RabbitMQ with ``celeriac_rabbit_app``'s tasks."""
    return FleetProcess.celeriac(
        queues, log, env, concurrency=concurrency, prefetch=prefetch, app="tests.interop.celeriac_rabbit_app"
    )


class Rabbit:
    """One module's queues, Redis key space and worker processes on the shared RabbitMQ."""

    def __init__(self, tmp: Path) -> None:
        self.space = Space(REDIS)
        self.tmp = tmp
        self.queues: list[str] = []
        self.procs: list[FleetProcess] = []
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("CELERIAC_", "CELERY_", "INTEROP_"))
        }
        self.env.update(INTEROP_REDIS_URL=REDIS, INTEROP_AMQP_URL=AMQP)

    def queue(self, what: str) -> str:
        """A fresh queue name, deleted at the end."""
        name = self.space.name(what)
        self.queues.append(name)
        return name

    def celery_worker(
        self, queues: list[str], *, results: str = "rpc://", max_priority: int | None = None, **options: int
    ) -> FleetProcess:
        env = {**self.env, "INTEROP_RESULTS": results}
        if max_priority is not None:
            env["INTEROP_MAX_PRIORITY"] = str(max_priority)
        proc = celery_process(queues, self.tmp / f"celery-{len(self.procs)}.log", env, **options)
        self.procs.append(proc)
        return proc.start()

    def celeriac_worker(self, queues: list[str], *, results: str = "rpc://", **options: int) -> FleetProcess:
        env = {**self.env, "INTEROP_RESULTS": results}
        proc = celeriac_process(queues, self.tmp / f"celeriac-{len(self.procs)}.log", env, **options)
        self.procs.append(proc)
        return proc.start()

    def interop_logs(self) -> list[tuple[str, str]]:
        """Worker logs for the report of a failing test (see conftest)."""
        return [(f"{p.kind} worker {' '.join(p.args[-9:])}", p.text()) for p in self.procs]

    def why(self) -> str:
        return "".join(f"\n--- {name}:\n{text[-5000:]}" for name, text in self.interop_logs())

    def close(self) -> None:
        """Stop the workers still running, delete the queues and the Redis keys of this run."""
        for proc in reversed(self.procs):
            proc.stop()
        try:
            asyncio.run(delete_amqp(AMQP, self.queues, set()))
        finally:
            self.space.clean()


def close_celery_client(app: Celery) -> None:
    """Close a Celery client app, and the connections its result backend leaves open."""
    consumer: Any = getattr(app.backend, "result_consumer", None)
    # Celery's app.close() leaves its rpc result consumer's connection open.
    if str(app.conf.result_backend).startswith("rpc") and getattr(consumer, "_connection", None) is not None:
        consumer.stop()
    close_celery(app)


__all__ = ["REDIS", "RESULTS", "Rabbit", "celeriac_process", "celery_process", "close_celery_client"]
