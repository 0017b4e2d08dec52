"""Telling a server that is down, unreachable or busy from a request that is wrong: the first is worth
waiting out (a worker's writes, a caller's publish retries), the second is not."""

from __future__ import annotations

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


__all__ = ["is_outage", "safe_url"]
