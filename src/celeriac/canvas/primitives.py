"""The primitives made of other signatures: chain, group and chord.

Membership of a chord travels on the task whose result is the member's result: the last task of a chain, the
body of a nested chord. Groups nested in a chord's header are flattened into it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

from celeriac.canvas.signature import Signature, _Composite, _copy, listed, maybe_signature
from celeriac.result import GroupResult, ResultNode

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas._plan import Plan


class chain(_Composite[ResultNode], subtask_type="chain"):
    """Tasks run one after another, each getting the previous result as its first argument.

    On the wire the first task carries the rest in its ``chain`` option, reversed (the next task last).
    A group followed by another step becomes a chord, as in Celery.
    """

    kind = "celery.chain"

    def __init__(self, *tasks: Any, app: Celeriac | None = None) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        flat: list[Signature] = []
        for task in tasks:
            sig = maybe_signature(task, app)
            flat.extend(sig.tasks if isinstance(sig, chain) and not sig["options"] else [sig])
        super().__init__(
            self.kind,
            (),
            {"tasks": flat},
            subtask_type="chain",
            app=app or next((t.app for t in flat if t.app), None),
        )

    @classmethod
    def _rebuild(cls, data: dict[str, Any], app: Celeriac | None) -> Signature:
        return cls(*(maybe_signature(t, app) for t in data["kwargs"]["tasks"]), app=app)._common(data)

    @property
    def tasks(self) -> list[Signature]:
        """A copy of the list of its tasks, in the order they run."""
        return list(self["kwargs"]["tasks"])

    def __or__(self, other: Signature) -> chain:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(*self.tasks, other, app=self.app or other.app)

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with the chain's result (its last step's) when it succeeds; returns it."""
        return self._rewrite_steps()[-1].link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` when any step of the chain fails; returns it."""
        for step in self._rewrite_steps():
            step.link_error(errback)
        return errback

    on_error = link_error

    def _steps(self) -> list[Signature]:
        """The chain's steps as they will run: chunks as groups, a group and the step after it as a chord.

        Made of the chain's own signatures, in a new list; the chain is left as it is.
        """
        steps: list[Signature] = []
        for task in self["kwargs"]["tasks"]:
            step = task._step()
            if steps and isinstance(steps[-1], group):
                steps[-1] = chord(steps[-1], step, app=self.app)
            else:
                steps.append(step)
        if not steps:
            raise ValueError("an empty chain has nothing to run")
        return steps

    def _rewrite_steps(self) -> list[Signature]:
        """Make the chain's tasks its steps (``_steps``), so that an id or a link given to a step stays in
        the chain; returns the chain's own list of them."""
        steps = self["kwargs"]["tasks"] = self._steps()
        return steps

    def freeze(self, _id: str | None = None) -> ResultNode:
        """Freeze every step; the result is the last step's, with the earlier ones as its parents."""
        steps = self._rewrite_steps()
        result: ResultNode | None = None
        for index, step in enumerate(steps):
            frozen = step.freeze(_id if index == len(steps) - 1 else None)
            _root(frozen).parent = result
            result = frozen
        assert result is not None
        return result

    def _attach(self, membership: dict[str, Any]) -> None:
        steps = self._rewrite_steps()
        if isinstance(steps[-1], group):
            steps[-1] = gathered(steps[-1])
        steps[-1]._attach(membership)

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        opts, membership, outer_rest = self._take_options(options)
        if membership:
            self._attach(membership)
        result = self.freeze(opts.pop("task_id", None))
        first, *later = self.tasks  # the steps freeze made them
        link = opts.pop("link", None)
        if link:
            (later or [first])[-1]["options"].setdefault("link", []).extend(listed(link))
        errbacks = listed(opts.pop("link_error", None))
        for step in (first, *later):
            for errback in errbacks:
                step.link_error(errback)
        rest = [*outer_rest, *reversed(later)]
        first._plan(plan, [*args, *self["args"]], kwargs, {**opts, "chain": rest or None})
        return result


class group(_Composite[GroupResult[Any]], subtask_type="group"):
    """Tasks run in parallel; the result is a ``GroupResult`` of theirs, in the order listed."""

    kind = "celery.group"

    def __init__(self, *tasks: Any, app: Celeriac | None = None) -> None:
        if len(tasks) == 1 and not isinstance(tasks[0], dict):
            tasks = tuple(tasks[0])
        members = [maybe_signature(t, app) for t in tasks]
        super().__init__(
            self.kind,
            (),
            {"tasks": members},
            subtask_type="group",
            app=app or next((t.app for t in members if t.app), None),
        )

    @classmethod
    def _rebuild(cls, data: dict[str, Any], app: Celeriac | None) -> Signature:
        return cls([maybe_signature(t, app) for t in data["kwargs"]["tasks"]], app=app)._common(data)

    @property
    def tasks(self) -> list[Signature]:
        """A copy of the list of its tasks, in the order their results are listed."""
        return list(self["kwargs"]["tasks"])

    def __len__(self) -> int:
        return len(self["kwargs"]["tasks"])

    def __or__(self, other: Signature) -> chord:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chord(self, other, app=self.app or other.app)

    def freeze(self, _id: str | None = None) -> GroupResult[Any]:
        """Give the group its id and each task its id now; the ``GroupResult`` of their results."""
        options = self["options"]
        if _id is not None:
            options["task_id"] = _id
        group_id = options.setdefault("task_id", str(uuid.uuid4()))
        members = [task.freeze() for task in self["kwargs"]["tasks"]]
        return GroupResult(group_id, members, app=self._app())

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        opts, membership, rest = self._take_options(options)
        if rest:
            # A group followed by more steps: the next one becomes its chord's body.
            following = maybe_signature(rest.pop(), self.app)
            self["options"] = opts
            return chord(self, following, app=self.app)._plan(
                plan, args, kwargs, {**membership, "chain": rest or None}
            )
        if "chord" in membership:
            if _frozen_into(self, membership["group_id"]):
                # Celery's layout (a chain ending in this group, in a chord's header): its tasks carry the
                # membership themselves and each reports to the chord, which Celery sized for them.
                result = self.freeze(opts.pop("task_id", None))
                for task in self["kwargs"]["tasks"]:
                    task._plan(plan, [*args, *self["args"]], dict(kwargs), dict(opts))
                return result
            return gathered(self)._plan(plan, args, kwargs, {**opts, **membership})
        result = self.freeze(opts.pop("task_id", None))
        group_id = result.id
        for index, task in enumerate(self["kwargs"]["tasks"]):
            task._plan(
                plan,
                [*args, *self["args"]],
                dict(kwargs),
                {**opts, "group_id": group_id, "group_index": index},
            )
        return result


class chord(_Composite[ResultNode], subtask_type="chord"):
    """A header group whose results, in header order, go to a body once every header task ended.

    If any header task fails, the body does not run: its result fails with ``ChordError`` naming the
    failed task, and its errbacks (``link_error``) run once.
    """

    kind = "celery.chord"

    def __init__(
        self, header: Any, body: Signature | dict[str, Any] | None = None, *, app: Celeriac | None = None
    ) -> None:
        head = header if isinstance(header, group) else group(*_as_list(header), app=app)
        tail = None if body is None else maybe_signature(body, app)
        super().__init__(
            self.kind,
            (),
            {"header": head, "body": tail, "kwargs": {}},
            subtask_type="chord",
            app=app or head.app or (tail.app if tail is not None else None),
        )

    @classmethod
    def _rebuild(cls, data: dict[str, Any], app: Celeriac | None) -> Signature:
        kwargs = data["kwargs"]
        header = kwargs["header"]
        head = maybe_signature(header, app) if isinstance(header, dict) else group(header, app=app)
        body = kwargs.get("body")
        made = cls(head, None if body is None else maybe_signature(body, app), app=app)._common(data)
        if made["options"].get("task_id") == head["options"].get("task_id"):
            # Celery's frozen chord carries its header's group id as its own task id (the body has its own):
            # taken for the body's id, the body would overwrite the group's id.
            made["options"].pop("task_id", None)
        return made

    @property
    def header(self) -> group:
        """The group whose results the body gets."""
        head: group = self["kwargs"]["header"]
        return head

    @property
    def body(self) -> Signature | None:
        """The signature that gets the header's results; None until ``chord(header)(body)`` gives it."""
        tail: Signature | None = self["kwargs"]["body"]
        return tail

    def _body(self) -> Signature:
        if self.body is None:
            raise TypeError("a chord needs a body: chord(header, body), or chord(header)(body) to send it")
        return self.body

    def __call__(self, body: Signature | None = None, **options: Any) -> ResultNode:
        """Send the chord; ``chord(header)(body)`` gives it its body first (Celery's spelling)."""
        if body is not None:
            self["kwargs"]["body"] = maybe_signature(body, self.app)
            self.app = self.app or self["kwargs"]["body"].app
        return self.apply_async((), None, **options)

    @property
    def tasks(self) -> list[Signature]:
        """A copy of the list of the header's tasks."""
        return self.header.tasks

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with the body's result when it succeeds; returns it."""
        return self._body().link(callback)

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` once when the body fails, or the header does (``ChordError``); returns it."""
        return self._body().link_error(errback)

    on_error = link_error

    def freeze(self, _id: str | None = None) -> ResultNode:
        """The body's result (``_id`` is the body's task id), with the header's ``GroupResult`` as parent."""
        return self._freeze(_id)[1]

    def _freeze(self, _id: str | None) -> tuple[GroupResult[Any], ResultNode]:
        header_result = self._flatten_header().freeze()
        result = self._body().freeze(_id or self["options"].get("task_id"))
        _root(result).parent = header_result
        return header_result, result

    def _attach(self, membership: dict[str, Any]) -> None:
        body = self._body()
        if isinstance(body, group):
            body = self["kwargs"]["body"] = gathered(body)
        body._attach(membership)

    def _flatten_header(self) -> group:
        """Splice the groups nested in the header into it (each of their tasks counts as one part), so
        that the ids freezing gives them stay in the chord; returns the header."""
        head = self.header
        if any(isinstance(t, group) for t in head["kwargs"]["tasks"]):
            head["kwargs"]["tasks"] = list(_flatten(head["kwargs"]["tasks"]))
        return head

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        opts, membership, rest = self._take_options(options)
        if membership:
            self._attach(membership)
        body = self._body()
        if rest:
            body["options"]["chain"] = [*(body["options"].get("chain") or []), *rest]
        for key in ("link", "link_error"):  # as Celery: a chord's callbacks are its body's, not its header's
            extra = listed(opts.pop(key, None))
            if extra:
                body["options"][key] = [*listed(body["options"].get(key)), *extra]
        header_result, result = self._freeze(opts.pop("task_id", None))
        header = self.header
        group_id = header_result.id
        if not isinstance(body, _Composite):
            body["options"].setdefault("group_id", group_id)  # as Celery: the body's record names the header
        tasks = header["kwargs"]["tasks"]
        if not tasks:
            # Nothing to wait for: the body runs now, with an empty list of results.
            body._plan(plan, [[]], {}, {})
            return result
        plan.chords.append((group_id, len(tasks)))
        embedded = {**_copy(body), "chord_size": len(tasks)}
        shared = {**{k: v for k, v in header["options"].items() if k != "task_id"}, **opts}
        for index, task in enumerate(tasks):
            task._plan(
                plan,
                [*args, *self["args"], *header["args"]],
                dict(kwargs),
                {**shared, "group_id": group_id, "group_index": index, "chord": embedded},
            )
        return result


class Unsent(NamedTuple):
    """A task of a workflow that will never be sent: what failing it takes."""

    task: Signature
    #: The errbacks to run when it is failed (none for a chord's header tasks, nor for later steps).
    errbacks: list[Any]
    #: True for the steps of a chain that follows the workflow (its ``chain`` option): they fail with the
    #: workflow's error, where a group body's own tasks fail with the error of the task that failed.
    following: bool


def unsent_tasks(sig: Signature, *, errbacks: bool) -> Iterator[Unsent]:
    """The tasks a workflow that will never be sent stands for, in the order they would have run.

    Each comes with the errbacks that sending would have given it: its own, a group's (each task runs
    them), a chord's (its body's, as ``chord._plan`` makes them), a chain's (its first step's: the chain
    fails once). A chord's header tasks run none (the
    chord's errbacks are its body's), nor do the steps of the chain that follows a task or a primitive
    (they run none when an earlier step fails either). An errback that the chord a task belongs to also
    has on its body is left to that body, which fails with the task: one failure calls it once (Celery's
    ``chord.link_error`` links it to the chords in the header as well as to the body).
    """
    yield from _unsent(sig, errbacks, [], following=False)


def _unsent(sig: Signature, errbacks: bool, inherited: list[Any], *, following: bool) -> Iterator[Unsent]:
    own = [*inherited, *listed(sig["options"].get("link_error"))] if errbacks else []
    if isinstance(sig, chain):
        for index, step in enumerate(sig._steps()):  # the chain's own errbacks: once, as for its first step
            yield from _unsent(step, errbacks, [] if index else own, following=following)
    elif isinstance(sig, group):
        for task in sig.tasks:
            yield from _unsent(task, errbacks, own, following=following)
    elif isinstance(sig, chord):
        for task in sig.tasks:
            yield from _unsent(task, False, [], following=following)
        if sig.body is not None:
            yield from _unsent(sig.body, errbacks, own, following=following)
    elif not isinstance(sig, _Composite):
        left_to_chord = listed((sig["options"].get("chord") or {}).get("options", {}).get("link_error"))
        runs: list[Any] = []
        for errback in own:
            if errback not in runs and errback not in left_to_chord:
                runs.append(errback)
        yield Unsent(sig, runs, following)
    for data in reversed(sig["options"].get("chain") or ()):  # in the order they would have run
        yield from _unsent(maybe_signature(data, sig.app), False, [], following=True)


def body_error(body: Signature, error: BaseException) -> BaseException:
    """What the tasks of a chord's ``body`` fail with when its header failed with ``error`` (a
    ``ChordError`` whose ``__cause__`` is the header task's own error), as in Celery: a group body's with
    that own error, so the group's result raises what the header raised; any other body's with ``error``."""
    cause = error.__cause__
    return cause if isinstance(body, group) and cause is not None else error


def gathered(members: group) -> chord:
    """``members`` made to give one result, the list of their results: a chord with ``celery.accumulate``
    as its body (what a group becomes in a chord's header, or in the place of a task it replaces)."""
    app = members.app
    return chord(members, Signature("celery.accumulate", kwargs={"index": 0}, app=app), app=app)


def _frozen_into(members: group, group_id: str) -> bool:
    """Whether a Celery client froze ``members``' tasks into chord ``group_id`` (each carries its
    membership), rather than leaving the group to report once, as a whole."""
    return any(
        task["options"].get("group_id") == group_id and task["options"].get("chord")
        for task in members["kwargs"]["tasks"]
    )


def _root(result: ResultNode) -> ResultNode:
    """The earliest result in a chain of parents: where an earlier step's result hangs on."""
    while result.parent is not None:
        result = result.parent
    return result


def _flatten(tasks: Iterable[Signature]) -> Iterable[Signature]:
    for task in tasks:
        if isinstance(task, group):
            yield from _flatten(task["kwargs"]["tasks"])
        else:
            yield task


def _as_list(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [value]
    return list(value)
