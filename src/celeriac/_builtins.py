"""The tasks every app has, under Celery's names, so that workflows sent by Celery's clients run here too.

* ``celery.map`` / ``celery.starmap``: one task that calls ``task`` for each item (``task.map``,
  ``task.starmap``, and each part of ``task.chunks``);
* ``celery.chunks``: a chunks signature sent as a task: sends its group of starmap tasks;
* ``celery.accumulate``: returns its arguments (the body that turns a group into one result);
* ``celery.chord_unlock``: what a Celery client sends for a chord on a backend it has no counter for (SQL):
  it polls the header's results every ``interval`` seconds, then sends the body or fails it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac.canvas import body_error, chunks, maybe_signature, unsent_tasks
from celeriac.exceptions import ChordError
from celeriac.result import GroupResult, result_from_tuple

if TYPE_CHECKING:
    from celeriac.app import Celeriac


def register_builtins(app: Celeriac) -> None:
    """Register Celery's built-in tasks (``celery.map``, ``celery.starmap``, ``celery.chunks``,
    ``celery.accumulate``, ``celery.chord_unlock``) with ``app``.
    """

    def celery_map(task: dict[str, Any], it: list[Any]) -> list[Any]:
        sig = maybe_signature(task, app)
        return [sig(item) for item in it]

    def celery_starmap(task: dict[str, Any], it: list[Any]) -> list[Any]:
        sig = maybe_signature(task, app)
        return [sig(*item) for item in it]

    def celery_chunks(task: dict[str, Any], it: list[Any], n: int) -> list[str]:
        result = chunks(maybe_signature(task, app), it, n, app=app).apply_async()
        return [member.id for member in result]

    def celery_accumulate(*args: Any, index: int | None = None) -> Any:
        return args[index] if index is not None else list(args)

    @app.task(name="celery.chord_unlock", bind=True, max_retries=None, typing=False)
    def celery_chord_unlock(
        task: Any,
        group_id: str,
        callback: dict[str, Any],
        interval: float | None = None,
        max_retries: int | None = None,
        result: list[Any] | None = None,
        **_: Any,
    ) -> None:
        header = GroupResult(group_id, [result_from_tuple(r, app) for r in result or []], app=app)
        if not header.ready():
            raise task.retry(countdown=1.0 if interval is None else interval, max_retries=max_retries)
        body = maybe_signature(callback, app)
        values = header.join(propagate=False, disable_sync_subtasks=False)
        failed = next(
            (
                (member, value)
                for member, value in zip(header.results, values, strict=True)
                if isinstance(value, BaseException)
            ),
            None,
        )
        if failed is None:
            body.delay(values)
            return
        error = ChordError(f"Dependency {failed[0].id} raised {failed[1]!r}")
        error.__cause__ = failed[1]
        fail_signature(app, body, error)

    for name, fn in (
        ("celery.map", celery_map),
        ("celery.starmap", celery_starmap),
        ("celery.chunks", celery_chunks),
        ("celery.accumulate", celery_accumulate),
    ):
        app._register(fn, name=name, typing=False)


def fail_signature(app: Celeriac, sig: Any, error: BaseException) -> None:
    """Fail a chord's body that will not be sent because its header failed with ``error``: store its
    tasks' failures (``body_error``), run their errbacks."""
    # The worker's middleware stays off the path of ``import celeriac``: only a Celery client's chord on
    # a SQL backend (celery.chord_unlock) comes here.
    from celeriac.middleware.continuation import not_run

    first = body_error(sig, error)
    tasks = [unsent for unsent in unsent_tasks(sig, errbacks=True) if unsent.task.id]
    metas = [
        not_run(str(task.id), states.FAILURE, error if after else first, task["options"].get("group_id"))
        for task, _, after in tasks
    ]

    async def store() -> None:
        await app.backend().store(metas)

    app.run(store())
    for task, errbacks, _ in tasks:
        for errback in errbacks:
            maybe_signature(errback, app).delay(task.id)
