"""The beat under faults, in real time (``./dev chaos``), on SQLite, Redis, and RabbitMQ with the state
in a Redis result backend: two beats for 30 s send each one-second tick exactly once; the leader killed
with SIGKILL again and again, each time restarted as the new standby, loses and doubles no tick. Short
versions run in the default suite (tests/integration/test_beat.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_beat import (
    LEASE,
    SENT,
    BeatProcess,
    Place,
    assert_each_second_once,
    beats,
    place_for,
    wait_until,
)

pytestmark = pytest.mark.chaos


@pytest.fixture(params=["sqlite", "redis", "rabbitmq"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    yield from place_for(request.param, tmp_path)


@pytest.mark.timeout(120)
def test_two_beats_for_30_seconds_send_each_tick_exactly_once(place: Place, tmp_path: Path) -> None:
    with beats(place.env, tmp_path, 2) as running:
        assert wait_until(lambda: any(p.leads() for p in running), 15)
        time.sleep(30)
    assert_each_second_once(running, place, at_least=29)


@pytest.mark.timeout(180)
def test_killing_the_leader_again_and_again_loses_and_doubles_no_tick(place: Place, tmp_path: Path) -> None:
    everyone: list[BeatProcess] = []
    with beats(place.env, tmp_path, 2) as running:
        everyone += running
        for round_ in range(4):
            alive = [p for p in everyone if p.running.poll() is None]
            assert wait_until(lambda alive=alive: any(p.leads() for p in alive), 15)
            leader = next(p for p in alive if p.leads())
            standby = next(p for p in alive if p is not leader)
            sent_before = len(SENT.findall(standby.text()))
            time.sleep(2.5)
            leader.kill()
            killed = time.monotonic()
            assert wait_until(standby.leads, LEASE + LEASE / 3 + 2), standby.text()
            assert time.monotonic() - killed <= LEASE + LEASE / 3 + 1.0
            assert wait_until(lambda s=standby, n=sent_before: len(SENT.findall(s.text())) > n, 5)
            everyone.append(BeatProcess(place.env, tmp_path / f"beat-new-{round_}.log"))
        time.sleep(2.5)
        for process in everyone:
            process.stop()
    assert_each_second_once(everyone, place, at_least=15)
