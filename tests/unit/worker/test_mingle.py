"""Mingle: a worker started later greets the others once ready and takes in the ids they hold revoked
and their clock; ``mingle=False`` (``--without-mingle``) greets nobody."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from celeriac import Celeriac
from celeriac.testing import start_worker
from celeriac.worker._inspect import remember_revoked, revoked_ids


@pytest.fixture
def app(request: pytest.FixtureRequest) -> Iterator[Celeriac]:
    url = f"memory://mingle-{request.node.name}"
    app = Celeriac("mingle", broker=url, backend="disabled://")
    yield app
    app.close()


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_later_worker_learns_the_revoked_ids_and_the_clock_of_the_others(app: Celeriac) -> None:
    with start_worker(app, hostname="first@mingle") as first:
        assert first.control is not None
        remember_revoked(first, ["revoked-in-memory-1", "revoked-in-memory-2"])
        first.control.state.clock = 500
        with start_worker(app, hostname="second@mingle") as second:
            assert second.control is not None
            eventually(lambda: "revoked-in-memory-2" in revoked_ids(second))
            assert {"revoked-in-memory-1", "revoked-in-memory-2"} <= set(revoked_ids(second))
            eventually(lambda: second.control is not None and second.control.state.clock > 500)


def test_without_mingle_a_worker_greets_nobody(app: Celeriac) -> None:
    with start_worker(app, hostname="first@mingle") as first:
        remember_revoked(first, ["only-here"])
        with (
            start_worker(app, hostname="alone@mingle", mingle=False) as alone,
            start_worker(app, hostname="witness@mingle") as witness,
        ):
            eventually(lambda: "only-here" in revoked_ids(witness))  # a greeting was answered meanwhile
            assert alone._mingling is None
            assert "only-here" not in revoked_ids(alone)
