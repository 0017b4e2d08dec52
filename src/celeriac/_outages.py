"""Telling a server that is down, unreachable or busy from a request that is wrong: the first is worth
waiting out (a worker's writes, a caller's publish retries), the second is not."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from celeriac.exceptions import CeleriacError, OperationalError

#: Names of the errors drivers raise when their server cannot be reached or cannot take a write now
#: (redis-py's ``ConnectionError``, ``BusyLoadingError`` and ``OutOfMemoryError``, SQLAlchemy's
#: ``OperationalError``...): not all of them derive from the built-in ``ConnectionError``, so they are
#: known by name.
_OUTAGE_NAMES = (
    "ConnectionError",
    "TimeoutError",
    "OperationalError",
    "ConnectionClosed",
    "BusyLoadingError",
    "OutOfMemoryError",
)


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says the server is down, unreachable or busy (worth waiting out), rather than that
    what was sent is wrong (which no retry mends)."""
    if isinstance(exc, ConnectionError | OSError | TimeoutError):
        return True
    return any(cls.__name__.endswith(_OUTAGE_NAMES) for cls in type(exc).__mro__)


def safe_url(url: str) -> str:
    """The URL with its password hidden, for logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}"


@contextlib.asynccontextmanager
async def outages_as_ours(what: str, where: str, check: str) -> AsyncIterator[None]:
    """Inside, a driver's error saying its server is down, unreachable or busy becomes our
    ``OperationalError``: ``what`` failed on ``where`` (a URL, its password hidden here), the driver's
    error in the message and chained, and ``check`` saying what to look at. Our own errors (a result's
    ``TimeoutError`` among them) and errors that are no outage pass unchanged."""
    try:
        yield
    except CeleriacError:
        raise
    except Exception as exc:
        if not is_outage(exc):
            raise
        cause = (
            getattr(exc, "orig", None) or exc
        )  # SQLAlchemy's wrapper adds its SQL and a link: the driver's
        # A server that answers but cannot take the call now (loading, full) is no unreachable one.
        busy = type(cause).__name__ in ("BusyLoadingError", "OutOfMemoryError")
        state = "cannot take it now" if busy else "cannot be reached"
        raise OperationalError(
            f"{what}: {safe_url(where)} {state} ({type(cause).__name__}: {cause}); {check}"
        ) from exc


__all__ = ["is_outage", "outages_as_ours", "safe_url"]
