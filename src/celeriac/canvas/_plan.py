"""Sending a workflow in one batch: its chords announced to the backend, then all its messages at once.

A group of 10,000 tasks is built in the caller's thread (each call reads the running task's context, for
parent ids), then handed to the event loop in one hop, announced and published in pipelined batches.
Under ``task_always_eager`` the app runs a plan here instead (``_eager.py``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from celeriac._sending import SendOptions, build_call, options_to_headers

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.protocol.message import Message, TaskCall
    from celeriac.task import Task

log = logging.getLogger("celeriac.canvas")

#: Options Celery keeps in embedded signatures that say nothing to a sender (canvas stamping, hints).
_CELERY_ONLY_OPTIONS = frozenset({"stamps", "subtask_type", "chord_size", "producer"})


@dataclass(slots=True)
class Plan:
    """What sending a workflow takes: ``(task name, args, kwargs, options)`` per message, and the chords
    (``(group id, size)``) to announce before their headers go out.

    ``lenient`` plans send signatures that travelled inside a message (a worker continuing a workflow):
    option names celeriac does not know are ignored there, as Celery ignores them, instead of refused as
    a caller's typo.
    """

    sends: list[tuple[str, list[Any], dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    chords: list[tuple[str, int]] = field(default_factory=list)
    lenient: bool = False


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
    known = SendOptions.__dataclass_fields__
    for name, args, kwargs, options in plan.sends:
        options = {k: v for k, v in options_to_headers(options).items() if k not in _CELERY_ONLY_OPTIONS}
        if plan.lenient and not options.keys() <= known.keys():
            ignored = sorted(options.keys() - known.keys())
            log.debug("sending %s: ignoring option(s) celeriac has no use for: %s", name, ", ".join(ignored))
            options = {k: v for k, v in options.items() if k in known}
        opts = SendOptions.parse(options)
        if opts.idempotency_key is not None or opts.unique_for is not None or opts.unique_until is not None:
            raise ValueError(
                f"sending {name}: idempotency_key, unique_for and unique_until apply to one task sent with "
                "its own apply_async() or delay(), not to a signature or a workflow's tasks"
            )
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
