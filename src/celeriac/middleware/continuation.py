"""Workflow continuation: callbacks, errbacks, the next step of a chain, and a chord's body.

The error model, one for every primitive:

* A task that fails runs its errbacks (``link_error``) with its id. The rest of its chain will not run:
  their results are failed with the same error, so nobody waits on them forever.
* A chord's header task reports its end (success, failure, revocation, dead letter) to the backend's
  counter (``Backend.chord_part``), one atomic step. The report that completes the header claims the
  chord: if every part succeeded, the body is sent with their results in header order; otherwise the body's
  result fails with ``ChordError`` naming the failed task and the body's errbacks run, once (a group body's
  tasks fail with the failed task's own error, as in Celery; see ``unsent_tasks``). A header task
  that sits in a chain reports through the chain: when an earlier link fails, the chain's end reports the
  failure on its behalf.
* The claim is a lease: a worker that dies between claiming and sending leaves the chord to the redelivered
  copy of its header task, which claims it again. The body is sent exactly once when nothing dies; at least
  once otherwise (its task id is fixed, so a duplicate overwrites the same result).
* A task's outcome is final once reached. A follow-up (callback, errback, next step, chord body) whose send
  meets a broker outage is sent again until it goes through, as writes are; one that cannot be built or sent
  at all fails on its own: it is logged, its result (and what hangs on it) is failed with the error and its
  errbacks run. The task it follows is never run again for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import weakref
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._exception_records import exception_from_dict, exception_to_dict
from celeriac._request import Context, request_fields
from celeriac.backends.base import Backend, ChordClaim, ChordPart, ResultMeta
from celeriac.canvas import (
    Signature,
    asend_follow_up,
    body_error,
    listed,
    maybe_signature,
    unsent_tasks,
)
from celeriac.exceptions import ChordError
from celeriac.middleware.base import Fate, Middleware, WorkItem
from celeriac.worker._backoff import describe
from celeriac.worker._batch import Batcher
from celeriac.worker.pools.base import Outcome

if TYPE_CHECKING:
    from celeriac.protocol.message import TaskCall
    from celeriac.worker.worker import Worker

log = logging.getLogger("celeriac.worker")

#: How long a chord's claim holds while its body is sent; a claimant dead for longer loses it.
CHORD_LEASE = 60.0


class Continuation(Middleware):
    """Continues workflows: what follows a task is sent when it succeeds and settled when it fails, is
    revoked, or will never run (the error model above)."""

    async def after_outcome(self, worker: Worker, item: WorkItem, outcome: Outcome) -> None:
        """Send what follows a success; settle what depended on a failure or a revocation."""
        if item.fate is Fate.REQUEUE:
            return  # the message goes back to the queue: the next run continues the workflow
        if outcome.status == states.SUCCESS:
            await succeeded(worker, item.call, outcome.value)
        elif outcome.status in (states.FAILURE, states.REVOKED):
            exc = outcome.exc or Exception("failed")
            await failed(worker, item.call, outcome.status, exc, traceback=outcome.traceback)

    async def on_abandoned(self, worker: Worker, call: TaskCall, status: str, exc: BaseException) -> None:
        """Settle what depended on a task that will never run, as for one that failed."""
        await failed(worker, call, status, exc)


async def succeeded(worker: Worker, call: TaskCall, value: Any) -> None:
    """Send what follows a task that succeeded: callbacks, the next step of its chain, its chord's part."""

    parent: dict[str, Any] = {"parent_id": call.id, "root_id": call.root_id or call.id}
    for data in listed(call.callbacks):
        await _follow(worker, call, "callback", data, (value,), **parent)
    if call.chain:
        rest = list(call.chain)
        following = rest.pop()  # the chain travels reversed: next task last
        await _follow(worker, call, "next step", following, (value,), chain=rest or None, **parent)
    if call.chord and call.group_id:
        await _count(worker, _Member.of(call), states.SUCCESS, value)


async def failed(
    worker: Worker, call: TaskCall, status: str, exc: BaseException, *, traceback: str | None = None
) -> None:
    """Settle what depended on a task that failed, was revoked, or will never run.

    Its errbacks run as Celery runs them: one whose function takes more than one positional argument (and
    is not bound) is a new-style errback, called here, in the worker, with ``(request, exc, traceback)``;
    any other is sent as a task with the failed task's id.
    """

    app = worker.app
    for data in listed(call.errbacks):
        errback = _new_style(worker, data)
        if errback is not None:
            request = Context(**request_fields(call, worker.hostname))
            await _call_errback(worker, request, errback, exc, traceback)
        else:
            await _follow(
                worker, call, "errback", data, (call.id,), parent_id=call.id, root_id=call.root_id or call.id
            )
    for data in reversed(call.chain or ()):  # in the order they would have run
        await _fail(worker, maybe_signature(data, app), status, exc, errbacks=False)
    if call.chord and call.group_id:
        await _count(worker, _Member.of(call), status, exc)


class _Member:
    """A chord header part: the task id, its place, and the body (as it travels)."""

    def __init__(self, task_id: str, group_id: str, index: int | None, body: dict[str, Any], root: str):
        self.task_id, self.group_id, self.index, self.body, self.root_id = (
            task_id,
            group_id,
            index,
            body,
            root,
        )

    @classmethod
    def of(cls, call: TaskCall) -> _Member:
        assert call.chord is not None and call.group_id is not None
        return cls(call.id, call.group_id, call.group_index, call.chord, call.root_id or call.id)


def _new_style(worker: Worker, data: Any) -> Signature | None:
    """The errback ``data`` names when it is new-style (Celery 5.7's test: its task is known here, is not
    bound, and its function takes more than one positional argument, or ``*args``, besides those the
    signature already holds); None otherwise."""
    try:
        sig = maybe_signature(data, worker.app)
    except (TypeError, ValueError):
        return None  # sending it fails, and says so (``_follow``)
    task = worker.app.tasks.get(sig.name)
    if task is None or task.bind:
        return None
    fn = task.__wrapped__
    spec = inspect.getfullargspec(fn)
    if not sig.immutable and (sig.args or sig.kwargs):
        # Counted as Celery counts them: the stored arguments bound first, whatever place they take when
        # the errback is called (stored arguments the function cannot take: counted as it is).
        with contextlib.suppress(TypeError, ValueError):
            spec = inspect.getfullargspec(functools.partial(fn, *sig.args, **sig.kwargs))
    return sig if spec.varargs or len(spec.args) > 1 else None


async def _call_errback(
    worker: Worker, request: Context, errback: Signature, exc: BaseException, traceback: str | None
) -> None:
    """Call a new-style errback with the failed task's request, its error and traceback (an ``async def``
    one awaited, any other in a thread, so the worker's loop goes on); what it raises is logged."""
    request.called_directly = False
    try:
        value = await asyncio.to_thread(errback, request, exc, traceback)
        if inspect.isawaitable(value):
            await value
    except Exception as error:
        worker.log.error(
            "Task %s[%s]: its errback %s raised %s",
            request.task,
            request.id,
            errback,
            describe(error),
            exc_info=error,
        )


async def _follow(
    worker: Worker, call: TaskCall | str, role: str, data: Any, args: tuple[Any, ...], **options: Any
) -> None:
    """Send ``data``, the ``role`` ("callback", "next step"...) of ``call`` (a task, or a chord's id),
    through the writer: an outage is waited out; a follow-up that cannot be built or sent fails alone."""
    sig: Signature | None = None
    try:
        sig = maybe_signature(data, worker.app)
        ready = sig
        await worker.writer.send(
            lambda: asend_follow_up(ready, args, **options), what=f"send the {role} {ready!r}"
        )
    except Exception as exc:
        whose = call if isinstance(call, str) else f"Task {call.name}[{call.id}]"
        worker.log.error(
            "%s: its %s %s could not be sent (%s); that follow-up fails, the task's own result stands",
            whose,
            role,
            sig if sig is not None else f"{data!r:.200}",
            describe(exc),
        )
        if sig is None:
            return  # not a signature: nothing names a result to fail
        if options.get("chain"):
            sig = sig.clone().set(chain=options["chain"])  # its rest, as the message would have carried it
        await _fail(worker, sig, states.FAILURE, exc, errbacks=True)


async def _count(worker: Worker, member: _Member, status: str, value: Any) -> None:
    """Report one header part to the chord counter; the report that completes the header ends the chord."""
    backend = worker.backend
    if backend is None:
        log.error(
            "Chord %s cannot be counted: chords need a result backend, and this worker has none",
            member.group_id,
        )
        return
    size = member.body.get("chord_size")
    if size is None and not backend.reads_chord_size:
        # A Celery client's chord on a backend Celery drives with its polling task (celery.chord_unlock).
        return
    result = exception_to_dict(value) if isinstance(value, BaseException) else value
    part = ChordPart(member.task_id, member.index, status, result)
    reports = _reports.get(backend)
    if reports is None:
        reports = _reports[backend] = Batcher(functools.partial(_report, backend))
    claim: ChordClaim | None = await reports.add((member.group_id, part, int(size or 0)))
    if claim is None:
        return

    body = maybe_signature(member.body, worker.app)
    parts, values = list(claim.parts), claim.values
    if size is None:
        # A Celery client's chord: when its header nests groups, Celery saved the header's shape.
        parts, values = await _shaped(backend, member.group_id, parts, values)
    culprit = next((p for p in parts if p.status != states.SUCCESS), None)
    if culprit is None:
        what = f"Chord {member.group_id}"
        await _follow(worker, what, "body", body, (values,), parent_id=member.task_id, root_id=member.root_id)
    else:
        error = ChordError(f"Dependency {culprit.task_id} raised {_describe(culprit)}")
        error.__cause__ = exception_from_dict(culprit.result)
        worker.log.error("Chord %s failed: %s; its body %s will not run", member.group_id, error, body)
        await _fail(worker, body, states.FAILURE, body_error(body, error), errbacks=True, following=error)
    await backend.chord_done(claim)


async def _shaped(
    backend: Backend, group_id: str, parts: list[ChordPart], values: list[Any]
) -> tuple[list[ChordPart], list[Any]]:
    """The header's parts and the body's argument as the group result Celery's client saved for the chord
    shapes them (a nested group's results as one list, as Celery's worker joins them); ``parts`` and
    ``values`` as they are when there is none.

    A header task Celery froze into a nested group reports to the chord itself, so the parts alone are
    flat; results the parts lack (none, normally) are read from the backend.
    """
    saved = await backend.restore_group(group_id)
    if not isinstance(saved, list | tuple) or len(saved) != 2 or not isinstance(saved[1], list | tuple):
        return parts, values
    by_id = {part.task_id: part for part in parts}
    wanted: list[str] = []

    def ids(node: Any) -> None:
        head, members = node
        if members is None:
            wanted.append(head[0] if isinstance(head, list | tuple) else head)
        else:
            for each in members:
                ids(each)

    ids(saved)
    missing = [task_id for task_id in wanted if task_id not in by_id]
    if missing:
        found = await backend.get_many(missing)
        for task_id in missing:
            meta = found.get(task_id)
            if meta is None:
                error = exception_to_dict(ChordError(f"the result of header task {task_id} is missing"))
                by_id[task_id] = ChordPart(task_id, None, states.FAILURE, error)
            else:
                by_id[task_id] = ChordPart(task_id, None, meta.status, meta.result)

    def shape(node: Any) -> Any:
        head, members = node
        if members is None:
            return by_id[head[0] if isinstance(head, list | tuple) else head].result
        return [shape(each) for each in members]

    return [by_id[task_id] for task_id in wanted], [shape(each) for each in saved[1]]


#: Per backend, the chord reports of header tasks that end in the same moment, sent together.
_reports: weakref.WeakKeyDictionary[Backend, Batcher[tuple[str, ChordPart, int]]] = (
    weakref.WeakKeyDictionary()
)


async def _report(backend: Backend, reports: Sequence[tuple[str, ChordPart, int]]) -> list[ChordClaim | None]:
    return await backend.chord_parts(reports, lease=CHORD_LEASE)


async def _fail(
    worker: Worker,
    sig: Signature,
    status: str,
    exc: BaseException,
    *,
    errbacks: bool,
    following: BaseException | None = None,
) -> None:
    """Fail the results of a signature that will never be sent, and what hangs on it (``unsent_tasks``):
    its tasks with ``exc``, the chain that follows it with ``following`` (``exc`` when not given)."""

    for task, task_errbacks, after in unsent_tasks(sig, errbacks=errbacks):
        error = following if after and following is not None else exc
        options = task["options"]
        task_id = options.get("task_id")
        if task_id and worker.backend is not None:
            await worker.writer.store([not_run(task_id, status, error, options.get("group_id"))])
        for data in task_errbacks if task_id else ():
            errback = _new_style(worker, data)
            if errback is not None:
                request = Context(
                    id=task_id,
                    task=task.name,
                    args=task.args,
                    kwargs=task.kwargs,
                    group=options.get("group_id"),
                    group_index=options.get("group_index"),
                    root_id=options.get("root_id"),
                    parent_id=options.get("parent_id"),
                    hostname=worker.hostname,
                )
                await _call_errback(worker, request, errback, error, None)
                continue
            await _follow(
                worker, f"Task {task['task']}[{task_id}]", "errback", data, (task_id,), parent_id=task_id
            )
        chord_body, group_id = options.get("chord"), options.get("group_id")
        if chord_body and group_id and task_id:
            root = options.get("root_id") or task_id
            await _count(
                worker,
                _Member(task_id, group_id, options.get("group_index"), chord_body, root),
                status,
                error,
            )


def not_run(task_id: str, status: str, exc: BaseException, group_id: str | None = None) -> ResultMeta:
    """The record of a task that will never run because of ``exc`` (a failed chain link, a failed chord)."""
    return ResultMeta(
        task_id=task_id,
        status=status,
        result=exception_to_dict(exc),
        traceback=f"not run: {exc!r}",
        date_done=datetime.now(UTC),
        group_id=group_id,
    )


def _describe(part: ChordPart) -> str:
    if part.status == states.REVOKED:
        return f"(revoked) {exception_from_dict(part.result)!r}"
    return repr(exception_from_dict(part.result))
