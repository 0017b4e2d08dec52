"""Real beat processes (``celeriac beat`` subprocesses) on one store, in real time: each one-second tick
is sent exactly once while two beats run, and when the leader is killed the other takes over within
the lease with no tick lost or doubled; ``worker -B`` runs the periodic task. The 30 s versions are in
tests/chaos/test_beat_chaos.py."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from celeriac import Celeriac
from celeriac.beat import tick_id
from celeriac.beat.entries import to_tick
from tests.contract.conftest import SERVERS, _require
from tests.integration.conftest import WorkerProcess, log_of, wait_until

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.integration.beatapp"
LEASE = 2.0
SENT = re.compile(r"beat: sent every-second: task beatapp\.tick id (\S+) tick (\S+)")


@dataclass
class Place:
    """Where the beats of one test keep their state and send their messages."""

    env: dict[str, str]
    queue: str


def place_for(kind: str, tmp_path: Path) -> Iterator[Place]:
    queue = f"beat-{uuid.uuid4().hex[:10]}"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("CELERIAC_")}
    env = {
        **inherited,
        "BEAT_QUEUE": queue,
        "PYTHONUNBUFFERED": "1",
        "CELERIAC_BEAT_LEASE_SECONDS": str(LEASE),
    }
    if kind == "sqlite":
        db = tmp_path / "beat.sqlite3"
        env |= {"CELERIAC_BROKER_URL": f"sqlite:///{db}", "CELERIAC_RESULT_BACKEND": f"db+sqlite:///{db}"}
        yield Place(env, queue)
        return
    _require("redis")
    prefix = f"beat-test-{uuid.uuid4().hex[:10]}:"
    options = f'{{"global_keyprefix": "{prefix}"}}'
    # On RabbitMQ the beats keep their state in the result backend's store (Redis here).
    env |= {
        "CELERIAC_RESULT_BACKEND": "redis://127.0.0.1:6379/14",
        "CELERIAC_RESULT_BACKEND_TRANSPORT_OPTIONS": options,
    }
    if kind == "rabbitmq":
        _require("rabbitmq")
        env["CELERIAC_BROKER_URL"] = SERVERS["rabbitmq"][3]
    else:
        env |= {"CELERIAC_BROKER_URL": SERVERS["redis"][3], "CELERIAC_BROKER_TRANSPORT_OPTIONS": options}
    yield Place(env, queue)
    if kind == "rabbitmq":
        from celeriac.amqp.testkit import delete_amqp

        asyncio.run(delete_amqp(SERVERS["rabbitmq"][3], [queue], []))
    import redis

    for db in (15, 14):
        client = redis.Redis(host="127.0.0.1", port=6379, db=db)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["sqlite", "redis"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    yield from place_for(request.param, tmp_path)


class BeatProcess(WorkerProcess):
    """``celeriac beat`` (or ``command``) as a subprocess, started at once, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path, command: tuple[str, ...] = ("beat",)) -> None:
        super().__init__(env, [*command[1:], "-l", "INFO"], log, app=APP, command=command[0])
        self.start(wait_for="")

    @property
    def running(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None
        return self.proc

    def text(self) -> str:
        return log_of(self)

    def leads(self) -> bool:
        return "beat: leader now" in self.text()

    def stop(self) -> None:
        """SIGTERM (a clean stop gives the lease up); SIGKILL if that takes too long."""
        if self.running.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.terminate(15)
        super().stop()


@contextlib.contextmanager
def beats(env: dict[str, str], tmp_path: Path, count: int) -> Iterator[list[BeatProcess]]:
    started: list[BeatProcess] = []
    try:
        for index in range(count):
            started.append(BeatProcess(env, tmp_path / f"beat-{index}.log"))
        yield started
    finally:
        for process in started:
            process.stop()


def queued_ids(place: Place) -> list[str]:
    """The task ids of every message waiting in the test's queue (taken off it)."""
    app = Celeriac("beatapp-reader")
    app.conf.update(
        broker_url=place.env["CELERIAC_BROKER_URL"],
        broker_transport_options=json.loads(place.env.get("CELERIAC_BROKER_TRANSPORT_OPTIONS", "{}")),
    )

    async def drain() -> list[str]:
        broker = app.broker()
        ids: list[str] = []
        try:
            while batch := await broker.fetch([place.queue], 100, 0.5):
                ids += [d.message.headers["id"] for d in batch if d.message is not None]
                await broker.ack(batch)
        finally:
            await broker.close()
        return ids

    return asyncio.run(drain())


def sent_ticks(processes: list[BeatProcess]) -> list[tuple[str, datetime]]:
    """(task id, tick) of every send the beats logged, in tick order."""
    found = [(m[1], datetime.fromisoformat(m[2])) for p in processes for m in SENT.finditer(p.text())]
    return sorted(found, key=lambda item: item[1])


def assert_each_second_once(processes: list[BeatProcess], place: Place, at_least: int) -> None:
    """Every tick from the first to the last was sent once, with its deterministic id, and the queue
    holds exactly those messages."""
    ticks = sent_ticks(processes)
    assert len(ticks) >= at_least, [p.text() for p in processes]
    gaps = [(b[1] - a[1]).total_seconds() for a, b in itertools.pairwise(ticks)]
    assert gaps == [1.0] * len(gaps), ticks  # none doubled (0), none lost (2)
    for task_id, moment in ticks:
        assert task_id == tick_id("every-second", to_tick(moment))
    assert sorted(queued_ids(place)) == sorted(task_id for task_id, _ in ticks)


def test_two_beats_send_each_one_second_tick_exactly_once(place: Place, tmp_path: Path) -> None:
    with beats(place.env, tmp_path, 2) as running:
        assert wait_until(lambda: any(p.leads() for p in running), 15)
        time.sleep(4.2)
    # Usually one beat leads throughout; on a loaded machine a pass can outlast the 2 s lease and the
    # other take over. Either way each tick goes exactly once: that is the guarantee checked.
    assert_each_second_once(running, place, at_least=3)


def test_kill_the_leader_and_the_other_takes_over_within_the_lease(tmp_path: Path) -> None:
    place = next(place_for("sqlite", tmp_path))
    with beats(place.env, tmp_path, 2) as running:
        assert wait_until(lambda: any(p.leads() for p in running), 15)
        leader, standby = running if running[0].leads() else running[::-1]
        assert wait_until(lambda: len(SENT.findall(leader.text())) >= 2, 5)
        leader.kill()
        killed = time.monotonic()
        assert wait_until(standby.leads, LEASE + LEASE / 3 + 2)
        took = time.monotonic() - killed
        time.sleep(2.2)
    assert took <= LEASE + LEASE / 3 + 1.0
    assert len(SENT.findall(standby.text())) >= 2
    assert_each_second_once(running, place, at_least=5)


def test_worker_with_beat_runs_the_periodic_task(tmp_path: Path) -> None:
    place = next(place_for("sqlite", tmp_path))
    ledger = tmp_path / "ledger"
    env = {**place.env, "LEDGER_PATH": str(ledger)}
    worker = BeatProcess(
        env, tmp_path / "worker.log", ("worker", "-B", "-P", "threads", "-c", "2", "-Q", place.queue)
    )
    try:
        ran = wait_until(lambda: ledger.exists() and len(ledger.read_text().split()) >= 2, 20)
    finally:
        worker.stop()
    assert ran, worker.text()
    sent = {task_id for task_id, _ in sent_ticks([worker])}
    assert set(ledger.read_text().split()) <= sent
    assert "beat: leader now" in worker.text()


def test_a_beat_restarted_after_a_stop_neither_repeats_nor_skips_a_tick(tmp_path: Path) -> None:
    place = next(place_for("sqlite", tmp_path))
    first = BeatProcess(place.env, tmp_path / "first.log")
    try:
        assert wait_until(lambda: len(SENT.findall(first.text())) >= 2, 15), first.text()
    finally:
        first.stop()
    time.sleep(1.5)  # down across a tick or two
    second = BeatProcess(place.env, tmp_path / "second.log")
    try:
        assert wait_until(lambda: len(SENT.findall(second.text())) >= 3, 15), second.text()
    finally:
        second.stop()
    assert_each_second_once([first, second], place, at_least=5)
