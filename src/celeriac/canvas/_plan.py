"""Sending a workflow in one batch: its chords announced to the backend, then all its messages at once.

A group of 10,000 tasks is built in the caller's thread (each call reads the running task's context, for
parent ids), then handed to the event loop in one hop, announced and published in pipelined batches.
Under ``task_always_eager`` the app runs a plan here instead (``_eager.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac._sending import SendOptions, build_call

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.protocol.message import Message, TaskCall
    from celeriac.task import Task

#: Options Celery keeps in embedded signatures that say nothing to a sender (canvas stamping, hints).
_CELERY_ONLY_OPTIONS = frozenset({"stamped_headers", "stamps", "subtask_type", "chord_size", "producer"})


@dataclass(slots=True)
class Plan:
    """What sending a workflow takes: ``(task name, args, kwargs, options)`` per message, and the chords
    (``(group id, size)``) to announce before their headers go out."""

    sends: list[tuple[str, list[Any], dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    chords: list[tuple[str, int]] = field(default_factory=list)


Built = list[tuple[str, "TaskCall", "float | None", SendOptions, "Task[Any, Any] | None"]]


def send_plan(app: Celeriac, plan: Plan) -> None:
    """Send everything ``plan`` lists, from synchronous code."""
    built = _build(app, plan)
    app.run(_publish(app, plan.chords, built))


async def asend_plan(app: Celeriac, plan: Plan) -> None:
    """Send everything ``plan`` lists, from code running in an event loop (a worker continuing a workflow)."""
    built = _build(app, plan)
    await _publish(app, plan.chords, built)


def _build(app: Celeriac, plan: Plan) -> Built:
    built: Built = []
    for name, args, kwargs, options in plan.sends:
        opts = SendOptions.parse({k: v for k, v in options.items() if k not in _CELERY_ONLY_OPTIONS})
        task = app.tasks.get(name)
        queue, call, not_before, opts = build_call(app, name, args, kwargs, opts, task)
        built.append((queue, call, not_before, opts, task))
    return built


async def _publish(app: Celeriac, chords: list[tuple[str, int]], built: Built) -> None:
    if chords:
        backend = app.backend()
        for group_id, size in chords:
            await backend.chord_begin(group_id, size)
    items: list[tuple[str, Message, float | None]] = [
        app._prepare(queue, call, not_before, opts, task) for queue, call, not_before, opts, task in built
    ]
    first = built[0][3] if built else SendOptions()
    await app.publish_many(items, retry=first.retry, retry_policy=first.retry_policy)
