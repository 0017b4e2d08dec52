"""Workflows under ``task_always_eager``: every task of a chain, group or chord runs here, at once, in order.

The same continuation rules as a worker's (middleware/continuation.py), kept in memory: a chain's next
step runs with the previous result, callbacks and errbacks run, a chord's body runs once its header is
complete (or fails with ``ChordError``), and a failed link fails the rest of its chain. Each task's record
goes into the result handles the workflow returned, so ``get()`` needs no backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from celeriac import states
from celeriac._exception_records import exception_from_dict, exception_to_dict
from celeriac.backends.base import ResultMeta
from celeriac.canvas._plan import Plan
from celeriac.canvas.primitives import body_error, unsent_tasks
from celeriac.canvas.signature import Signature, listed, maybe_signature
from celeriac.exceptions import ChordError
from celeriac.result import GroupResult
from celeriac.worker.eager import apply_eagerly

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import ResultNode

_SEND_OPTIONS = ("task_id", "retries", "throw")


def run_eagerly(app: Celeriac, plan: Plan, result: ResultNode | None) -> None:
    """Run every task ``plan`` lists, and what follows them, here; put their records into ``result``."""
    flow = EagerFlow(app)
    flow.run(plan)
    flow.fill(result)


class EagerFlow:
    """One eager workflow run: records by task id, and the chords counted so far."""

    def __init__(self, app: Celeriac) -> None:
        self.app = app
        self.records: dict[str, ResultMeta] = {}
        self.chords: dict[str, dict[int, tuple[str, str, Any]]] = {}

    def run(self, plan: Plan) -> None:
        """Run every task ``plan`` lists, and the callbacks, chain steps and chord bodies they lead to."""
        for name, args, kwargs, options in plan.sends:
            self._run_one(name, list(args), dict(kwargs), options)

    def fill(self, result: ResultNode | None) -> None:
        """Put the records this run made into a workflow's result handles (members and parents too)."""
        while result is not None:
            if isinstance(result, GroupResult):
                for member in result.results:
                    self.fill(member)
            elif result.id in self.records:
                result._meta = self.records[result.id]
            result = result.parent

    def _send(self, sig: Signature, args: list[Any], **options: Any) -> None:
        plan = Plan()
        sig._copy_for_send()._plan(plan, args, {}, options)
        self.run(plan)

    def _run_one(self, name: str, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]) -> None:
        app = self.app
        task = app.get_task(name)
        own = {k: options[k] for k in _SEND_OPTIONS if k in options}
        meta = apply_eagerly(task, args, kwargs, {**own, "throw": False}).meta()
        self.records[meta.task_id] = meta
        task_id = meta.task_id
        if meta.status == states.SUCCESS:
            for data in listed(options.get("link")):
                self._send(maybe_signature(data, app), [meta.result])
            rest = list(options.get("chain") or [])
            if rest:
                self._send(maybe_signature(rest.pop(), app), [meta.result], chain=rest or None)
        else:
            for data in listed(options.get("link_error")):
                self._send(maybe_signature(data, app), [task_id])
            for data in reversed(options.get("chain") or []):
                self._fail(maybe_signature(data, app), meta.status, meta.result)
        if options.get("chord") and options.get("group_id"):
            self._count(options, task_id, meta.status, meta.result)

    def _count(self, options: dict[str, Any], task_id: str, status: str, value: Any) -> None:
        group_id, body = options["group_id"], options["chord"]
        parts = self.chords.setdefault(group_id, {})
        parts[int(options.get("group_index") or 0)] = (task_id, status, value)
        if len(parts) < int(body.get("chord_size") or 0):
            return
        del self.chords[group_id]
        ordered = [parts[i] for i in sorted(parts)]
        culprit = next((p for p in ordered if p[1] != states.SUCCESS), None)
        sig = maybe_signature(body, self.app)
        if culprit is None:
            self._send(sig, [[p[2] for p in ordered]])
            return
        cause = exception_from_dict(culprit[2])
        error = ChordError(f"Dependency {culprit[0]} raised {cause!r}")
        error.__cause__ = cause
        first, then = exception_to_dict(body_error(sig, error)), exception_to_dict(error)
        self._fail(sig, states.FAILURE, first, errbacks=True, following=then)

    def _fail(
        self, sig: Signature, status: str, failure: Any, *, errbacks: bool = False, following: Any = None
    ) -> None:
        """Record ``sig``'s tasks as failed with ``failure`` (an exception as records keep it), the chain
        that follows it with ``following`` (``failure`` when not given), and run their errbacks."""
        for task, task_errbacks, after in unsent_tasks(sig, errbacks=errbacks):
            options = task["options"]
            task_id = options.get("task_id")
            if not task_id:
                continue
            result = following if after and following is not None else failure
            self.records[task_id] = ResultMeta(
                task_id=task_id, status=status, result=result, date_done=self.app.now()
            )
            for data in task_errbacks:
                self._send(maybe_signature(data, self.app), [task_id])
            if options.get("chord") and options.get("group_id"):
                self._count(options, task_id, status, result)
