"""Schedules: crontab's fields and next run (Celery's semantics, exact across DST), the interval schedule,
and solar events checked against an almanac and against Celery's own solar (ephem)."""

from __future__ import annotations

import pickle
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import celery
import celery.schedules
import pytest

from celeriac.schedules import ParseException, crontab, crontab_parser, schedule, solar

NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


# -- fields -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("minute", "*/15"),
        ("minute", "1,13,30-45,50-59/2"),
        ("minute", "50-10"),
        ("minute", "1-30/7"),
        ("minute", " 5 , 7"),
        ("minute", 7),
        ("minute", {0, 30}),
        ("minute", [1, 2, 3]),
        ("minute", range(0, 60, 20)),
        ("hour", "0,8-17/2"),
        ("hour", "*/3"),
        ("day_of_week", "mon-fri"),
        ("day_of_week", "fri-mon"),
        ("day_of_week", "sun"),
        ("day_of_week", "Sunday"),
        ("day_of_week", "*/2"),
        ("day_of_week", "5-0"),
        ("day_of_week", "thu,sat"),
        ("day_of_month", "2-30/2"),
        ("day_of_month", "1-7,15-21"),
        ("day_of_month", "*/3"),
        ("month_of_year", "*/3"),
        ("month_of_year", "2-12/2"),
        ("month_of_year", "jan-mar"),
        ("month_of_year", "dec-feb"),
        ("month_of_year", "sep,nov"),
    ],
)
def test_a_field_expands_to_what_celery_expands_it_to(field: str, spec: object) -> None:
    ours = crontab(**{field: spec})  # type: ignore[arg-type]
    theirs = celery.schedules.crontab(**{field: spec})
    assert set(getattr(ours, field)) == set(getattr(theirs, field))


def test_seven_is_sunday_too_as_in_cron() -> None:
    # Celery 5.7 refuses 7; cron (and celeriac) read it as Sunday, alone or ending a range.
    assert crontab(day_of_week=7).day_of_week == {0}
    assert crontab(day_of_week="7").day_of_week == {0}
    assert crontab(day_of_week="5-7").day_of_week == {5, 6, 0}
    assert crontab(day_of_week="1-7/2").day_of_week == {1, 3, 5, 0}
    assert crontab(day_of_week="7-2").day_of_week == {0, 1, 2}


def test_names_take_whole_words_and_abbreviations_in_any_case() -> None:
    assert crontab(day_of_week="TUES,thurs,Saturday").day_of_week == {2, 4, 6}
    assert crontab(month_of_year="Sept,december").month_of_year == {9, 12}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"minute": "60"}, r"crontab minute: 60 in '60' is out of range 0-59"),
        ({"minute": "*/0"}, r"crontab minute: '\*/0': the step after '/' must be a whole number above 0"),
        ({"minute": "5/15"}, r"crontab minute: '5/15': a step needs .* \(write '5-59/15'\)"),
        ({"minute": "1,,2"}, r"crontab minute: empty part in '1,,2'"),
        ({"minute": ""}, r"crontab minute: empty part"),
        ({"minute": "x"}, r"crontab minute: 'x' in 'x' is not a number"),
        ({"minute": "-1"}, r"crontab minute: '' in '-1' is not a number"),
        ({"minute": []}, r"crontab minute: \[\] matches nothing"),
        ({"hour": 24}, r"crontab hour: 24 is out of range 0-23"),
        ({"hour": "2-25"}, r"crontab hour: 25 in '2-25' is out of range 0-23"),
        ({"day_of_week": "jan"}, r"crontab day_of_week: 'jan' in 'jan' is not a number or a day name"),
        ({"day_of_week": "8"}, r"crontab day_of_week: 8 in '8' is out of range 0-7"),
        ({"day_of_month": "0"}, r"crontab day_of_month: 0 in '0' is out of range 1-31"),
        ({"month_of_year": "mon"}, r"crontab month_of_year: 'mon' in 'mon' is not a number or a month name"),
        ({"month_of_year": 13}, r"crontab month_of_year: 13 is out of range 1-12"),
        (
            {"day_of_month": "30-31", "month_of_year": "feb"},
            r"day_of_month '30-31' never occurs in month_of_year 'feb'",
        ),
    ],
)
def test_a_bad_field_is_a_value_error_naming_the_field_and_the_part(kwargs: dict[str, object], message: str):
    with pytest.raises(ValueError, match=message) as caught:
        crontab(**kwargs)  # type: ignore[arg-type]
    assert isinstance(caught.value, ParseException) or "never occurs" in message


@pytest.mark.parametrize("spec", [1.5, True, object()])
def test_a_field_of_the_wrong_type_is_a_type_error(spec: object) -> None:
    with pytest.raises(TypeError, match="crontab minute"):
        crontab(minute=spec)  # type: ignore[arg-type]


def test_crontab_parser_keeps_celerys_interface() -> None:
    assert crontab_parser(60).parse("*/15") == {0, 15, 30, 45}
    assert crontab_parser(24).parse("*/4") == {0, 4, 8, 12, 16, 20}
    assert crontab_parser(31, 1).parse("*/3") == {1, 4, 7, 10, 13, 16, 19, 22, 25, 28, 31}
    assert crontab_parser(12, 1).parse("2-12/2") == {2, 4, 6, 8, 10, 12}
    assert crontab_parser(7).parse("mon-wed") == {1, 2, 3}
    with pytest.raises(crontab_parser.ParseException):
        crontab_parser(60).parse("1,,2")


def test_from_string_reads_cron_field_order() -> None:
    assert crontab.from_string("*/5 9-17 1 jan-jun mon-fri") == crontab(
        minute="*/5", hour="9-17", day_of_month=1, month_of_year="jan-jun", day_of_week="mon-fri"
    )
    with pytest.raises(ValueError, match="a crontab string has 5 fields"):
        crontab.from_string("* * * *")


def test_equal_when_they_match_the_same_minutes_hashable_and_picklable() -> None:
    assert crontab() == crontab(minute="0-59", hour="*/1", day_of_week="0-6")
    assert crontab(minute=0) != crontab(minute=1)
    assert crontab(minute=0, tz="Europe/Paris") != crontab(minute=0)
    entry = crontab(minute="*/15", hour="9-17", day_of_week="mon-fri", tz="Europe/Paris")
    assert len({entry, crontab(minute="*/15", hour="9-17", day_of_week="mon-fri", tz="Europe/Paris")}) == 1
    again = pickle.loads(pickle.dumps(entry))
    assert again == entry and hash(again) == hash(entry)
    assert again.next_after(datetime(2026, 1, 5, tzinfo=UTC)) == entry.next_after(
        datetime(2026, 1, 5, tzinfo=UTC)
    )
    assert repr(entry) == "<crontab: */15 9-17 * * mon-fri (m/h/dM/MY/d) tz=Europe/Paris>"
    assert repr(crontab(minute=[0, 30])) == "<crontab: 0,30 * * * * (m/h/dM/MY/d)>"


# -- next run ---------------------------------------------------------------------------------------


def _at(*fields: int, tz: object = UTC) -> datetime:
    return datetime(*fields, tzinfo=tz)  # type: ignore[arg-type, misc]


def test_next_after_is_strictly_after() -> None:
    every_quarter = crontab(minute="*/15")
    assert every_quarter.next_after(_at(2026, 1, 1, 10, 0)) == _at(2026, 1, 1, 10, 15)
    assert every_quarter.next_after(_at(2026, 1, 1, 10, 0, 0, 1)) == _at(2026, 1, 1, 10, 15)
    assert every_quarter.next_after(_at(2026, 1, 1, 9, 59, 59)) == _at(2026, 1, 1, 10, 0)
    assert every_quarter.next_after(_at(2026, 1, 1, 23, 50)) == _at(2026, 1, 2, 0, 0)


def test_all_three_day_fields_must_match_as_in_celery() -> None:
    # Celery's rule (not cron's either-or): the first Monday of a month.
    first_monday = crontab(0, 9, day_of_week="mon", day_of_month="1-7")
    assert first_monday.next_after(_at(2026, 1, 1)) == _at(2026, 1, 5, 9, 0)
    assert first_monday.next_after(_at(2026, 1, 5, 9, 0)) == _at(2026, 2, 2, 9, 0)


def test_a_rare_schedule_is_answered_at_once() -> None:
    leap_monday = crontab(0, 0, day_of_month=29, month_of_year=2, day_of_week="mon")
    began = time.perf_counter()
    assert leap_monday.next_after(_at(2026, 12, 7)) == _at(2044, 2, 29)
    assert crontab.from_string("0 0 29 2 *").next_after(_at(2024, 2, 29)) == _at(2028, 2, 29)
    assert time.perf_counter() - began < 0.05


def test_the_app_zone_is_used_unless_the_crontab_has_its_own() -> None:
    seven = crontab(0, 7)
    assert seven.next_after(_at(2026, 7, 1), NEW_YORK) == _at(2026, 7, 1, 7, 0, tz=NEW_YORK)
    assert seven.next_after(_at(2026, 7, 1), NEW_YORK).astimezone(UTC) == _at(2026, 7, 1, 11, 0)
    own = crontab(0, 7, tz="Europe/London")
    assert own.next_after(_at(2026, 7, 1), NEW_YORK) == _at(2026, 7, 1, 7, 0, tz=LONDON)
    # a naive moment is read in the zone
    assert seven.next_after(datetime(2026, 7, 1, 6, 59), NEW_YORK) == _at(2026, 7, 1, 7, 0, tz=NEW_YORK)


def test_a_skipped_time_runs_as_far_after_the_change_as_it_was_into_the_gap() -> None:
    half_past_two = crontab(30, 2)  # 2026-03-08: New York's clocks go from 02:00 to 03:00
    assert half_past_two.next_after(_at(2026, 3, 8, 1, 0, tz=NEW_YORK), NEW_YORK) == _at(
        2026, 3, 8, 3, 30, tz=NEW_YORK
    )
    # asked after the jump but before 03:30, the day's run is still ahead
    assert half_past_two.next_after(_at(2026, 3, 8, 3, 10, tz=NEW_YORK), NEW_YORK) == _at(
        2026, 3, 8, 3, 30, tz=NEW_YORK
    )
    # Lord Howe skips 30 minutes (02:00 -> 02:30) on 2026-10-04
    quarter_past = crontab(15, 2)
    assert quarter_past.next_after(_at(2026, 10, 4, 1, 0, tz=LORD_HOWE), LORD_HOWE) == _at(
        2026, 10, 4, 2, 45, tz=LORD_HOWE
    )
    # in the gap, a reading right after it comes before a shifted one
    both = crontab(minute="0,45", hour="2,3")
    ticks = _ticks(both, _at(2026, 3, 8, 1, 0, tz=NEW_YORK), NEW_YORK, 3)
    assert [t.strftime("%H:%M") for t in ticks] == ["03:00", "03:45", "02:00"]


def test_a_repeated_hour_runs_once() -> None:
    half_past_one = crontab(30, 1)  # 2026-11-01: New York shows 01:00-02:00 twice
    first = half_past_one.next_after(_at(2026, 11, 1, 0, 0, tz=NEW_YORK), NEW_YORK)
    assert first.astimezone(UTC) == _at(2026, 11, 1, 5, 30)  # 01:30 EDT
    assert half_past_one.next_after(first, NEW_YORK).date() == datetime(2026, 11, 2).date()
    every_quarter = crontab(minute="*/15")
    ticks = _ticks(every_quarter, _at(2026, 11, 1, 5, 20, tz=UTC), NEW_YORK, 4)
    assert [t.astimezone(UTC).strftime("%H:%M") for t in ticks] == ["05:30", "05:45", "07:00", "07:15"]


def _ticks(entry: crontab, start: datetime, tz: ZoneInfo, count: int) -> list[datetime]:
    ticks, moment = [], start
    for _ in range(count):
        moment = entry.next_after(moment, tz)
        ticks.append(moment)
    return ticks


def test_is_due_and_remaining_estimate_answer_celerys_questions() -> None:
    hourly = crontab(minute=0)
    last = _at(2026, 1, 1, 10, 0)
    assert hourly.remaining_estimate(last, now=_at(2026, 1, 1, 10, 45)) == timedelta(minutes=15)
    assert hourly.is_due(last, now=_at(2026, 1, 1, 10, 45)) == (False, 900.0)
    assert hourly.is_due(last, now=_at(2026, 1, 1, 11, 0, 10)) == (True, 3590.0)


# -- interval ---------------------------------------------------------------------------------------


def test_an_interval_counts_elapsed_time_across_a_dst_change() -> None:
    hourly = schedule(timedelta(hours=1))
    before = _at(2026, 11, 1, 1, 30, tz=NEW_YORK)  # EDT, then the clock goes back
    after = hourly.next_after(before, NEW_YORK)
    assert after.astimezone(UTC) - before.astimezone(UTC) == timedelta(hours=1)


def test_a_relative_interval_is_rounded_to_its_resolution() -> None:
    hourly = schedule(timedelta(hours=1), relative=True)
    assert hourly.next_after(_at(2026, 1, 1, 10, 20)) == _at(2026, 1, 1, 11, 0)
    daily = schedule(timedelta(days=1), relative=True)
    assert daily.next_after(_at(2026, 1, 1, 10, 20, tz=NEW_YORK), NEW_YORK) == _at(2026, 1, 2, tz=NEW_YORK)
    assert schedule(30, relative=True).next_after(_at(2026, 1, 1, 10, 20, 5)) == _at(2026, 1, 1, 10, 20, 35)
    assert pickle.loads(pickle.dumps(hourly)).relative


# -- solar ------------------------------------------------------------------------------------------


def test_solar_matches_the_naval_observatory_almanac() -> None:
    # The U.S. Naval Observatory's "Sun and Moon Data for One Day", Atlanta (33.8 N, 84.4 W),
    # Sunday 6 September 2009, Eastern Daylight Time, as quoted in PyEphem's documentation
    # (https://rhodesmill.org/pyephem/rise-set.html, "Naval Observatory Risings and Settings"):
    # begin civil twilight 6:50, sunrise 7:15, sun transit 13:36, sunset 19:56, end civil twilight 20:21.
    almanac = {
        "dawn_civil": (6, 50),
        "sunrise": (7, 15),
        "solar_noon": (13, 36),
        "sunset": (19, 56),
        "dusk_civil": (20, 21),
    }
    start = _at(2009, 9, 6, 0, 0, tz=NEW_YORK)
    for event, (hour, minute) in almanac.items():
        tick = solar(event, 33.8, -84.4).next_after(start, NEW_YORK)
        published = _at(2009, 9, 6, hour, minute, tz=NEW_YORK)
        assert abs((tick - published).total_seconds()) <= 30, (
            event,
            tick,
        )  # the almanac rounds to the minute


PLACES = [
    (51.48, 0.0),  # Greenwich
    (40.71, -74.01),  # New York
    (-33.87, 151.21),  # Sydney
    (35.68, 139.69),  # Tokyo
    (-54.8, -68.3),  # Ushuaia
    (64.15, -21.94),  # Reykjavik
    (1.29, 103.85),  # Singapore
    (19.43, -99.13),  # Mexico City
    (-41.29, 174.78),  # Wellington
    (60.17, 24.94),  # Helsinki
]


@pytest.mark.parametrize("event", sorted(solar._all_events))
def test_solar_agrees_with_celerys_solar_within_a_minute(event: str) -> None:
    app = celery.Celery(set_as_current=False)
    for index, (lat, lon) in enumerate(PLACES):
        for month in (1, 4, 6, 9, 12):
            start = _at(2026, month, 3 + index, 7 * index % 24, 0)
            theirs = celery.schedules.solar(event, lat, lon, app=app, nowfun=lambda start=start: start)
            expected = start + theirs.remaining_estimate(start)
            ours = solar(event, lat, lon).next_after(start)
            assert abs((ours - expected).total_seconds()) < 60, (event, lat, lon, start, ours, expected)


def test_no_sunrise_in_the_polar_night_the_next_tick_is_the_day_it_comes_back() -> None:
    tromso = (69.65, 18.96)  # the sun stays down from late November to mid-January
    start = _at(2026, 12, 1)
    ours = solar("sunrise", *tromso).next_after(start)
    theirs = celery.schedules.solar(
        "sunrise", *tromso, app=celery.Celery(set_as_current=False), nowfun=lambda: start
    )
    expected = start + theirs.remaining_estimate(start)
    assert ours.month == 1 and ours.year == 2027
    assert abs((ours - expected).total_seconds()) < 180
    # and no sunset in the midnight sun
    assert solar("sunset", *tromso).next_after(_at(2026, 6, 1)).month == 7


def test_solar_validates_like_celery() -> None:
    with pytest.raises(ValueError, match=r"unknown solar event 'sunup': use one of dawn_astronomical, "):
        solar("sunup", 0, 0)
    with pytest.raises(ValueError, match="solar latitude must be a number from -90 to 90, got 91"):
        solar("sunrise", 91, 0)
    with pytest.raises(ValueError, match="solar longitude must be a number from -180 to 180, got -181"):
        solar("sunrise", 0, -181)
    entry = solar("sunset", 48.85, 2.35)
    assert pickle.loads(pickle.dumps(entry)) == entry
    assert hash(entry) == hash(solar("sunset", 48.85, 2.35))
    assert repr(entry) == "<solar: sunset at latitude 48.85, longitude: 2.35>"


def test_an_event_that_never_comes_is_an_error_not_a_hang() -> None:
    with pytest.raises(ValueError, match="does not reach sunrise at latitude 90"):
        solar("sunrise", 90, 0).next_after(_at(2026, 1, 1))
