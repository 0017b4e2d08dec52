"""ETA and expiry times across the two when ``timezone`` is set, as Celery 5.7 writes and reads them.

Celery's client writes a countdown as ``app.now() + countdown`` (the app's zone, with its offset) and a
datetime as given, a naive one naive; Celery's worker reads a naive time as UTC, whatever its own
``timezone``. celeriac's client writes the same instants, and each side reads the other's alike.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from celery import Celery

from celeriac import Celeriac
from celeriac._sending import SendOptions, build_call
from celeriac.protocol import encode_task
from tests.interop.test_protocol_interop import (
    _add_tasks,
    celery_request,
    decode,
    envelope_of,
    take_published,
)

NAIVE = datetime(2030, 1, 1, 12, 0)


def test_celeriac_reads_a_countdown_celery_wrote_in_its_zone(make_celery: Callable[..., Celery]) -> None:
    client = make_celery(timezone="Asia/Kolkata")
    before = datetime.now(UTC)
    client.send_task("interop.add", args=[1, 2], countdown=60, expires=3600)
    envelope = take_published(client)
    call = decode(envelope)
    assert call.eta is not None and call.expires is not None
    assert timedelta(seconds=59) < call.eta - before < timedelta(seconds=65)
    assert timedelta(seconds=3599) < call.expires - before < timedelta(seconds=3605)
    worker = make_celery(timezone="America/New_York")
    _add_tasks(worker)
    request = celery_request(worker, envelope)
    assert (request.eta, request.expires) == (call.eta, call.expires)  # the same instants as Celery's


def test_a_naive_eta_from_celery_is_utc_to_both_workers(make_celery: Callable[..., Celery]) -> None:
    client = make_celery(timezone="Asia/Kolkata")
    client.send_task("interop.add", args=[1, 2], eta=NAIVE)
    envelope = take_published(client)
    call = decode(envelope)
    assert call.eta == NAIVE.replace(tzinfo=UTC)
    worker = make_celery(timezone="Asia/Kolkata")
    _add_tasks(worker)
    assert celery_request(worker, envelope).eta == call.eta


def test_celery_reads_celeriac_times_as_the_same_instants(make_celery: Callable[..., Celery]) -> None:
    app = Celeriac("tz", broker="memory://", backend="memory://", timezone="Asia/Kolkata")
    worker = make_celery(timezone="America/New_York")
    _add_tasks(worker)
    for options in (
        {"countdown": 60, "expires": 3600},
        {"eta": NAIVE, "expires": NAIVE + timedelta(hours=1)},
    ):
        _, call, _, _ = build_call(app, "interop.add", [1, 2], {}, SendOptions.parse(dict(options)), None)
        request = celery_request(worker, envelope_of(call, worker))
        assert (request.eta, request.expires) == (call.eta, call.expires)
        assert decode(envelope_of(call, worker)).eta == call.eta
    assert encode_task(call).headers["eta"] == "2030-01-01T12:00:00+00:00"
