"""Property tests of crontab's next run: random fields, random moments near DST changes in zones with odd
rules, each answer checked against a minute-by-minute brute force over a bounded window, and against
Celery's own crontab in UTC.

The default run is small; ``./dev chaos tests/unit/test_schedules_properties.py`` runs many more."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo

import celery
import celery.schedules
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from celeriac.schedules import crontab

ZONES = [
    "Europe/London",
    "America/New_York",
    "Australia/Lord_Howe",  # 30-minute DST
    "Asia/Kolkata",  # +05:30, no DST
    "America/Santiago",  # southern hemisphere, changes at midnight
    "Pacific/Chatham",  # +12:45 / +13:45
    "UTC",
]
WINDOW = timedelta(days=2)


def _field(low: int, high: int) -> st.SearchStrategy[object]:
    value = st.integers(low, high)
    return st.one_of(
        st.just("*"),
        st.integers(1, (high - low) // 2 + 1).map(lambda n: f"*/{n}"),
        value,
        st.sets(value, min_size=1, max_size=4),
        st.tuples(value, value, st.integers(1, 5)).map(lambda t: f"{t[0]}-{t[1]}/{t[2]}"),
        st.tuples(value, value).map(lambda t: f"{t[0]}-{t[1]}"),
    )


@st.composite
def crontabs(draw: st.DrawFn) -> crontab:
    fields = {
        "minute": draw(_field(0, 59)),
        "hour": draw(st.one_of(st.just("*"), _field(0, 23))),
        "day_of_week": draw(st.one_of(st.just("*"), st.just("*"), _field(0, 6))),
        "day_of_month": draw(st.one_of(st.just("*"), st.just("*"), st.just("*"), _field(1, 31))),
        "month_of_year": draw(st.one_of(st.just("*"), st.just("*"), st.just("*"), _field(1, 12))),
    }
    try:
        return crontab(**fields)  # type: ignore[arg-type]
    except ValueError:  # e.g. the 31st in February only
        return crontab(minute=fields["minute"])  # type: ignore[arg-type]


@functools.cache
def _transitions(name: str) -> tuple[datetime, ...]:
    """The instants (UTC) the zone's offset changed, 2020-2031, to the minute."""
    tz = ZoneInfo(name)
    found = []
    moment = datetime(2020, 1, 1, tzinfo=UTC)
    while moment.year < 2031:
        step = moment + timedelta(hours=6)
        if moment.astimezone(tz).utcoffset() != step.astimezone(tz).utcoffset():
            low, high = moment, step
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if low.astimezone(tz).utcoffset() == middle.astimezone(tz).utcoffset():
                    low = middle
                else:
                    high = middle
            found.append(high.replace(second=0, microsecond=0))
        moment = step
    return tuple(found)


@st.composite
def moments(draw: st.DrawFn, name: str) -> datetime:
    """A moment, usually within a day and a half of one of the zone's DST changes."""
    changes = _transitions(name)
    if changes and draw(st.integers(0, 3)):
        base = draw(st.sampled_from(changes))
        shift = draw(st.integers(-36 * 3600, 12 * 3600))
    else:
        base = datetime(2020, 1, 1, tzinfo=UTC)
        shift = draw(st.integers(0, 10 * 365 * 86400))
    moment = base + timedelta(seconds=shift)
    if draw(st.booleans()):
        moment = moment.replace(second=0)  # exactly on a minute: the tick at that minute is not "after"
    return moment


def _matches(entry: crontab, wall: datetime) -> bool:
    return (
        wall.minute in entry.minute
        and wall.hour in entry.hour
        and wall.day in entry.day_of_month
        and wall.month in entry.month_of_year
        and wall.isoweekday() % 7 in entry.day_of_week
    )


def _brute_ticks(entry: crontab, after: datetime, until: datetime, tz: tzinfo) -> list[datetime]:
    """Every tick in (after, until], by the rule, from every wall-clock minute that could land there."""
    wall = (after.astimezone(tz).replace(tzinfo=None) - timedelta(hours=3)).replace(second=0, microsecond=0)
    end = until.astimezone(tz).replace(tzinfo=None) + timedelta(hours=3)
    ticks = set()
    while wall <= end:
        if _matches(entry, wall):
            tick = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)  # skipped: shifted; repeated: first
            if after < tick <= until:
                ticks.add(tick)
        wall += timedelta(minutes=1)
    return sorted(ticks)


def _check(entry: crontab, moment: datetime, name: str) -> None:
    tz = ZoneInfo(name)
    result = entry.next_after(moment, tz)
    assert result.tzinfo is not None
    after = moment.astimezone(UTC)
    tick = result.astimezone(UTC)
    assert tick > after, "strictly after"
    assert tick.second == 0 and tick.microsecond == 0
    # its wall reading matches, or it is a skipped reading moved past the gap
    local = tick.astimezone(tz)
    wall = local.replace(tzinfo=None)
    if not (_matches(entry, wall) and wall.replace(tzinfo=tz, fold=0).astimezone(UTC) == tick):
        before = min((tick - timedelta(hours=h)).astimezone(tz).utcoffset() for h in (0, 25))  # type: ignore[type-var]
        skipped = (tick + before).replace(tzinfo=None)  # type: ignore[operator]
        assert _matches(entry, skipped), f"{local} matches no field reading"
        assert skipped.replace(tzinfo=tz).astimezone(UTC) == tick
        assert skipped.replace(tzinfo=tz).astimezone(UTC).astimezone(tz).replace(tzinfo=None) != skipped
    # nothing between was skipped, and within the window the brute force agrees
    until = min(tick, after + WINDOW)
    brute = _brute_ticks(entry, after, until, tz)
    if tick <= after + WINDOW:
        assert brute[:1] == [tick], f"brute force finds {brute[:1]}, next_after {tick}"
    else:
        assert brute == [], f"next_after {tick} skipped {brute[:1]}"


@pytest.mark.parametrize("name", ZONES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_next_after_is_the_first_tick_after_the_moment(name: str, data: st.DataObject) -> None:
    _check(data.draw(crontabs()), data.draw(moments(name)), name)


@pytest.mark.chaos
@pytest.mark.parametrize("name", ZONES)
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_next_after_is_the_first_tick_after_the_moment_many(name: str, data: st.DataObject) -> None:
    _check(data.draw(crontabs()), data.draw(moments(name)), name)


_CELERY_APP = celery.Celery(set_as_current=False, timezone="UTC")


@settings(max_examples=60, deadline=None)
@given(entry=crontabs(), moment=moments("UTC"))
def test_in_utc_the_next_run_is_celerys(entry: crontab, moment: datetime) -> None:
    minute, hour, dow, dom, moy = entry._orig
    theirs = celery.schedules.crontab(
        minute=minute, hour=hour, day_of_week=dow, day_of_month=dom, month_of_year=moy, app=_CELERY_APP
    )
    theirs.nowfun = lambda: moment
    expected = moment + theirs.remaining_estimate(moment)
    assert entry.next_after(moment) == expected
