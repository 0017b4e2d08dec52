"""Exceptions in result records: Celery's ``{exc_type, exc_message, exc_module}`` layout, both ways.

Reading a record never imports a module: the class is taken from ``builtins``, from celeriac, or from a
module this process has already imported; otherwise a stand-in subclass of ``RemoteTaskError`` with the
same name is made. (Importing the module a record names is the CVE-2021-23727 shape.)
"""

from __future__ import annotations

import builtins
import sys
from typing import Any

from celeriac import exceptions
from celeriac.exceptions import RemoteTaskError

_standins: dict[tuple[str, str], type[RemoteTaskError]] = {}

#: Where Celery keeps the twins of our exceptions: a record names them so, so that Celery code catching
#: ``celery.exceptions.TaskRevokedError`` or billiard's ``TimeLimitExceeded`` catches what we stored.
CELERY_HOMES = {
    **dict.fromkeys(
        (
            "TaskRevokedError",
            "Retry",
            "Reject",
            "Ignore",
            "MaxRetriesExceededError",
            "NotRegistered",
            "TimeoutError",
            "ChordError",
            "ImproperlyConfigured",
        ),
        "celery.exceptions",
    ),
    **dict.fromkeys(("SoftTimeLimitExceeded", "TimeLimitExceeded", "WorkerLostError"), "billiard.exceptions"),
}


def exception_to_dict(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, RemoteTaskError):
        return {"exc_type": exc.exc_type, "exc_message": list(exc.args), "exc_module": exc.exc_module}
    cls = type(exc)
    args = list(exc.args)
    try:
        import json

        json.dumps(args)
    except (TypeError, ValueError):
        args = [str(exc)]
    if not args and str(exc):
        args = [str(exc)]  # e.g. pydantic's ValidationError keeps its message out of args: keep the text
    module = cls.__module__
    if module == "celeriac.exceptions":
        module = CELERY_HOMES.get(cls.__qualname__, module)
    return {"exc_type": cls.__qualname__, "exc_message": args, "exc_module": module}


def _already_loaded(module: str, name: str) -> type[BaseException] | None:
    if module == "builtins":
        candidate = getattr(builtins, name, None)
    elif module in sys.modules:
        candidate = sys.modules[module]
        for part in name.split("."):
            candidate = getattr(candidate, part, None)
    else:
        return None
    if isinstance(candidate, type) and issubclass(candidate, BaseException):
        return candidate
    return None


def exception_from_dict(data: Any) -> BaseException:
    """Rebuild an exception from a result record's ``result`` field."""
    if not isinstance(data, dict) or "exc_type" not in data:
        return RemoteTaskError(repr(data))
    name = str(data.get("exc_type") or "Exception")
    module = str(data.get("exc_module") or "builtins")
    message = data.get("exc_message")
    args = tuple(message) if isinstance(message, (list, tuple)) else (message,)
    if CELERY_HOMES.get(name) == module or (module.startswith("celery.") and hasattr(exceptions, name)):
        module = "celeriac.exceptions"  # Celery's (and billiard's) exceptions have twins here
    cls = _already_loaded(module, name)
    if cls is not None:
        try:
            return cls(*args)
        except Exception:
            pass
    standin = _standins.get((module, name))
    if standin is None:
        standin = type(
            name.rpartition(".")[2],
            (RemoteTaskError,),
            {"__module__": module, "exc_type": name, "exc_module": module},
        )
        _standins[(module, name)] = standin
    return standin(*args)
