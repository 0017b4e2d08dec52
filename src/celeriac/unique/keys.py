"""What a unique send holds: its key, its window and when the worker lets the key go.

The key names the task and either the caller's ``idempotency_key`` or a digest of the call's arguments
(JSON with the type markers of the wire format; keyword arguments in name order), so two sends of one
task with equal arguments share a key, and two tasks never do. The message carries it in the header
``celeriac_unique`` for the worker: ``{"key", "until", "keep"}``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from celeriac.protocol.serializers import dumps

if TYPE_CHECKING:
    from celeriac._sending import SendOptions
    from celeriac.app import Celeriac
    from celeriac.protocol.message import TaskCall
    from celeriac.task import Task

__all__ = ["HEADER", "UNTIL", "Uniqueness", "check_task_options", "uniqueness_of"]

#: The header a keyed message carries its key in.
HEADER = "celeriac_unique"
#: When the worker lets a held key go: when the task starts, when it finishes, or never (the window ends).
UNTIL = ("window", "start", "finish")
#: The window of a send that gives an ``idempotency_key`` and no ``unique_for``, when ``result_expires``
#: is 0 (keep results forever).
DAY = 86400.0


@dataclass(frozen=True, slots=True)
class Uniqueness:
    """One unique send: the ``key``, held ``window`` seconds unless released at ``until``; a successful
    run is recorded as finished for ``keep`` seconds."""

    key: str
    window: float
    until: str
    keep: float

    def header(self) -> dict[str, Any]:
        """What the message carries for the worker."""
        return {"key": self.key, "until": self.until, "keep": self.keep}


def _seconds(value: Any, what: str) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{what} is a number of seconds greater than 0, got {value!r}")
    return float(value)


def check_task_options(name: str, unique_for: Any, unique_until: Any) -> None:
    """Raise ValueError naming the task and the option when ``@app.task(unique_for=, unique_until=)``
    is not what it must be."""
    try:
        if unique_for is not None:
            _seconds(unique_for, "unique_for")
        if unique_until is not None and unique_until not in UNTIL:
            raise ValueError(f"unique_until is one of {', '.join(UNTIL)}, got {unique_until!r}")
    except ValueError as exc:
        raise ValueError(f"task {name!r}: {exc}") from None


def uniqueness_of(
    app: Celeriac, call: TaskCall, opts: SendOptions, task: Task[Any, Any] | None
) -> Uniqueness:
    """The uniqueness of ``call``, sent with ``opts`` (which, or the task, ask for one).

    Raises ValueError naming the option when ``unique_for``, ``unique_until`` or ``idempotency_key``
    is not what it must be.
    """
    window: Any = opts.unique_for if opts.unique_for is not None else (task.unique_for if task else None)
    explicit = opts.idempotency_key
    expires = float(app.conf.result_expires or 0) or DAY
    window = _seconds(window, "unique_for") if window is not None else expires
    until: Any = opts.unique_until or (task.unique_until if task else None) or "window"
    if until not in UNTIL:
        raise ValueError(f"unique_until is one of {', '.join(UNTIL)}, got {until!r}")
    if explicit is not None:
        if not isinstance(explicit, str) or not explicit:
            raise ValueError(f"idempotency_key is a non-empty string, got {explicit!r}")
        key = f"{call.name}:key:{explicit}"
    else:
        _, data = dumps([call.args, sorted(call.kwargs.items())], "json")
        key = f"{call.name}:args:{hashlib.sha256(data).hexdigest()}"
    return Uniqueness(key, window, until, max(window, expires))
