"""Remote control across the two implementations, on Redis and RabbitMQ: the real ``celery inspect`` /
``celery control`` commands against a celeriac worker, and celeriac's ``app.control`` against a real
``celery worker``. Node names are the test's own: the pidbox exchange is shared with other tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, states
from tests.interop.redis_fleet import ROOT, FleetProcess
from tests.servers import service_missing

pytestmark = pytest.mark.slow

URLS = {
    "redis": ("redis://127.0.0.1:6379/12", "redis://127.0.0.1:6379/12", 6379),
    "amqp": ("amqp://guest:guest@127.0.0.1:5672//", "redis://127.0.0.1:6379/12", 5672),
}


@pytest.fixture(params=sorted(URLS))
def env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    broker, backend, port = URLS[request.param]
    for needed in {port, 6379}:
        try:
            socket.create_connection(("127.0.0.1", needed), timeout=1).close()
        except OSError as exc:
            service_missing(f"nothing answers on 127.0.0.1:{needed} ({exc})")
    yield {**os.environ, "INTEROP_CONTROL_BROKER": broker, "INTEROP_CONTROL_BACKEND": backend}


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Celeriac]:
    app = Celeriac(
        "interop_control_client",
        broker=env["INTEROP_CONTROL_BROKER"],
        backend=env["INTEROP_CONTROL_BACKEND"],
    )
    yield app
    app.close()


def celery_cli(env: dict[str, str], *args: str) -> Any:
    """Run ``celery -A tests.interop.celery_control_app <args> --json`` and read its JSON answer."""
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "tests.interop.celery_control_app", *args, "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def start(kind: str, env: dict[str, str], tmp_path: Path, queue: str, node: str) -> FleetProcess:
    if kind == "celeriac":
        args = [
            sys.executable, "-m", "celeriac", "-A", "tests.interop.celeriac_control_app", "worker",
            "-P", "threads", "-c", "1", "--prefetch-multiplier", "2", "-Q", queue, "-n", node,
        ]  # fmt: skip
    else:
        args = [
            sys.executable, "-m", "celery", "-A", "tests.interop.celery_control_app", "worker",
            "-P", "threads", "-c", "1", "-Q", queue, "-n", node,
            "--without-heartbeat", "--without-gossip", "--without-mingle", "-l", "info",
        ]  # fmt: skip
    return FleetProcess(kind, args, tmp_path / f"{kind}.log", env).start()


def answering(client: Celeriac, node: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not client.control.inspect([node], timeout=0.5).ping():
        assert time.monotonic() < deadline, f"{node} never answered a ping"


def test_celerys_commands_inspect_and_revoke_on_a_celeriac_worker(
    env: dict[str, str], client: Celeriac, tmp_path: Path
) -> None:
    queue, node = f"ctl-{uuid.uuid4().hex[:8]}", f"celeriac-{uuid.uuid4().hex[:6]}@interop"
    worker = start("celeriac", env, tmp_path, queue, node)
    try:
        answering(client, node)
        assert celery_cli(env, "inspect", "ping", "-d", node) == {node: {"ok": "pong"}}
        registered = celery_cli(env, "inspect", "registered", "-d", node)
        assert registered == {node: ["interop.control.nap"]}
        # Long enough to outlast the five ``celery`` commands below: each starts a Python that imports
        # Celery, seconds apiece on a loaded machine (with 8 s, the held task ran before the revoke came).
        running = client.send_task("interop.control.nap", (40,), queue=queue)
        held = client.send_task("interop.control.nap", (0,), queue=queue)
        deadline = time.monotonic() + 20
        while not (client.control.inspect([node]).active() or {}).get(node):
            assert time.monotonic() < deadline, worker.text()
        [active] = celery_cli(env, "inspect", "active", "-d", node)[node]
        assert active["id"] == running.id and active["name"] == "interop.control.nap"
        assert active["args"] == [40] and active["hostname"] == node
        stats = celery_cli(env, "inspect", "stats", "-d", node)[node]
        assert stats["pool"]["max-concurrency"] == 1 and stats["pid"] == worker.proc.pid  # type: ignore[union-attr]
        revoked = celery_cli(env, "control", "revoke", held.id, "-d", node)
        assert revoked == [{node: {"ok": f"tasks { ({held.id})!r} flagged as revoked"}}]
        assert held.state == states.REVOKED
        terminated = celery_cli(env, "control", "terminate", "SIGTERM", running.id, "-d", node)
        # A threads pool answers at once and records REVOKED; nap's thread, in one long time.sleep (C code),
        # stops when the call returns (nothing raised into a thread lands inside a C call).
        assert terminated == [{node: {"ok": f"terminate: {running.id}"}}]
        deadline = time.monotonic() + 5
        while running.state != states.REVOKED:
            assert time.monotonic() < deadline, worker.text()
            time.sleep(0.05)
        prefetch = stats["prefetch_count"]  # at one slot
        assert celery_cli(env, "control", "pool_grow", "2", "-d", node) == [{node: {"ok": "pool will grow"}}]
        stats = celery_cli(env, "inspect", "stats", "-d", node)[node]
        assert (stats["pool"]["max-concurrency"], stats["pool"]["threads"]) == (3, 3)
        assert stats["prefetch_count"] == 3 * prefetch
        assert celery_cli(env, "control", "pool_shrink", "2", "-d", node) == [
            {node: {"ok": "pool will shrink"}}
        ]
        assert celery_cli(env, "control", "autoscale", "4", "1", "-d", node) == [
            {node: {"error": "ValueError('Autoscale not enabled')"}}
        ]
    finally:
        worker.stop()


def test_celeriac_inspects_a_celery_worker(env: dict[str, str], client: Celeriac, tmp_path: Path) -> None:
    queue, node = f"ctl-{uuid.uuid4().hex[:8]}", f"celery-{uuid.uuid4().hex[:6]}@interop"
    worker = start("celery", env, tmp_path, queue, node)
    try:
        answering(client, node)
        inspect = client.control.inspect([node])
        assert inspect.ping() == {node: {"ok": "pong"}}
        shell = subprocess.run(
            [sys.executable, "-m", "celeriac", "-A", "tests.interop.celeriac_control_app", "inspect", "ping",
             "-d", node, "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert json.loads(shell.stdout) == {node: {"ok": "pong"}}, shell.stderr
        assert inspect.registered() == {node: ["interop.control.nap"]}
        running = client.send_task("interop.control.nap", (5,), queue=queue)
        deadline = time.monotonic() + 20
        while not (inspect.active() or {}).get(node):
            assert time.monotonic() < deadline, worker.text()
        [active] = inspect.active()[node]  # type: ignore[index]
        assert active["id"] == running.id
        assert inspect.stats()[node]["pool"]["max-concurrency"] == 1  # type: ignore[index]
        assert client.control.broadcast("no_such_cmd", destination=[node], reply=True) == [
            {node: {"error": "KeyError('no_such_cmd')"}}
        ]
    finally:
        worker.stop()


def test_a_celeriac_worker_learns_the_revoked_ids_of_a_celery_worker_by_mingle(
    env: dict[str, str], client: Celeriac, tmp_path: Path
) -> None:
    from celeriac.testing import start_worker
    from celeriac.worker._inspect import revoked_ids

    queue, node = f"ctl-{uuid.uuid4().hex[:8]}", f"celery-{uuid.uuid4().hex[:6]}@interop"
    worker = start("celery", env, tmp_path, queue, node)
    try:
        answering(client, node)
        task_id = str(uuid.uuid4())
        # Told to the Celery worker alone, before the celeriac one exists: only its memory holds it.
        assert celery_cli(env, "control", "revoke", task_id, "-d", node) == [
            {node: {"ok": f"tasks { ({task_id})!r} flagged as revoked"}}
        ]
        with start_worker(
            client, hostname=f"celeriac-{uuid.uuid4().hex[:6]}@interop", queues=[queue]
        ) as ours:
            deadline = time.monotonic() + 20
            while task_id not in revoked_ids(ours):
                assert time.monotonic() < deadline, worker.text()
                time.sleep(0.05)
            assert ours.control is not None and ours.control.state.clock > 0
    finally:
        worker.stop()
