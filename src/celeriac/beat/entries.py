"""Periodic task entries: ``beat_schedule`` in Celery's format, checked once, and the id of each tick.

An entry is ``name -> {"task", "schedule", "args", "kwargs", "options", "relative"}`` as in Celery, plus
celeriac's own keys: ``catch_up`` (run every missed tick, not just one; True or the most to run) and
``skip_if_running`` (skip a tick while the previous tick's task has not finished).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from celeriac._sending import SendOptions
from celeriac.config import closest_of
from celeriac.exceptions import ConfigurationError
from celeriac.schedules import BaseSchedule, schedule

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas import Signature

__all__ = [
    "CATCH_UP_MAX",
    "Entry",
    "add_periodic_task",
    "entries_of",
    "entry_of",
    "tick_id",
    "to_datetime",
    "to_tick",
]

#: The most missed ticks ``catch_up=True`` runs after an outage (the newest ones).
CATCH_UP_MAX = 100

_KEYS = ("task", "schedule", "args", "kwargs", "options", "relative", "catch_up", "skip_if_running")

#: The namespace of the task ids of periodic ticks (uuid5 of entry name and tick instant).
TICK_NAMESPACE = uuid.UUID("6f1c2a8e-0b7d-5c3e-9a41-c0e1e2a5b7d3")


@dataclass(frozen=True, slots=True)
class Entry:
    """One periodic task: what to send, on which schedule, and how to treat missed ticks."""

    name: str
    task: str
    schedule: BaseSchedule
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    catch_up: int = 0
    """How many missed ticks to run after an outage (0: run once, for the newest missed tick)."""
    skip_if_running: bool = False


def to_tick(moment: datetime) -> int:
    """An instant as a tick: whole microseconds since the epoch."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def to_datetime(tick: int) -> datetime:
    """A tick as an aware UTC datetime."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=tick)


def tick_id(name: str, tick: int) -> str:
    """The task id of entry ``name``'s message for ``tick``: the same in every beat process, so a tick
    published twice (a leader that died between publishing and recording it) carries one id."""
    return str(uuid.uuid5(TICK_NAMESPACE, f"{name}@{to_datetime(tick).isoformat()}"))


def _schedule_of(name: str, value: Any, relative: bool) -> BaseSchedule:
    if isinstance(value, BaseSchedule):
        return value
    if isinstance(value, timedelta) or (isinstance(value, int | float) and not isinstance(value, bool)):
        try:
            return schedule(value, relative=relative)
        except ValueError as exc:
            raise ConfigurationError(f"beat_schedule entry {name!r}: {exc}") from None
    raise ConfigurationError(
        f"beat_schedule entry {name!r}: 'schedule' must be seconds (a number), a timedelta, or a schedule "
        f"(celeriac.schedules.schedule, crontab, solar), got {type(value).__name__} {value!r}"
    )


def entry_of(name: str, spec: Any) -> Entry:
    """One ``beat_schedule`` item, checked: ConfigurationError naming the entry and what to fix."""
    where = f"beat_schedule entry {name!r}"
    if not isinstance(spec, Mapping):
        raise ConfigurationError(f"{where} must be a dict with 'task' and 'schedule', got {spec!r}")
    unknown = [key for key in spec if key not in _KEYS]
    if unknown:
        raise ConfigurationError(
            f"{where} has an unknown key {unknown[0]!r}{closest_of(str(unknown[0]), _KEYS)} "
            f"(known: {', '.join(_KEYS)})"
        )
    task = spec.get("task")
    if not isinstance(task, str) or not task:
        raise ConfigurationError(f"{where} needs 'task': the name of the task to send, got {task!r}")
    if "schedule" not in spec:
        raise ConfigurationError(f"{where} needs 'schedule': seconds, a timedelta, or a schedule")
    args, kwargs, options = spec.get("args") or (), spec.get("kwargs") or {}, spec.get("options") or {}
    if not isinstance(args, list | tuple):
        raise ConfigurationError(f"{where}: 'args' must be a list or tuple, got {args!r}")
    if not isinstance(kwargs, Mapping) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigurationError(f"{where}: 'kwargs' must be a dict with str keys, got {kwargs!r}")
    if not isinstance(options, Mapping):
        raise ConfigurationError(f"{where}: 'options' must be a dict of apply_async options, got {options!r}")
    if "task_id" in options:
        raise ConfigurationError(f"{where}: 'options' cannot set task_id: each tick gets its own id")
    try:
        SendOptions.parse(dict(options))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"{where}: 'options': {exc}") from None
    catch_up = spec.get("catch_up", False)
    if catch_up is True:
        catch_up = CATCH_UP_MAX
    if catch_up is False or catch_up is None:
        catch_up = 0
    if not isinstance(catch_up, int) or catch_up < 0:
        raise ConfigurationError(
            f"{where}: 'catch_up' must be True, False, or the most missed ticks to run, got {catch_up!r}"
        )
    return Entry(
        name=name,
        task=task,
        schedule=_schedule_of(name, spec["schedule"], bool(spec.get("relative", False))),
        args=tuple(args),
        kwargs=dict(kwargs),
        options=dict(options),
        catch_up=catch_up,
        skip_if_running=bool(spec.get("skip_if_running", False)),
    )


def entries_of(beat_schedule: Mapping[str, Any] | None) -> list[Entry]:
    """Every entry of a ``beat_schedule`` setting, checked."""
    if beat_schedule is None:
        return []
    if not isinstance(beat_schedule, Mapping):
        raise ConfigurationError(
            f"beat_schedule must be a dict of entry name -> entry, got {beat_schedule!r}"
        )
    return [entry_of(str(name), spec) for name, spec in beat_schedule.items()]


def add_periodic_task(
    app: Celeriac,
    run_every: float | timedelta | BaseSchedule,
    sig: Signature,
    args: tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    name: str | None = None,
    **options: Any,
) -> str:
    """Add ``sig`` to the app's ``beat_schedule`` (Celery's ``app.add_periodic_task``); returns the
    entry's name: ``name``, else the signature's repr, as in Celery. ``catch_up`` and
    ``skip_if_running`` among ``options`` are the entry's; the rest are sending options."""
    key = name or repr(sig)
    spec: dict[str, Any] = {
        "task": sig.name,
        "schedule": run_every,
        "args": tuple(sig.args) or tuple(args),
        "kwargs": dict(sig.kwargs) or dict(kwargs or {}),
    }
    for own in ("catch_up", "skip_if_running", "relative"):
        if own in options:
            spec[own] = options.pop(own)
    spec["options"] = {**dict(sig.options), **options}
    entry_of(key, spec)  # checked now, where the caller can see the error
    current = dict(app.conf.beat_schedule or {})
    current[key] = spec
    app.conf.beat_schedule = current
    return key
