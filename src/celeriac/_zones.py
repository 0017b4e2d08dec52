"""Time zones by name, the machine's own zone, and the app's zone from ``timezone`` and ``enable_utc``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["app_zone", "local_zone", "zone"]


def zone(tz: tzinfo | str | None) -> tzinfo:
    """A zone from an IANA name (``"Europe/Paris"``), a tzinfo, or None (UTC).

    Raises ValueError naming an unknown zone, TypeError for anything else."""
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(f"a time zone is a name such as 'Europe/Paris' or a tzinfo, got {tz!r}")
    if tz.strip().upper() in ("UTC", "Z", "ETC/UTC"):
        return UTC
    return _named(tz.strip())


@cache
def _named(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris'") from None


def local_zone() -> tzinfo:
    """The machine's zone, as Celery finds it with ``enable_utc=False`` and no ``timezone``: ``TZ`` when
    it names a zone, else the zone ``/etc/localtime`` points to, else that file read as a zone, else the
    fixed offset the C library reports now (which knows no DST)."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return zone(name)
        except ValueError:
            pass
    localtime = Path("/etc/localtime")
    try:
        target = str(localtime.resolve())
        if "zoneinfo/" in target:
            return zone(target.split("zoneinfo/", 1)[1])
        with localtime.open("rb") as file:
            return ZoneInfo.from_file(file, key="localtime")
    except (OSError, ValueError):
        pass
    offset = -(time.altzone if time.localtime().tm_isdst > 0 else time.timezone)
    return timezone(timedelta(seconds=offset))


def app_zone(name: tzinfo | str | None, enable_utc: bool) -> tzinfo:
    """The app's zone as Celery's ``app.timezone`` decides it: the ``timezone`` setting when given (whatever
    ``enable_utc`` says), else UTC when ``enable_utc``, else the machine's zone."""
    if name:
        return zone(name)
    return UTC if enable_utc else local_zone()


def now_in(tz: tzinfo) -> datetime:
    """The current time, aware, read in ``tz``."""
    return datetime.now(UTC).astimezone(tz)
