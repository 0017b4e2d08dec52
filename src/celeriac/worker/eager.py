"""Running a task here and now, as a worker would: ``Task.apply()`` and ``task_always_eager``."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._exception_records import exception_to_dict
from celeriac.backends.base import ResultMeta
from celeriac.exceptions import Retry
from celeriac.result import EagerResult
from celeriac.worker.pools.base import Job
from celeriac.worker.tracer import execute

if TYPE_CHECKING:
    from celeriac.task import Task


def apply_eagerly(
    task: Task[Any, Any], args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
) -> EagerResult[Any]:
    """Run ``task`` in this thread; retries run again at once, up to ``max_retries``.

    With ``task_eager_propagates`` (or ``throw=True``) a failure is raised here rather than kept in
    the result.
    """
    app = task.app
    task_id = options.get("task_id") or str(uuid.uuid4())
    if task.typing:
        task.check_arguments(args, kwargs)
    retries = int(options.get("retries", 0))
    while True:
        job = Job(
            id=task_id,
            name=task.name,
            args=args,
            kwargs=kwargs,
            request={
                "id": task_id,
                "task": task.name,
                "args": args,
                "kwargs": kwargs,
                "retries": retries,
                "is_eager": True,
                "root_id": task_id,
                "hostname": "eager",
                "delivery_info": {"is_eager": True},
            },
        )
        outcome = execute(app, job)
        if outcome.status == states.RETRY and isinstance(outcome.exc, Retry):
            retries += 1
            args = list(outcome.exc.options.get("args", args))
            kwargs = dict(outcome.exc.options.get("kwargs", kwargs))
            continue
        break
    throw = options.get("throw", app.conf.task_eager_propagates)
    if outcome.status == states.FAILURE and throw and outcome.exc is not None:
        raise outcome.exc
    value = (
        outcome.value
        if outcome.status == states.SUCCESS
        else (exception_to_dict(outcome.exc) if outcome.exc is not None else None)
    )
    meta = ResultMeta(
        task_id=task_id,
        status=outcome.status,
        result=value,
        traceback=outcome.traceback,
        date_done=app.now(),
    )
    return EagerResult(task_id, app=app, meta=meta, task_name=task.name)
