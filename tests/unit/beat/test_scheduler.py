"""The beat's decisions with a fake clock on the in-process store: when a tick is due, what a restart,
an outage (catch-up policy), a second beat and a half-finished tick lead to."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pytest

from celeriac import Celeriac, signals
from celeriac.backends.base import ResultMeta
from celeriac.beat import Beat, tick_id
from celeriac.beat.entries import to_tick
from celeriac.beat.store import create_store
from celeriac.exceptions import ConfigurationError
from celeriac.schedules import BaseSchedule, crontab

START = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC).timestamp()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


class EveryMinuteOnTheMinute(BaseSchedule):
    """A wall-clock schedule of the test's own: ticks at :00 of every minute."""

    def next_after(self, moment: datetime, tz: tzinfo = UTC) -> datetime:
        floor = moment.replace(second=0, microsecond=0)
        return floor + timedelta(minutes=1)


@pytest.fixture
def name() -> str:
    return f"beat-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sent(name: str) -> Iterator[list[tuple[str, str]]]:
    """(task id, task name) of every message published for this test's tasks (each marked as Celery's
    beat marks what it sends)."""
    found: list[tuple[str, str]] = []

    def record(sender: Any, headers: dict[str, Any], **_: Any) -> None:
        if str(sender).startswith(name):
            assert headers["celery_beat_task"] is True
            found.append((headers["id"], str(sender)))

    signals.after_task_publish.connect(record, weak=False)
    yield found
    signals.after_task_publish.disconnect(record)


def make_app(name: str, schedule: dict[str, Any]) -> Celeriac:
    return Celeriac(name, broker=f"memory://{name}", backend=f"memory://{name}", beat_schedule=schedule)


def beat(app: Celeriac, clock: Clock, **options: Any) -> Beat:
    return Beat(app, clock=clock, **options)


def passes(b: Beat, clock: Clock, *moves: float) -> None:
    """One pass at the clock's time, then one after each move of the clock (seconds)."""

    async def go() -> None:
        await b.tick()
        for move in moves:
            clock.now += move
            await b.tick()

    asyncio.run(go())


def test_a_new_entry_counts_from_now_and_each_tick_goes_once_with_its_own_id(name, sent) -> None:
    app = make_app(name, {"ten": {"task": f"{name}.t", "schedule": 10.0, "args": (1,)}})
    clock = Clock()
    b = beat(app, clock)
    passes(b, clock, 0, 5, 4.9)  # nothing due before START + 10 s
    assert sent == []
    passes(b, clock, 0.1, 0, 3)  # at START + 10 s exactly, then twice more before the next tick
    first = to_tick(datetime.fromtimestamp(START + 10, UTC))
    assert sent == [(tick_id("ten", first), f"{name}.t")]
    passes(b, clock, 7)  # START + 20 s
    assert [i for i, _ in sent] == [tick_id("ten", first), tick_id("ten", first + 10_000_000)]


def test_the_wait_returned_is_the_time_to_the_next_tick_capped_by_the_lease(name, sent) -> None:
    app = make_app(name, {"m": {"task": f"{name}.t", "schedule": EveryMinuteOnTheMinute()}})
    clock = Clock()
    clock.now += 59.5
    b = beat(app, clock, lease_seconds=9)
    assert asyncio.run(b.tick()) == pytest.approx(0.5)
    clock.now += 0.5
    assert asyncio.run(b.tick()) == pytest.approx(3.0)  # the lease's renewal comes first
    assert len(sent) == 1


def test_a_restarted_beat_neither_repeats_nor_skips_a_tick(name, sent) -> None:
    schedule = {"five": {"task": f"{name}.t", "schedule": timedelta(seconds=5)}}
    clock = Clock()
    first = beat(make_app(name, schedule), clock)
    passes(first, clock, 5, 5)
    assert len(sent) == 2
    # A new process (a new holder: it waits out the old lease, as after a crash) picks up where it was.
    clock.now += 2
    second = beat(make_app(name, schedule), clock, lease_seconds=0.01)
    asyncio.run(first.store.release(first.holder, first.token or 0))
    passes(second, clock, 0, 3)  # START + 12, START + 15
    ticks = [to_tick(datetime.fromtimestamp(START + s, UTC)) for s in (5, 10, 15)]
    assert [i for i, _ in sent] == [tick_id("five", t) for t in ticks]


def test_missed_ticks_run_once_by_default_and_every_one_with_catch_up(name, sent) -> None:
    schedule = {
        "once": {"task": f"{name}.once", "schedule": 10},
        "all": {"task": f"{name}.all", "schedule": 10, "catch_up": True},
        "two": {"task": f"{name}.two", "schedule": 10, "catch_up": 2},
    }
    clock = Clock()
    b = beat(make_app(name, schedule), clock)
    passes(b, clock, 35)  # ticks at +10, +20, +30 were missed
    at = [to_tick(datetime.fromtimestamp(START + s, UTC)) for s in (10, 20, 30)]
    assert [i for i, t in sent if t == f"{name}.once"] == [tick_id("once", at[2])]
    assert [i for i, t in sent if t == f"{name}.all"] == [tick_id("all", t) for t in at]
    assert [i for i, t in sent if t == f"{name}.two"] == [tick_id("two", t) for t in at[1:]]
    sent.clear()
    passes(b, clock, 4.9, 0.1)  # the next tick is +40, on the schedule, not 10 s after recovery
    assert len(sent) == 3


def test_only_the_leader_sends_and_a_standby_takes_over_when_its_lease_runs_out(name, sent) -> None:
    schedule = {"one": {"task": f"{name}.t", "schedule": 1}}
    clock = Clock()
    leader = beat(make_app(name, schedule), clock, lease_seconds=0.3)
    standby = beat(make_app(name, schedule), clock, lease_seconds=0.3)

    async def go() -> None:
        for _ in range(3):
            await leader.tick()
            await standby.tick()
            clock.now += 1
        assert leader.token is not None and standby.token is None
        await asyncio.sleep(0.35)  # the leader dies: its lease runs out
        for _ in range(2):
            await standby.tick()
            clock.now += 1
        assert standby.token is not None and standby.token > leader.token
        assert await leader.tick() == pytest.approx(0.1)  # the old leader stands by

    asyncio.run(go())
    ids = [i for i, _ in sent]
    expected = [tick_id("one", to_tick(datetime.fromtimestamp(START + s, UTC))) for s in (1, 2, 3, 4)]
    assert ids == expected  # every second once: none lost, none twice


def test_a_claim_with_a_token_that_is_no_longer_the_lease_changes_nothing(name) -> None:
    store = create_store(f"memory://{name}", scope=name)

    async def go() -> None:
        old = await store.acquire("a", 0.01)
        assert old is not None
        await asyncio.sleep(0.02)
        new = await store.acquire("b", 5)
        assert new is not None and new > old
        assert not await store.claim("e", None, 5, old)
        assert await store.claim("e", None, 5, new)
        assert not await store.claim("e", None, 6, new)  # the tick moved: compare-and-set fails
        assert (await store.states(["e"]))["e"].tick == 5

    asyncio.run(go())


def test_a_tick_claimed_but_not_recorded_is_sent_again_with_the_same_id(name, sent) -> None:
    schedule = {"ten": {"task": f"{name}.t", "schedule": 10}}
    clock = Clock()
    b = beat(make_app(name, schedule), clock)
    passes(b, clock)
    tick = to_tick(datetime.fromtimestamp(START + 10, UTC))

    async def claim_and_die() -> None:  # a leader that claimed the tick, then died before publishing
        assert b.token is not None
        assert await b.store.claim("ten", to_tick(datetime.fromtimestamp(START, UTC)), tick, b.token)

    asyncio.run(claim_and_die())
    clock.now += 10
    passes(b, clock, 0)
    assert [i for i, _ in sent] == [tick_id("ten", tick)]


def test_skip_if_running_skips_while_the_previous_run_is_unfinished(name, sent) -> None:
    app = make_app(name, {"ten": {"task": f"{name}.t", "schedule": 10, "skip_if_running": True}})
    clock = Clock()
    b = beat(app, clock)
    passes(b, clock, 10, 10)  # the first run is still PENDING at the second tick: skipped
    assert len(sent) == 1
    first_id = sent[0][0]

    async def finish() -> None:
        await app.backend().store([ResultMeta(task_id=first_id, status="SUCCESS", result=1)])

    asyncio.run(finish())
    passes(b, clock, 10)
    assert len(sent) == 2


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"task": "t", "schedule": "10"}, "entry 'bad': 'schedule' must be seconds"),
        ({"schedule": 10}, "entry 'bad' needs 'task'"),
        ({"task": "t"}, "entry 'bad' needs 'schedule'"),
        ({"task": "t", "schedule": 1, "optoins": {}}, "unknown key 'optoins'; did you mean 'options'"),
        ({"task": "t", "schedule": 1, "options": {"queeu": "q"}}, "unexpected option 'queeu'"),
        ({"task": "t", "schedule": -1}, "entry 'bad': a schedule's run_every must be positive"),
        ({"task": "t", "schedule": 1, "catch_up": -2}, "'catch_up' must be True, False"),
        ({"task": "t", "schedule": 1, "args": "x"}, "'args' must be a list"),
    ],
)
def test_a_bad_entry_is_an_error_naming_it_and_what_to_fix(entry, message) -> None:
    app = Celeriac("bad", broker="memory://bad", beat_schedule={"bad": entry})
    with pytest.raises(ConfigurationError, match=message):
        Beat(app)


def test_add_periodic_task_from_on_after_configure_as_in_celery(name) -> None:
    app = make_app(name, {})

    @app.task(name=f"{name}.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.on_after_configure.connect
    def setup(sender: Celeriac, **kwargs: Any) -> None:
        sender.add_periodic_task(10.0, add.s(2, 3), name="add every 10", expires=5, catch_up=True)
        sender.add_periodic_task(timedelta(minutes=1), add.s(1, 1))

    b = Beat(app)
    spec = app.conf.beat_schedule["add every 10"]
    assert (spec["task"], spec["args"], spec["options"]) == (f"{name}.add", (2, 3), {"expires": 5})
    assert [e.name for e in b.entries] == ["add every 10", repr(add.s(1, 1))]
    assert b.entries[0].catch_up == 100
    with pytest.raises(ConfigurationError, match="must be seconds"):
        app.add_periodic_task("often", add.s(1, 2))  # type: ignore[arg-type]


class Broken(BaseSchedule):
    def next_after(self, moment: datetime, tz: tzinfo = UTC) -> datetime:
        raise ValueError("no such day")


def test_an_entry_whose_schedule_fails_does_not_hold_the_others_back(name, sent, caplog) -> None:
    schedule = {
        "broken": {"task": f"{name}.broken", "schedule": Broken()},
        "ten": {"task": f"{name}.t", "schedule": 10},
    }
    clock = Clock()
    passes(beat(make_app(name, schedule), clock), clock, 10)
    assert [t for _, t in sent] == [f"{name}.t"]
    assert "beat: broken: cannot serve this entry: no such day" in caplog.text


def test_a_lease_or_interval_that_is_not_positive_is_refused(name) -> None:
    with pytest.raises(ConfigurationError, match="must be positive, got -1 and 300"):
        Beat(make_app(name, {}), lease_seconds=-1)


def test_a_crontab_entry_fires_at_its_wall_clock_time_in_the_apps_zone_across_dst(name, sent) -> None:
    # 2026-03-08 is the spring-forward day in New York: 09:30 local is 14:30 UTC the day before and
    # 13:30 UTC that day; the beat must read the crontab in the app's zone, not in UTC.
    app = make_app(name, {"daily": {"task": f"{name}.t", "schedule": crontab(minute=30, hour=9)}})
    app.conf.timezone = "America/New_York"
    clock = Clock()
    clock.now = datetime(2026, 3, 7, 14, 0, tzinfo=UTC).timestamp()
    b = beat(app, clock)
    before_dst = datetime(2026, 3, 7, 14, 30, tzinfo=UTC).timestamp()
    after_dst = datetime(2026, 3, 8, 13, 30, tzinfo=UTC).timestamp()
    passes(b, clock, before_dst - 1 - clock.now, 1, after_dst - 1 - before_dst, 1)
    assert [i for i, _ in sent] == [
        tick_id("daily", to_tick(datetime.fromtimestamp(moment, UTC))) for moment in (before_dst, after_dst)
    ]
