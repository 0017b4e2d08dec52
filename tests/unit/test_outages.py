"""Driver errors turned into ours on a caller's path (``outages_as_ours``)."""

from __future__ import annotations

import asyncio

import pytest

from celeriac._outages import outages_as_ours
from celeriac.exceptions import OperationalError
from celeriac.exceptions import TimeoutError as ResultTimeout

URL = "redis://:hunter2@db.example:6379/0"


class OutOfMemoryError(Exception):
    """Named as redis-py names the error of a server at maxmemory."""


def raised(exc: BaseException) -> BaseException:
    async def go() -> None:
        async with outages_as_ours("reading the state of task t", URL, "is it up?"):
            raise exc

    with pytest.raises(BaseException) as caught:
        asyncio.run(go())
    return caught.value


def test_an_outage_becomes_ours_with_the_password_hidden_and_the_cause_chained() -> None:
    cause = ConnectionRefusedError(111, "Connection refused")
    error = raised(cause)
    assert isinstance(error, OperationalError) and error.__cause__ is cause
    assert str(error) == (
        "reading the state of task t: redis://:***@db.example:6379/0 cannot be reached "
        "(ConnectionRefusedError: [Errno 111] Connection refused); is it up?"
    )


def test_a_full_server_is_told_apart_from_an_unreachable_one() -> None:
    error = raised(OutOfMemoryError("command not allowed when used memory > 'maxmemory'"))
    assert isinstance(error, OperationalError) and "cannot take it now (OutOfMemoryError" in str(error)


@pytest.mark.parametrize("exc", [ResultTimeout("not ready"), ValueError("bad"), KeyError("x")])
def test_our_own_errors_and_errors_that_are_no_outage_pass_unchanged(exc: Exception) -> None:
    assert raised(exc) is exc
