"""When a periodic task is due: the schedules a ``beat_schedule`` entry or ``app.add_periodic_task`` takes.

Every schedule answers one question, :meth:`BaseSchedule.next_after`: given the moment of a run (or of
the beat's start), when is the next tick? The beat asks it with aware datetimes and the app's
``timezone``; a schedule that reads the wall clock (crontab) works in that zone unless it was given its
own. Ticks are instants, so two beat processes that agree on the last run agree on the next one.

``is_due`` and ``remaining_estimate`` are there for code written against Celery's schedules.
"""

from __future__ import annotations

import calendar
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any, ClassVar, NamedTuple

from celeriac import _sun, _zones

__all__ = [
    "BaseSchedule",
    "ParseException",
    "crontab",
    "crontab_parser",
    "schedstate",
    "schedule",
    "solar",
    "zone",
]


class schedstate(NamedTuple):  # Celery's lower-case name
    is_due: bool
    next: float
    """Seconds until the schedule should be asked again."""


def zone(tz: tzinfo | str | None) -> tzinfo:
    """A zone from a name (``"Europe/Paris"``), a tzinfo, or None (UTC); ValueError for an unknown name."""
    return _zones.zone(tz)


def _aware(moment: datetime, tz: tzinfo) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


def _instant(wall: datetime, tz: tzinfo) -> datetime:
    """The UTC instant of a wall-clock reading in ``tz``: a repeated reading is its first occurrence, and
    a reading the clock skipped is read with the offset in force before the skip, so it lands as far
    after the skip as it was into it (02:30 in a one-hour spring-forward gap is 03:30)."""
    return wall.replace(tzinfo=tz, fold=0).astimezone(UTC)


class BaseSchedule(ABC):
    """A rule for the ticks of a periodic task.

    ``tz``, when given, is the zone this schedule reads the wall clock in; otherwise the caller's
    (the app's ``timezone``) is used.
    """

    def __init__(self, tz: tzinfo | str | None = None) -> None:
        self.tz: tzinfo | None = None if tz is None else zone(tz)

    @abstractmethod
    def next_after(self, moment: datetime, tz: tzinfo = UTC) -> datetime:
        """The first tick strictly after ``moment`` (a naive one is read in ``tz``), as an aware datetime.

        ``tz`` is the zone to read wall-clock fields in when the schedule has no ``tz`` of its own."""

    def remaining_estimate(self, last_run_at: datetime, now: datetime | None = None) -> timedelta:
        tz = self.tz or UTC
        now = _aware(now, tz) if now is not None else datetime.now(UTC)
        return self.next_after(_aware(last_run_at, tz), tz) - now

    def is_due(self, last_run_at: datetime, now: datetime | None = None) -> schedstate:
        """Celery's question: is a run due now, given the last one, and when to ask again."""
        tz = self.tz or UTC
        now = _aware(now, tz) if now is not None else datetime.now(UTC)
        remaining = self.remaining_estimate(last_run_at, now).total_seconds()
        if remaining > 0:
            return schedstate(False, remaining)
        following = self.next_after(now, tz) - now
        return schedstate(True, following.total_seconds())


class schedule(BaseSchedule):  # Celery's lower-case name
    """Every ``run_every`` (seconds or a timedelta) of elapsed time, counted from the previous run.

    With ``relative``, as in Celery, a tick is rounded down to the interval's resolution on the wall
    clock (to the day, hour or minute for an interval of at least a day, an hour or a minute), but
    never to or before the previous run.
    """

    def __init__(self, run_every: float | timedelta, relative: bool = False, tz: tzinfo | str | None = None):
        super().__init__(tz)
        self.run_every = run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        if self.run_every <= timedelta(0):
            raise ValueError(f"a schedule's run_every must be positive, got {run_every!r}")
        self.relative = relative

    def next_after(self, moment: datetime, tz: tzinfo = UTC) -> datetime:
        zone_ = self.tz or tz
        moment = _aware(moment, zone_)
        start = moment.astimezone(UTC)
        due = start + self.run_every  # elapsed time: an hour is an hour across a DST change
        unit = self._resolution()
        if self.relative and unit is not None:
            wall = _floor(due.astimezone(zone_).replace(tzinfo=None), unit)
            due = _instant(wall, zone_)
            if due <= start:
                due = _instant(wall + unit, zone_)
        return due.astimezone(moment.tzinfo)

    def _resolution(self) -> timedelta | None:
        for unit in (timedelta(days=1), timedelta(hours=1), timedelta(minutes=1)):
            if self.run_every >= unit:
                return unit
        return None

    @property
    def seconds(self) -> float:
        return self.run_every.total_seconds()

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.run_every == self.run_every

    def __hash__(self) -> int:
        return hash(self.run_every)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_every, self.relative, self.tz))


def _floor(wall: datetime, unit: timedelta) -> datetime:
    if unit >= timedelta(days=1):
        return wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit >= timedelta(hours=1):
        return wall.replace(minute=0, second=0, microsecond=0)
    return wall.replace(second=0, microsecond=0)


# -- crontab ------------------------------------------------------------------------------------------

_WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
#: The most days each month can have (February in a leap year).
_DAYS_IN_MONTH = {month: calendar.monthrange(2000, month)[1] for month in range(1, 13)}


class ParseException(ValueError):
    """A crontab field that cannot be read (Celery's name); the message names the field and the part."""


class crontab_parser:  # Celery's lower-case name
    """Reads one crontab field into the set of values it matches (Celery's field syntax).

    A field is parts separated by commas; a part is ``*``, a value, a range ``a-b`` (one that runs past
    the end wraps round: ``fri-mon``), optionally followed by a step ``/n`` (``*/15``, ``1-30/2``).
    Values are numbers from ``min_`` to ``min_ + max_ - 1``, or names: ``mon``..``sun`` (or whole
    names) in a day-of-week field, ``jan``..``dec`` in a month field. In a day-of-week field both 0
    and 7 are Sunday.
    """

    ParseException = ParseException

    def __init__(self, max_: int = 60, min_: int = 0, *, field: str | None = None) -> None:
        self.max_, self.min_ = max_, min_
        self.low, self.high = min_, min_ + max_ - 1
        kind = {(7, 0): "day_of_week", (12, 1): "month_of_year"}.get((max_, min_))
        self.field = field or kind or "field"
        self.names = {"day_of_week": _WEEKDAYS, "month_of_year": _MONTHS}.get(self.field, ())
        #: day_of_week reads 7 as Sunday, as cron does
        self.top = self.high + 1 if self.field == "day_of_week" else self.high

    def parse(self, spec: str) -> set[int]:
        """The values ``spec`` matches; ParseException (a ValueError) naming the field and the bad part."""
        values: set[int] = set()
        for part in spec.split(","):
            values.update(self._part(part, spec))
        return values

    def _fail(self, message: str) -> ValueError:
        return ParseException(f"crontab {self.field}: {message}")

    def _part(self, part: str, spec: str) -> list[int]:
        text = part.strip()
        if not text:
            raise self._fail(f"empty part in {spec!r}")
        base, slash, step_text = text.partition("/")
        step = 1
        if slash:
            if not step_text.strip().isdigit() or int(step_text) == 0:
                raise self._fail(f"{text!r}: the step after '/' must be a whole number above 0")
            step = int(step_text)
        base = base.strip()
        if base == "*":
            values = list(range(self.low, self.high + 1))
        elif "-" in base:
            first, _, last = base.partition("-")
            values = self._range(self.value(first, text), self.value(last, text))
        elif slash:
            raise self._fail(
                f"{text!r}: a step needs '*' or a range before it (write '{base}-{self.high}/{step}')"
            )
        else:
            values = [self.value(base, text)]
        return [self.normal(v) for v in values[::step]]

    def _range(self, first: int, last: int) -> list[int]:
        if first == self.top > self.high:
            first = self.low  # 7-2 in day_of_week: Sunday to Tuesday
        if last >= first:
            return list(range(first, last + 1))
        return list(range(first, self.high + 1)) + list(range(self.low, last + 1))  # wraps round

    def normal(self, value: int) -> int:
        return self.low if value == self.top > self.high else value

    def value(self, token: str, part: str) -> int:
        """One value of the field: a number in range or a name."""
        token = token.strip()
        if token.isdigit():
            number = int(token)
            if not self.low <= number <= self.top:
                raise self._fail(f"{number} in {part!r} is out of range {self.low}-{self.top}")
            return number
        lowered = token.lower()
        if len(lowered) >= 3:
            for index, name in enumerate(self.names):
                if name.startswith(lowered):
                    return index + self.low
        kind = {"day_of_week": " or a day name (mon..sun)", "month_of_year": " or a month name (jan..dec)"}
        what = kind.get(self.field, "")
        raise self._fail(f"{token!r} in {part!r} is not a number{what}")


#: Each field: (count of values, lowest value), as crontab_parser takes them.
_FIELDS = {
    "minute": (60, 0),
    "hour": (24, 0),
    "day_of_week": (7, 0),
    "day_of_month": (31, 1),
    "month_of_year": (12, 1),
}

Cronspec = int | str | Iterable[int | str]


def _expand(field: str, spec: Cronspec | None) -> frozenset[int]:
    parser = crontab_parser(*_FIELDS[field], field=field)
    if spec is None:
        spec = "*"
    if isinstance(spec, bool) or not isinstance(spec, (int, str, Iterable)):
        raise TypeError(
            f"crontab {field} must be an int, a string or a collection of them, got {type(spec).__name__}"
        )
    items: Iterable[int | str] = [spec] if isinstance(spec, (int, str)) else spec
    values: set[int] = set()
    for item in items:
        if isinstance(item, str):
            values |= parser.parse(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            if not parser.low <= item <= parser.top:
                raise parser._fail(f"{item} is out of range {parser.low}-{parser.top}")
            values.add(parser.normal(item))
        else:
            raise TypeError(f"crontab {field}: {item!r} is not an int or a string")
    if not values:
        raise parser._fail(f"{spec!r} matches nothing")
    return frozenset(values)


class crontab(BaseSchedule):  # Celery's lower-case name
    """Ticks at the minutes whose wall-clock reading matches all five fields, as Celery's crontab does.

    Each field takes cron's syntax (see :class:`crontab_parser`), an int, or a collection of ints and
    strings. A day is a run day when it is in ``month_of_year`` and in ``day_of_month`` and in
    ``day_of_week`` (Celery's rule; plain cron takes either day field when both are restricted).

    Across a DST change (see ``_instant``): a time the clock skips runs as far after the change as it
    was into the gap (a 02:30 job on a spring-forward night runs at 03:30), and a time the clock
    shows twice runs once, the first time.
    """

    _order: ClassVar[tuple[str, ...]] = ("minute", "hour", "day_of_week", "day_of_month", "month_of_year")

    def __init__(
        self,
        minute: Cronspec = "*",
        hour: Cronspec = "*",
        day_of_week: Cronspec = "*",
        day_of_month: Cronspec = "*",
        month_of_year: Cronspec = "*",
        tz: tzinfo | str | None = None,
    ) -> None:
        super().__init__(tz)
        self._orig = (minute, hour, day_of_week, day_of_month, month_of_year)
        self.minute = _expand("minute", minute)
        self.hour = _expand("hour", hour)
        self.day_of_week = _expand("day_of_week", day_of_week)
        self.day_of_month = _expand("day_of_month", day_of_month)
        self.month_of_year = _expand("month_of_year", month_of_year)
        if not any(day <= _DAYS_IN_MONTH[m] for m in self.month_of_year for day in self.day_of_month):
            raise ValueError(
                f"crontab day_of_month {day_of_month!r} never occurs in month_of_year {month_of_year!r}"
            )
        self._minutes = sorted(self.minute)
        self._hours = sorted(self.hour)
        self._days = sorted(self.day_of_month)

    @classmethod
    def from_string(cls, spec: str, tz: tzinfo | str | None = None) -> crontab:
        """A crontab from cron's five fields: ``"minute hour day_of_month month_of_year day_of_week"``."""
        fields = spec.split()
        if len(fields) != 5:
            raise ValueError(
                f"a crontab string has 5 fields (minute hour day-of-month month day-of-week), got {spec!r}"
            )
        minute, hour, day_of_month, month_of_year, day_of_week = fields
        return cls(minute, hour, day_of_week, day_of_month, month_of_year, tz=tz)

    def next_after(self, moment: datetime, tz: tzinfo = UTC) -> datetime:
        zone_ = self.tz or tz
        after = _aware(moment, zone_).astimezone(UTC)
        best: datetime | None = None
        stop: datetime | None = None
        for wall in self._walls_from(_earliest_wall(after, zone_)):
            if stop is not None and wall >= stop:
                break
            tick = _instant(wall, zone_)
            if tick > after and (best is None or tick < best):
                # A later reading can only come earlier when this one was skipped by a DST change and
                # shifted past the readings just after the gap: look on to this tick's own reading.
                best, stop = tick, tick.astimezone(zone_).replace(tzinfo=None)
        assert best is not None  # _walls_from ends only by raising
        return best.astimezone(zone_)

    def _walls_from(self, start: datetime) -> Iterator[datetime]:
        """The matching wall-clock readings at or after ``start`` (naive), in order."""
        first = start.date()
        for day in self._days_from(first):
            for hour in self._hours:
                if day == first and hour < start.hour:
                    continue
                for minute in self._minutes:
                    if day == first and hour == start.hour and minute < start.minute:
                        continue
                    yield datetime.combine(day, time(hour, minute))

    def _days_from(self, first: date) -> Iterator[date]:
        year, month, from_day = first.year, first.month, first.day
        # Every (month, day) pair that exists falls on each weekday within the 400-year Gregorian cycle.
        for _ in range(12 * 401):
            if month in self.month_of_year:
                last = calendar.monthrange(year, month)[1]
                for day in self._days:
                    if day > last:
                        break
                    if day >= from_day and date(year, month, day).isoweekday() % 7 in self.day_of_week:
                        yield date(year, month, day)
            from_day = 1
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        raise RuntimeError(f"{self!r} has no run day within 400 years of {first}")

    def __repr__(self) -> str:
        minute, hour, dow, dom, moy = (_text(value) for value in self._orig)
        zone_ = f" tz={self.tz}" if self.tz is not None else ""
        return f"<crontab: {minute} {hour} {dom} {moy} {dow} (m/h/dM/MY/d){zone_}>"

    def _key(self) -> tuple[Any, ...]:
        return (self.minute, self.hour, self.day_of_week, self.day_of_month, self.month_of_year, self.tz)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, crontab):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (*self._orig, self.tz))


def _text(spec: Any) -> str:
    if isinstance(spec, (str, int)):
        return str(spec)
    return ",".join(str(v) for v in (sorted(spec, key=str) if isinstance(spec, (set, frozenset)) else spec))


def _earliest_wall(after: datetime, tz: tzinfo) -> datetime:
    """The earliest wall-clock reading whose tick can fall after ``after`` (UTC): its own reading, or
    earlier by a DST gap that ended within the last day (a skipped reading ticks after the gap)."""
    offset = min(
        (after - timedelta(hours=hours)).astimezone(tz).utcoffset() or timedelta(0) for hours in (0, 25)
    )
    return (after + offset).replace(tzinfo=None, second=0, microsecond=0)


# -- solar --------------------------------------------------------------------------------------------

#: event -> (the sun centre's altitude in degrees, or None for the meridian; -1 rising, +1 setting;
#: whether the upper edge counts rather than the centre). Sunrise and sunset are the upper edge 34'
#: below the horizon (the refraction almanacs assume), twilights the centre 6°, 12°, 18° below.
_EVENTS: dict[str, tuple[float | None, int, bool]] = {
    "dawn_astronomical": (-18.0, -1, False),
    "dawn_nautical": (-12.0, -1, False),
    "dawn_civil": (-6.0, -1, False),
    "sunrise": (-34 / 60, -1, True),
    "solar_noon": (None, 0, False),
    "sunset": (-34 / 60, 1, True),
    "dusk_civil": (-6.0, 1, False),
    "dusk_nautical": (-12.0, 1, False),
    "dusk_astronomical": (-18.0, 1, False),
}


class solar(BaseSchedule):  # Celery's lower-case name
    """Ticks at a solar event seen from a place: Celery's events (``sunrise``, ``sunset``, ``dawn_civil``,
    ``dawn_nautical``, ``dawn_astronomical``, ``dusk_civil``, ``dusk_nautical``, ``dusk_astronomical``,
    ``solar_noon``) at latitude ``lat`` (-90..90, north positive) and longitude ``lon`` (-180..180, east
    positive).

    Computed with NOAA's solar equations (``celeriac._sun``), to within about a minute of an almanac
    below 72° of latitude. On a day the event does not happen (the sun stays up, or down, as in polar
    summer or winter), the next tick is the next day it does; if it does not happen within two years
    (close to a pole), ``next_after`` raises ValueError.
    """

    _all_events: ClassVar[frozenset[str]] = frozenset(_EVENTS)

    def __init__(self, event: str, lat: float, lon: float, tz: tzinfo | str | None = None) -> None:
        super().__init__(tz)
        if event not in _EVENTS:
            raise ValueError(f"unknown solar event {event!r}: use one of {', '.join(sorted(_EVENTS))}")
        for what, value, bound in (("latitude", lat, 90), ("longitude", lon, 180)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not -bound <= value <= bound:
                raise ValueError(f"solar {what} must be a number from -{bound} to {bound}, got {value!r}")
        self.event, self.lat, self.lon = event, lat, lon

    def next_after(self, moment: datetime, tz: tzinfo = UTC) -> datetime:
        zone_ = self.tz or tz
        after = _aware(moment, zone_).astimezone(UTC)
        altitude, direction, limb = _EVENTS[self.event]
        day = after.date() - timedelta(days=1)  # a far-west event of the day before may still be ahead
        for _ in range(2 * 366 + 2):
            tick = _sun.crossing(day, self.lat, self.lon, altitude, direction, limb=limb)
            if tick is not None and tick > after:
                return tick.astimezone(zone_)
            day += timedelta(days=1)
        raise ValueError(
            f"the sun does not reach {self.event} at latitude {self.lat} within two years after {moment}"
        )

    def __repr__(self) -> str:
        return f"<solar: {self.event} at latitude {self.lat}, longitude: {self.lon}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, solar):
            return NotImplemented
        return (self.event, self.lat, self.lon) == (other.event, other.lat, other.lon)

    def __hash__(self) -> int:
        return hash((self.event, self.lat, self.lon))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.event, self.lat, self.lon, self.tz))
