"""The real Flower's buttons on celeriac workers, on Redis and on RabbitMQ.

Flower's UI buttons call its HTTP API, which sends Celery's remote-control commands and reads their
replies; this module drives that API against a ``celeriac worker -E`` (processes pool) and checks what
the worker then does: revoke (and terminate), rate and time limits, consumers, pool sizing, shutdown,
the worker's inspected details (``GET /api/workers``) and the task list fed by our events.

Flower runs with ``-A tests.interop.celery_control_app``: its rate-limit and timeout endpoints refuse a
task name its own app does not know.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from celeriac import Celeriac, states
from celeriac.amqp.testkit import delete_amqp
from tests.interop.redis_fleet import ROOT, FleetProcess
from tests.servers import service_missing

pytestmark = pytest.mark.slow

#: Broker and result backend per broker kind; results are on Redis db 12 either way.
URLS = {
    "redis": ("redis://127.0.0.1:6379/12", 6379),
    "amqp": ("amqp://guest:guest@127.0.0.1:5672//", 5672),
}
BACKEND = "redis://127.0.0.1:6379/12"
NAP = "interop.control.nap"


def eventually(check: Callable[[], Any], timeout: float = 20.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what or check}"
        time.sleep(0.1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Flower:
    """A real Flower process on a free port, and its HTTP API."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "tests.interop.celery_control_app",
                    "flower",
                    f"--port={self.port}",
                    "--address=127.0.0.1",
                ],
                cwd=ROOT,
                env={**env, "FLOWER_UNAUTHENTICATED_API": "true"},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        eventually(self._answering, 30, "Flower to answer")

    def _answering(self) -> bool:
        with contextlib.suppress(OSError, urllib.error.URLError):
            urllib.request.urlopen(f"{self.base}/healthcheck", timeout=2).close()
            return True
        assert self.proc.poll() is None, self.log.read_text()
        return False

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.loads(response.read())

    def post(self, path: str, **form: Any) -> tuple[int, str]:
        """POST ``form`` (as Flower's buttons do); returns the status and the body, errors included."""
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(self.base + path, data=data, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture(params=sorted(URLS))
def env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    broker, port = URLS[request.param]
    for needed in {port, 6379}:
        try:
            socket.create_connection(("127.0.0.1", needed), timeout=1).close()
        except OSError as exc:
            service_missing(f"nothing answers on 127.0.0.1:{needed} ({exc})")
    yield {**os.environ, "INTEROP_CONTROL_BROKER": broker, "INTEROP_CONTROL_BACKEND": BACKEND}


@pytest.fixture
def client(env: dict[str, str]) -> Iterator[Celeriac]:
    app = Celeriac("flower_interop_client", broker=env["INTEROP_CONTROL_BROKER"], backend=BACKEND)
    yield app
    app.close()


@pytest.fixture
def queue(env: dict[str, str]) -> Iterator[str]:
    name = f"flower-{uuid.uuid4().hex[:8]}"
    yield name
    broker = env["INTEROP_CONTROL_BROKER"]
    if broker.startswith("amqp"):
        asyncio.run(delete_amqp(broker, [name, name + "-more"], []))


def celeriac_worker(env: dict[str, str], tmp_path: Path, queue: str, node: str) -> FleetProcess:
    args = [
        sys.executable, "-m", "celeriac", "-A", "tests.interop.celeriac_control_app", "worker",
        "-P", "processes", "-c", "2", "-Q", queue, "-n", node, "-E", "-l", "info",
    ]  # fmt: skip
    return FleetProcess("celeriac", args, tmp_path / "worker.log", env).start()


def test_flowers_buttons_act_on_a_celeriac_worker(
    env: dict[str, str], client: Celeriac, queue: str, tmp_path: Path
) -> None:
    node = f"flower-{uuid.uuid4().hex[:6]}@interop"
    worker = celeriac_worker(env, tmp_path, queue, node)
    flower: Flower | None = None
    try:
        # Started after the worker: Flower inspects the workers that answer when it starts.
        flower = Flower(env, tmp_path / "flower.log")

        def inspected() -> dict[str, Any]:
            found: dict[str, Any] = flower.get("/api/workers").get(node, {})
            if {"stats", "registered", "active_queues"} <= set(found):
                return found
            flower.get("/api/workers?refresh=1")  # a reply lost to a busy machine: ask again
            return {}

        details = eventually(inspected, 30, "Flower to inspect our worker")
        assert details["registered"] == [NAP]
        assert [q["name"] for q in details["active_queues"]] == [queue]
        stats = details["stats"]
        assert stats["pid"] == worker.proc.pid  # type: ignore[union-attr]
        assert stats["pool"]["max-concurrency"] == 2 and len(stats["pool"]["processes"]) == 2
        assert details["conf"]["broker_url"].split("://")[0] == env["INTEROP_CONTROL_BROKER"].split("://")[0]

        # The task list comes from our events.
        done = [client.send_task(NAP, (0,), queue=queue) for _ in range(3)]
        assert [r.get(timeout=20) for r in done] == [0, 0, 0]

        def listed() -> dict[str, Any]:
            found: dict[str, Any] = flower.get(f"/api/tasks?workername={node}")
            return found if all(found.get(r.id, {}).get("state") == "SUCCESS" for r in done) else {}

        tasks = eventually(listed, 30, "Flower to list our tasks")
        assert all(tasks[r.id]["name"] == NAP and tasks[r.id]["worker"] == node for r in done)

        # Rate limit: Flower relays our reply text; the worker applies the new limit.
        status, body = flower.post(f"/api/task/rate-limit/{NAP}", workername=node, ratelimit="10/m")
        assert (status, json.loads(body)) == (200, {"message": "new rate limit set successfully"})
        registered = client.control.inspect([node]).registered("rate_limit")
        assert registered == {node: [f"{NAP} [rate_limit=10/m]"]}
        status, body = flower.post(f"/api/task/rate-limit/{NAP}", workername=node, ratelimit="lots")
        assert status == 403 and body.startswith("Failed to set rate limit: 'Invalid rate limit string")
        status, body = flower.post(f"/api/task/rate-limit/{NAP}", workername=node, ratelimit="0")
        assert (status, json.loads(body)) == (200, {"message": "rate limit disabled successfully"})

        # Time limits.
        status, body = flower.post(f"/api/task/timeout/{NAP}", workername=node, soft="30", hard="100")
        assert (status, json.loads(body)) == (200, {"message": "time limits set successfully"})
        registered = client.control.inspect([node]).registered("soft_time_limit", "time_limit")
        assert registered == {node: [f"{NAP} [soft_time_limit=30.0 time_limit=100.0]"]}

        # Consumers.
        more = queue + "-more"
        status, body = flower.post(f"/api/worker/queue/add-consumer/{node}", queue=more)
        assert (status, json.loads(body)) == (200, {"message": f"add consumer {more}"})
        consumed = client.control.inspect([node]).active_queues()
        assert consumed is not None and sorted(q["name"] for q in consumed[node]) == [queue, more]
        status, body = flower.post(f"/api/worker/queue/cancel-consumer/{node}", queue=more)
        assert (status, json.loads(body)) == (200, {"message": f"no longer consuming from {more}"})

        # Pool sizing: whatever the pool can do, Flower reads our reply (an "ok", or an "error" it names).
        for path in (f"grow/{node}?n=1", f"shrink/{node}?n=1", f"autoscale/{node}?min=1&max=2"):
            status, body = flower.post(f"/api/worker/pool/{path}")
            assert status == 200 or (status == 403 and ": " in body and "Unknown reason" not in body), body
        status, body = flower.post(f"/api/worker/pool/restart/{node}")
        assert status == 403, body
        assert body == f"Failed to restart the '{node}' pool: ValueError('Pool restarts not enabled')"

        # Revoke: a waiting task never runs; with terminate, the running one ends REVOKED, in the result
        # backend and in Flower's task list.
        running = client.send_task(NAP, (60,), queue=queue)
        eventually(lambda: (client.control.inspect([node]).active() or {}).get(node), what="the task to run")
        # One worker's page: Flower asks it for its task lists too (``active`` with ``safe``: the client's
        # argument reprs).
        one = flower.get(f"/api/workers?workername={node}&refresh=1")[node]
        assert [t["id"] for t in one["active"]] == [running.id] and one["active"][0]["args"] == "(60,)"
        assert one["reserved"] == [] and one["scheduled"] == [] and running.id not in one["revoked"]
        waiting = client.send_task(NAP, (0,), queue=queue, countdown=30)
        status, body = flower.post(f"/api/task/revoke/{waiting.id}")
        assert (status, json.loads(body)) == (200, {"message": f"Revoked '{waiting.id}'"})
        status, body = flower.post(f"/api/task/revoke/{running.id}", terminate="true")
        assert status == 200, body
        eventually(lambda: running.state == states.REVOKED, what="the running task to end REVOKED")
        eventually(lambda: waiting.state == states.REVOKED, what="the waiting task to be REVOKED")
        # The REVOKED record is written before the signal goes: wait for the run itself to end.
        eventually(
            lambda: (client.control.inspect([node]).active() or {}).get(node) == [], what="no active task"
        )
        revoked = client.control.inspect([node]).revoked()
        assert revoked is not None and {running.id, waiting.id} <= set(revoked[node])
        eventually(
            lambda: flower.get(f"/api/task/info/{running.id}")["state"] == states.REVOKED,
            what="Flower to show the terminated task REVOKED",
        )

        # Shutdown: the worker stops, and Flower sees it go offline.
        status, body = flower.post(f"/api/worker/shutdown/{node}")
        assert (status, json.loads(body)) == (200, {"message": "Shutting down!"})
        assert worker.proc is not None
        worker.proc.wait(30)
        assert worker.proc.returncode == 0, worker.text()
        eventually(lambda: flower.get("/api/workers?status=1").get(node) is False, what="offline in Flower")
    finally:
        worker.stop()
        if flower is not None:
            flower.stop()
