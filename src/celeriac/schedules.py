"""When a periodic task is due: the schedules a ``beat_schedule`` entry or ``app.add_periodic_task`` takes.

Every schedule answers one question, :meth:`BaseSchedule.next_after`: given the moment of a run (or of
the beat's start), when is the next tick? The beat asks it with aware datetimes and the app's
``timezone``; a schedule that reads the wall clock (crontab, solar) works in that zone unless it was given
its own. Ticks are instants, so two beat processes that agree on the last run agree on the next one.

``is_due`` and ``remaining_estimate`` are there for code written against Celery's schedules.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from datetime import UTC, datetime, timedelta, tzinfo
from typing import NamedTuple
from zoneinfo import ZoneInfo

__all__ = ["BaseSchedule", "schedstate", "schedule", "zone"]


class schedstate(NamedTuple):  # Celery's lower-case name
    is_due: bool
    next: float
    """Seconds until the schedule should be asked again."""


def zone(tz: tzinfo | str | None) -> tzinfo:
    """A zone from a name (``"Europe/Paris"``), a tzinfo, or None (UTC)."""
    if tz is None:
        return UTC
    if isinstance(tz, str):
        return UTC if tz.upper() == "UTC" else ZoneInfo(tz)
    return tz


def _aware(moment: datetime, tz: tzinfo) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=tz)


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
    """Every ``run_every`` (seconds or a timedelta), counted from the previous run."""

    def __init__(self, run_every: float | timedelta, relative: bool = False, tz: tzinfo | str | None = None):
        super().__init__(tz)
        self.run_every = run_every if isinstance(run_every, timedelta) else timedelta(seconds=run_every)
        if self.run_every <= timedelta(0):
            raise ValueError(f"a schedule's run_every must be positive, got {run_every!r}")
        self.relative = relative

    def next_after(self, moment: datetime, tz: tzinfo = UTC) -> datetime:
        return _aware(moment, self.tz or tz) + self.run_every

    def __repr__(self) -> str:
        return f"<freq: {self.run_every}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, schedule) and other.run_every == self.run_every

    def __hash__(self) -> int:
        return hash(self.run_every)
