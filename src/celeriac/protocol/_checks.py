"""Checks for the parts of a decoded task message: each returns the value or raises ``DecodeError``.

``what`` names the part in the reason, e.g. ``header 'eta'``, so a user can find it in the message.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from celeriac.exceptions import DecodeError

#: The longest task name or id accepted (Celery's SQL backends keep ids in 155 characters).
MAX_NAME = 255

# CR and LF forge log lines and protocol frames; NUL truncates C strings and breaks SQL text columns.
_LINE_BREAKS_OR_NUL = re.compile(r"[\r\n\x00]")
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


_KINDS: dict[type, str] = {bool: "boolean", str: "string", dict: "mapping", list: "list"}


def kind(value: Any) -> str:
    """A short name for a value's type, in JSON words where there is one."""
    if value is None:
        return "null"
    return _KINDS.get(type(value), type(value).__name__)


def text(value: Any, what: str, *, lines: bool = False) -> str | None:
    """An optional string without NUL, and without CR/LF unless ``lines`` allows them."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise DecodeError(f"{what} must be a string or null, got {kind(value)}")
    if "\x00" in value or (not lines and _LINE_BREAKS_OR_NUL.search(value)):
        forbidden = "NUL" if lines else "CR, LF or NUL"
        raise DecodeError(f"{what} contains a forbidden character ({forbidden}): {value[:80]!r}")
    return value


def identifier(value: Any, what: str) -> str:
    """A required id: a non-empty string of at most ``MAX_NAME`` characters without CR/LF/NUL."""
    if value is None:
        raise DecodeError(f"{what} is missing")
    checked = text(value, what)
    assert checked is not None
    if not checked:
        raise DecodeError(f"{what} is empty")
    if len(checked) > MAX_NAME:
        raise DecodeError(f"{what} is {len(checked)} characters long, over the limit of {MAX_NAME}")
    return checked


def optional_identifier(value: Any, what: str) -> str | None:
    return None if value is None else identifier(value, what)


def task_name(value: Any, what: str) -> str:
    """A task name: an identifier without whitespace or control characters."""
    name = identifier(value, what)
    if _WHITESPACE_OR_CONTROL.search(name):
        raise DecodeError(f"{what} {name[:80]!r} contains whitespace or a control character")
    return name


def count(value: Any, what: str) -> int:
    """A non-negative integer; missing or null counts as 0."""
    return optional_count(value, what) or 0


def optional_count(value: Any, what: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise DecodeError(f"{what} must be an integer, got {kind(value)}")
    if value < 0:
        raise DecodeError(f"{what} must not be negative, got {value}")
    return value


def flag(value: Any, what: str) -> bool:
    return bool(optional_flag(value, what))


def optional_flag(value: Any, what: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise DecodeError(f"{what} must be true or false, got {kind(value)}")
    return value


def priority(value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 255:
        raise DecodeError(f"priority property must be an integer from 0 to 255, got {value!r:.40}")
    return value


def seconds(value: Any, what: str) -> float | None:
    """An optional duration: a finite, non-negative number."""
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise DecodeError(f"{what} must be a number of seconds or null, got {kind(value)}")
    if not math.isfinite(value) or value < 0:
        raise DecodeError(f"{what} must be a finite, non-negative number of seconds, got {value}")
    return value


def timelimit(value: Any, what: str) -> tuple[float | None, float | None]:
    """The ``[hard, soft]`` pair of time limits; missing or null means neither."""
    if value is None:
        return None, None
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise DecodeError(f"{what} must be a pair [hard, soft] of seconds or nulls, got {value!r:.80}")
    return seconds(value[0], f"{what} hard limit"), seconds(value[1], f"{what} soft limit")


def when(value: Any, what: str, *, naive_is_local: bool = False) -> datetime | None:
    """An optional moment as an aware UTC datetime.

    Takes an ISO 8601 string, a datetime or a non-negative epoch number. A naive time is UTC, or
    local time when ``naive_is_local`` (protocol v1 with ``utc: false``).
    """
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value) or value < 0:
            raise DecodeError(f"{what} must be a date-time or a non-negative epoch timestamp, got {value}")
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, ValueError, OSError):
            raise DecodeError(f"{what} epoch timestamp {value} is out of range") from None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise DecodeError(f"{what} is not an ISO 8601 date-time: {value[:64]!r}") from None
    elif isinstance(value, datetime):
        moment = value
    else:
        raise DecodeError(f"{what} must be an ISO 8601 string or null, got {kind(value)}")
    try:
        if moment.tzinfo is None and not naive_is_local:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (OverflowError, ValueError, OSError):
        raise DecodeError(f"{what} {moment.isoformat()} is out of range once converted to UTC") from None


def args(value: Any) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise DecodeError(f"args must be a list, got {kind(value)}")
    return list(value)


def kwargs(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DecodeError(f"kwargs must be a mapping, got {kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise DecodeError(f"kwargs keys must be strings, got {kind(key)} {key!r:.40}")
    return value


def signature(value: Any, what: str) -> dict[str, Any] | None:
    """An optional embedded signature: a mapping naming its task."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DecodeError(f"{what} must be a signature mapping or null, got {kind(value)}")
    if not isinstance(value.get("task"), str):
        raise DecodeError(f"{what} is a signature without a 'task' name")
    return value


def signatures(value: Any, what: str) -> list[dict[str, Any]] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)):
        raise DecodeError(f"{what} must be a list of signatures or null, got {kind(value)}")
    checked = []
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise DecodeError(f"{what} item {index} must be a signature mapping, got {kind(item)}")
        checked.append(signature(item, f"{what} item {index}") or item)
    return checked


def stamps(stamped_headers: Any, values: Any) -> None:
    """Canvas stamping headers: a list of header names and a mapping, each optional."""
    if stamped_headers is not None and (
        not isinstance(stamped_headers, list) or not all(isinstance(name, str) for name in stamped_headers)
    ):
        raise DecodeError(
            f"header 'stamped_headers' must be a list of strings or null, got {kind(stamped_headers)}"
        )
    if values is not None and not isinstance(values, dict):
        raise DecodeError(f"header 'stamps' must be a mapping or null, got {kind(values)}")
