"""A caller's result and remote-control calls when the result backend or the broker cannot be reached:
our ``OperationalError`` (a ``ConnectionError``) saying what failed and where, the URL's password
hidden, the driver's error chained; never the driver's own exception type."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from celeriac import Celeriac
from celeriac.exceptions import CeleriacError, OperationalError
from celeriac.result import GroupResult
from tests.servers import RedisServer, free_port

SECRET = "s3cr3t-pw"


def unreachable(scheme: str) -> str:
    """A URL with a password, on a loopback port nobody listens on."""
    port = free_port()
    return {
        "redis": f"redis://:{SECRET}@127.0.0.1:{port}/0",
        "postgresql": f"db+postgresql://u:{SECRET}@127.0.0.1:{port}/test",
        "mysql": f"db+mysql://root:{SECRET}@127.0.0.1:{port}/test",
    }[scheme]


@pytest.fixture
def make_app() -> Iterator[Callable[..., Celeriac]]:
    made: list[Celeriac] = []

    def make(broker: str, backend: str) -> Celeriac:
        app = Celeriac("unreachable", broker=broker, backend=backend)
        made.append(app)
        return app

    yield make
    for app in made:
        app.close()


def failure_of(call: Callable[[], Any]) -> OperationalError:
    with pytest.raises(OperationalError) as failed:
        call()
    return failed.value


def check(error: OperationalError, what: str, where: str) -> None:
    text = str(error)
    assert text.startswith(what), text
    assert SECRET not in text and ":***@" in text and where in text, text
    cause = error.__cause__
    assert cause is not None and not isinstance(cause, CeleriacError), repr(cause)


@pytest.mark.parametrize("scheme", ["redis", "postgresql", "mysql"])
def test_result_reads_and_writes_on_an_unreachable_backend_raise_ours(
    make_app: Callable[..., Celeriac], scheme: str
) -> None:
    url = unreachable(scheme)
    host = url.rsplit("@", 1)[1].split("/")[0]
    app = make_app("memory://", url)
    result = app.AsyncResult("some-task")
    check(failure_of(lambda: result.state), "reading the state of task some-task", host)
    check(failure_of(lambda: result.get(timeout=5)), "waiting for the result of task some-task", host)
    group = GroupResult("some-group", [app.AsyncResult("a"), app.AsyncResult("b")], app=app)
    check(failure_of(group.save), "saving group some-group", host)
    if scheme != "redis":
        return  # the same paths as above; a refused SQL connection costs about a second each
    check(failure_of(result.forget), "forgetting the result of task some-task", host)
    check(failure_of(group.ready), "reading the results of group some-group", host)
    check(failure_of(lambda: GroupResult.restore("some-group", app=app)), "restoring group some-group", host)
    check(failure_of(group.forget), "forgetting group some-group", host)


@pytest.mark.parametrize("scheme", ["redis", "postgresql"])
def test_remote_control_on_an_unreachable_broker_raises_ours(
    make_app: Callable[..., Celeriac], scheme: str
) -> None:
    url = unreachable(scheme).removeprefix("db+")
    host = url.rsplit("@", 1)[1].split("/")[0]
    app = make_app(url, "memory://")
    check(failure_of(lambda: app.control.ping(timeout=0.5)), "remote control command 'ping'", host)
    check(
        failure_of(lambda: app.control.inspect(timeout=0.5).stats()), "remote control command 'stats'", host
    )
    check(failure_of(lambda: app.control.broadcast("shutdown")), "remote control command 'shutdown'", host)


def test_rpc_results_with_an_unreachable_rabbitmq_raise_ours(make_app: Callable[..., Celeriac]) -> None:
    app = make_app(f"amqp://guest:{SECRET}@127.0.0.1:{free_port()}//", "rpc://")
    error = failure_of(lambda: app.AsyncResult("some-task").get(timeout=5))
    assert SECRET not in str(error) and error.__cause__ is not None


def test_a_redis_backend_stopped_after_use_raises_ours(
    make_app: Callable[..., Celeriac], redis_server: Callable[..., RedisServer]
) -> None:
    server = redis_server()
    app = make_app("memory://", server.url())
    result = app.AsyncResult("some-task")
    assert result.state == "PENDING"  # connected, and a connection is pooled
    server.stop(kill=True)
    for call, what in [
        (lambda: result.state, "reading the state of task some-task"),
        (lambda: result.get(timeout=5), "waiting for the result of task some-task"),
    ]:
        error = failure_of(call)
        assert str(error).startswith(f"{what}: {server.url()} cannot be reached"), str(error)
        assert error.__cause__ is not None and not isinstance(error.__cause__, CeleriacError)
