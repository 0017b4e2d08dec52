"""When the sun crosses an altitude or the meridian, from NOAA's solar equations.

The sun's declination, the equation of time and its distance come from the equations of NOAA's Global
Monitoring Laboratory solar calculator (after Jean Meeus, *Astronomical Algorithms*), good to well under
a minute of time between latitudes 72° south and north for years 1800 to 2100. An event's moment is found
by iterating: guess it, compute the sun at the guess, solve the hour angle for the altitude, repeat
until the moment moves by less than a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from math import acos, asin, cos, degrees, radians, sin, tan

__all__ = ["Sun", "crossing", "sun_at"]

_UNIX_EPOCH_JD = 2440587.5
_J2000 = 2451545.0


@dataclass(frozen=True, slots=True)
class Sun:
    declination: float
    """Degrees north of the celestial equator."""
    equation_of_time: float
    """Minutes by which sundial time runs ahead of mean time."""
    semidiameter: float
    """Degrees: half the apparent width of the sun's disk."""


def sun_at(moment: datetime) -> Sun:
    """The sun seen from the Earth at ``moment`` (aware)."""
    t = (moment.timestamp() / 86400.0 + _UNIX_EPOCH_JD - _J2000) / 36525.0  # Julian centuries since J2000
    mean_longitude = radians((280.46646 + t * (36000.76983 + 0.0003032 * t)) % 360.0)
    mean_anomaly = 357.52911 + t * (35999.05029 - 0.0001537 * t)
    m = radians(mean_anomaly)
    eccentricity = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
    centre = (
        sin(m) * (1.914602 - t * (0.004817 + 0.000014 * t))
        + sin(2 * m) * (0.019993 - 0.000101 * t)
        + sin(3 * m) * 0.000289
    )
    true_longitude = degrees(mean_longitude) + centre
    true_anomaly = radians(mean_anomaly + centre)
    distance = 1.000001018 * (1 - eccentricity**2) / (1 + eccentricity * cos(true_anomaly))  # AU
    node = radians(125.04 - 1934.136 * t)
    apparent_longitude = radians(true_longitude - 0.00569 - 0.00478 * sin(node))
    mean_obliquity = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
    obliquity = radians(mean_obliquity + 0.00256 * cos(node))
    declination = degrees(asin(sin(obliquity) * sin(apparent_longitude)))
    y = tan(obliquity / 2) ** 2
    e = eccentricity
    equation = (
        y * sin(2 * mean_longitude)
        - 2 * e * sin(m)
        + 4 * e * y * sin(m) * cos(2 * mean_longitude)
        - 0.5 * y * y * sin(4 * mean_longitude)
        - 1.25 * e * e * sin(2 * m)
    )
    return Sun(declination, 4 * degrees(equation), 0.26656 / distance)


def crossing(
    day: date,
    latitude: float,
    longitude: float,
    altitude: float | None,
    direction: int,
    *,
    limb: bool = False,
) -> datetime | None:
    """The moment, near the solar noon that falls on UTC date ``day``, the sun's centre crosses
    ``altitude`` degrees rising (``direction`` -1) or setting (+1), or crosses the meridian (``altitude``
    None). ``limb`` lowers the altitude by the sun's semidiameter, so that it is the upper edge that
    crosses. None when the sun does not reach the altitude that day (polar day or night)."""
    midnight = datetime(day.year, day.month, day.day, tzinfo=UTC)
    lat = radians(latitude)
    guess = midnight + timedelta(minutes=720 - 4 * longitude)
    reached = True
    for _ in range(12):
        sun = sun_at(guess)
        minutes = 720 - 4 * longitude - sun.equation_of_time
        if altitude is not None:
            target = altitude - (sun.semidiameter if limb else 0.0)
            dec = radians(sun.declination)
            cos_hour = (sin(radians(target)) - sin(lat) * sin(dec)) / (cos(lat) * cos(dec))
            # Out of range: not reached at the guess's declination. Near the edge of polar day or night
            # it may be at midnight's, so look there before saying the day has no event.
            reached = -1.0 <= cos_hour <= 1.0
            minutes += direction * 4 * degrees(acos(min(1.0, max(-1.0, cos_hour))))
        moment = midnight + timedelta(minutes=minutes)
        if abs((moment - guess).total_seconds()) < 0.5:
            return moment if reached else None
        guess = moment
    return guess if reached else None
