"""``timezone`` and ``enable_utc``, as Celery 5.7 reads them: ``app.timezone``, ``app.now()``, the zone
countdowns and expiries are written in, naive datetimes (UTC, as Celery's worker reads them), and the
zone of ``date_done``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from celeriac import Celeriac
from celeriac._sending import SendOptions, build_call
from celeriac.exceptions import ConfigurationError
from celeriac.protocol import decode_task, encode_task
from celeriac.testing import start_worker

KOLKATA = ZoneInfo("Asia/Kolkata")


def _app(**settings: object) -> Celeriac:
    return Celeriac("tz", broker="memory://", backend="memory://", **settings)


def test_the_app_zone_follows_celerys_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _app().timezone is UTC
    assert _app().uses_utc_timezone()
    assert _app(timezone="Asia/Kolkata").timezone == KOLKATA
    assert _app(timezone="Asia/Kolkata", enable_utc=True).timezone == KOLKATA  # a timezone wins
    assert _app(timezone=KOLKATA).timezone is KOLKATA
    monkeypatch.setenv("TZ", "America/Santiago")
    assert _app(enable_utc=False).timezone == ZoneInfo("America/Santiago")  # the machine's zone
    assert not _app(enable_utc=False).uses_utc_timezone()


def test_changing_the_settings_changes_the_zone() -> None:
    app = _app()
    assert app.timezone is UTC
    app.conf.timezone = "Asia/Kolkata"
    assert app.timezone == KOLKATA


def test_an_unknown_zone_is_a_configuration_error_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match=r"setting 'timezone': unknown time zone 'Europe/Pariss'"):
        _app(timezone="Europe/Pariss")
    app = _app()
    with pytest.raises(ConfigurationError, match="setting 'timezone'"):
        app.conf.update(timezone="Mars/Olympus")
    with pytest.raises(ConfigurationError, match="setting 'timezone' must be str or tzinfo"):
        app.conf.timezone = 5
    monkeypatch.setenv("CELERIAC_TIMEZONE", "Nowhere/Town")
    with pytest.raises(ConfigurationError, match="setting 'timezone'"):
        _app()


def test_now_is_aware_in_the_app_zone() -> None:
    now = _app(timezone="Asia/Kolkata").now()
    assert now.tzinfo == KOLKATA and now.utcoffset() == timedelta(hours=5, minutes=30)
    assert abs(now - datetime.now(UTC)) < timedelta(seconds=5)


def _headers(app: Celeriac, **options: object) -> dict[str, object]:
    _, call, _, _ = build_call(app, "proj.add", [1, 2], {}, SendOptions.parse(dict(options)), None)
    return encode_task(call).headers


def test_a_countdown_and_an_expiry_in_seconds_are_written_in_the_app_zone() -> None:
    app = _app(timezone="Asia/Kolkata")
    before = datetime.now(UTC)
    headers = _headers(app, countdown=60, expires=3600)
    eta = datetime.fromisoformat(str(headers["eta"]))
    expires = datetime.fromisoformat(str(headers["expires"]))
    assert str(headers["eta"]).endswith("+05:30") and str(headers["expires"]).endswith("+05:30")
    assert timedelta(seconds=59) < eta - before < timedelta(seconds=65)
    assert timedelta(seconds=3599) < expires - before < timedelta(seconds=3605)


def test_a_naive_eta_is_utc_whatever_the_zone_and_an_aware_one_keeps_its_own() -> None:
    app = _app(timezone="Asia/Kolkata")
    naive = datetime(2030, 1, 1, 12, 0)
    headers = _headers(app, eta=naive, expires=datetime(2030, 1, 2, 12, 0))
    assert headers["eta"] == "2030-01-01T12:00:00+00:00"
    assert headers["expires"] == "2030-01-02T12:00:00+00:00"
    paris = datetime(2030, 1, 1, 12, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert _headers(app, eta=paris)["eta"] == "2030-01-01T12:00:00+01:00"
    # and the worker reads each as that instant, in UTC
    _, call, _, _ = build_call(app, "proj.add", [], {}, SendOptions.parse({"eta": paris}), None)
    decoded = decode_task(encode_task(call))
    assert decoded.eta == paris and decoded.eta is not None and decoded.eta.tzinfo is UTC


def test_date_done_is_written_in_the_app_zone() -> None:
    app = _app(timezone="Asia/Kolkata")

    @app.task(name="tz.echo")
    def echo(x: int) -> int:
        return x

    with start_worker(app):
        result = echo.delay(4)
        assert result.get(timeout=10) == 4
    done = result.date_done
    assert done is not None and done.utcoffset() == timedelta(hours=5, minutes=30)
    assert abs(done - datetime.now(UTC)) < timedelta(seconds=30)
    eager = echo.apply(args=(5,))
    assert eager.date_done is not None and eager.date_done.utcoffset() == timedelta(hours=5, minutes=30)
