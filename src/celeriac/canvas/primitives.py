"""Signatures and the workflows built from them: chain, group, chord, chunks, map and starmap.

Every primitive is a dict in Celery's embedded form, ``{"task", "args", "kwargs", "options", "subtask_type",
"immutable"}``, so it travels inside a message (``link``, ``link_error``, ``chain``, ``chord``) and Celery's
workers and ours read each other's workflows.

Sending a workflow takes two steps. ``freeze`` gives every task in it its id, so the result handles exist
before anything is sent; ``_plan`` then lists every message to send and every chord to announce, and the app
sends them in one batch (``celeriac._plan``). Workers carry the workflow on from there
(``middleware/continuation.py``): the next step of a chain, callbacks, errbacks, and a chord's body once the
backend's counter says its header is complete.

Membership of a chord travels on the task whose result is the member's result: the last task of a chain, the
body of a nested chord. Groups nested in a chord's header are flattened into it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from celeriac._plan import Plan, asend_plan, send_plan

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import GroupResult, ResultNode

#: Options that make a task a member of a chord's header; they go to the task that produces the result.
MEMBERSHIP = ("group_id", "group_index", "chord")


class Signature(dict[str, Any]):
    """A task call as data: a task name with (partial) arguments and send options.

    A dict, as in Celery, so it embeds in a message as it is. ``clone`` and the ``|`` operator make new
    signatures; ``set``, ``link`` and ``link_error`` change this one.
    """

    def __init__(
        self,
        task: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        *,
        options: dict[str, Any] | None = None,
        immutable: bool = False,
        subtask_type: str | None = None,
        app: Celeriac | None = None,
    ) -> None:
        super().__init__(
            task=task,
            args=list(args),
            kwargs=dict(kwargs or {}),
            options=dict(options or {}),
            subtask_type=subtask_type,
            immutable=immutable,
        )
        self.app = app

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, app: Celeriac | None = None) -> Signature:
        """The signature a dict describes, as its primitive (a ``chain`` for ``subtask_type`` "chain"...)."""
        if app is None and isinstance(data, Signature):
            app = data.app
        kind = _KINDS.get(data.get("subtask_type") or "")
        if kind is not None:
            return kind._rebuild(data, app)
        if not isinstance(data.get("task"), str):
            raise ValueError(f"not a signature (no task name): {data!r}")
        sig = Signature(
            data["task"],
            data.get("args") or (),
            data.get("kwargs") or {},
            options=data.get("options") or {},
            immutable=bool(data.get("immutable")),
            subtask_type=data.get("subtask_type"),
            app=app,
        )
        for key, value in data.items():  # e.g. Celery's chord_size
            sig.setdefault(key, value)
        return sig

    # -- reading ----------------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(self["task"])

    @property
    def task(self) -> str:
        return str(self["task"])

    @property
    def args(self) -> list[Any]:
        return list(self["args"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self["kwargs"])

    @property
    def options(self) -> dict[str, Any]:
        return dict(self["options"])

    @property
    def immutable(self) -> bool:
        return bool(self["immutable"])

    @property
    def subtask_type(self) -> str | None:
        return self.get("subtask_type")

    @property
    def id(self) -> str | None:
        """The task id, once ``freeze`` (or ``set(task_id=...)``) gave it one."""
        task_id = self["options"].get("task_id")
        return str(task_id) if task_id is not None else None

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self["args"]), *(f"{k}={v!r}" for k, v in self["kwargs"].items())])
        return f"{self.name}({args})"

    # -- making new ones --------------------------------------------------------------------------------
    def clone(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A deep copy with more arguments (in front of the ones it has) and options.

        An immutable signature ignores the new arguments; its options still change.
        """
        new = Signature.from_dict(_copy(self), app=self.app)
        if not new.immutable:
            new["args"] = [*args, *new["args"]]
            new["kwargs"] = {**new["kwargs"], **(kwargs or {})}
        new["options"].update(options)
        return new

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        """Change send options (and immutability) in place; returns this signature."""
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def set_immutable(self, immutable: bool) -> None:
        self["immutable"] = immutable

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's result when it succeeds; returns ``callback``."""
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` with this task's id when it fails; returns ``errback``."""
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    on_error = link_error

    def __or__(self, other: Signature) -> Signature:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(self, other, app=self.app or other.app)

    # -- ids and results --------------------------------------------------------------------------------
    def freeze(self, _id: str | None = None) -> ResultNode:
        """Give this signature its task id now (``_id``, or the one it has, or a new one); its result."""
        from celeriac.result import AsyncResult

        options = self["options"]
        if _id is not None:
            options["task_id"] = _id
        task_id = options.setdefault("task_id", str(uuid.uuid4()))
        # Results of later steps, sent by workers, still go to this client (the rpc:// backend's queue).
        options.setdefault("reply_to", self._app().oid)
        return AsyncResult(task_id, app=self._app(), task_name=self.name)

    def _attach(self, membership: dict[str, Any]) -> None:
        """Make this signature's result a chord member (see ``MEMBERSHIP``)."""
        self["options"].update(membership)

    # -- sending ----------------------------------------------------------------------------------------
    def apply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """Send it (with these arguments added in front); returns its result handle.

        A task gives an ``AsyncResult``, a group a ``GroupResult``, a chord the body's ``AsyncResult``
        whose ``parent`` is the header's ``GroupResult``, a chain the last step's result.
        """
        plan = Plan()
        result = self._copy_for_send()._plan(plan, list(args), dict(kwargs or {}), options)
        send_plan(self._app(), plan, result)
        return result

    async def aapply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """``apply_async`` for code running in an event loop."""
        plan = Plan()
        result = self._copy_for_send()._plan(plan, list(args), dict(kwargs or {}), options)
        await asend_plan(self._app(), plan, result)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        return await self.aapply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, with these arguments added."""
        merged = self.clone(args, kwargs)
        return self._app().get_task(self.name)(*merged.args, **merged.kwargs)

    def _copy_for_send(self) -> Signature:
        # Sending freezes ids into the copy: the same signature sent twice makes two sets of tasks, unless
        # the caller froze it first (then the ids it froze are kept, as in Celery).
        return Signature.from_dict(_copy(self), app=self.app)

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        """Add this signature's messages to ``plan``; return its result handle."""
        from celeriac.result import AsyncResult

        if not self.immutable:
            self["args"] = [*args, *self["args"]]
            self["kwargs"] = {**self["kwargs"], **kwargs}
        opts = {**self["options"], **options}
        opts.setdefault("task_id", str(uuid.uuid4()))
        plan.sends.append((self.name, self["args"], self["kwargs"], opts))
        return AsyncResult(opts["task_id"], app=self._app(), task_name=self.name)

    def _app(self) -> Celeriac:
        if self.app is None:
            raise RuntimeError(f"signature {self!r} has no app: make it with task.s() or app.signature()")
        return self.app


signature = Signature


def maybe_signature(value: Any, app: Celeriac | None = None) -> Signature:
    """``value`` as a Signature (dicts from messages become the right primitive)."""
    if isinstance(value, Signature):
        if app is not None and value.app is None:
            value.app = app
        return value
    if isinstance(value, dict):
        return Signature.from_dict(value, app=app)
    raise TypeError(f"expected a signature, got {type(value).__name__}: {value!r}")


class _Composite(Signature):
    """A primitive made of other signatures (kept in its kwargs)."""

    #: Celery's task name for the primitive, e.g. "celery.chain".
    kind = ""

    @classmethod
    def _rebuild(cls, data: dict[str, Any], app: Celeriac | None) -> Signature:
        raise NotImplementedError

    def _common(self, data: dict[str, Any]) -> Signature:
        self["options"].update(data.get("options") or {})
        self["args"] = list(data.get("args") or [])
        self["immutable"] = bool(data.get("immutable"))
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Send it (as Celery does when a workflow is called)."""
        return self.apply_async(args, kwargs)

    def _split_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        """This primitive's own options merged with ``options``: (send options, membership, chain rest)."""
        opts = {**self["options"], **options}
        self["options"] = {}  # a copy made for sending: what it held is in ``opts`` now
        membership = {k: opts.pop(k) for k in MEMBERSHIP if opts.get(k) is not None}
        for key in MEMBERSHIP:
            opts.pop(key, None)
        rest = list(opts.pop("chain", None) or [])
        return opts, membership, rest


class chain(_Composite):
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
        return list(self["kwargs"]["tasks"])

    def __or__(self, other: Signature) -> Signature:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chain(*self.tasks, other, app=self.app or other.app)

    def link(self, callback: Signature) -> Signature:
        return self._steps()[-1].link(callback)

    def link_error(self, errback: Signature) -> Signature:
        for step in self._steps():
            step.link_error(errback)
        return errback

    on_error = link_error

    def _steps(self) -> list[Signature]:
        """The chain's steps as they will run: chunks as groups, a group and the step after it as a chord."""
        steps: list[Signature] = []
        for task in self["kwargs"]["tasks"]:
            step = task.group() if isinstance(task, chunks) else task
            if steps and isinstance(steps[-1], group):
                steps[-1] = chord(steps[-1], step, app=self.app)
            else:
                steps.append(step)
        if not steps:
            raise ValueError("an empty chain has nothing to run")
        self["kwargs"]["tasks"] = steps
        return steps

    def freeze(self, _id: str | None = None) -> ResultNode:
        """Freeze every step; the result is the last step's, with the earlier ones as its parents."""
        steps = self._steps()
        result: ResultNode | None = None
        for index, step in enumerate(steps):
            frozen = step.freeze(_id if index == len(steps) - 1 else None)
            _root(frozen).parent = result
            result = frozen
        assert result is not None
        return result

    def _attach(self, membership: dict[str, Any]) -> None:
        steps = self._steps()
        if isinstance(steps[-1], group):
            steps[-1] = _gathered(steps[-1])
        steps[-1]._attach(membership)

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        opts, membership, outer_rest = self._split_options(options)
        if membership:
            self._attach(membership)
        result = self.freeze(opts.pop("task_id", None))
        first, *later = self._steps()
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


class group(_Composite):
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
        return list(self["kwargs"]["tasks"])

    def __len__(self) -> int:
        return len(self["kwargs"]["tasks"])

    def __or__(self, other: Signature) -> Signature:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        return chord(self, other, app=self.app or other.app)

    def freeze(self, _id: str | None = None) -> ResultNode:
        from celeriac.result import GroupResult

        options = self["options"]
        if _id is not None:
            options["task_id"] = _id
        group_id = options.setdefault("task_id", str(uuid.uuid4()))
        members = [task.freeze() for task in self["kwargs"]["tasks"]]
        return GroupResult(group_id, members, app=self._app())

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        opts, membership, rest = self._split_options(options)
        if rest:
            # A group followed by more steps: the next one becomes its chord's body.
            following = maybe_signature(rest.pop(), self.app)
            self["options"] = opts
            return chord(self, following, app=self.app)._plan(
                plan, args, kwargs, {**membership, "chain": rest or None}
            )
        if "chord" in membership:
            return _gathered(self)._plan(plan, args, kwargs, {**opts, **membership})
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


class chord(_Composite):
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
        head: group = self["kwargs"]["header"]
        return head

    @property
    def body(self) -> Signature | None:
        tail: Signature | None = self["kwargs"]["body"]
        return tail

    def _body(self) -> Signature:
        if self.body is None:
            raise TypeError("a chord needs a body: chord(header, body), or chord(header)(body) to send it")
        return self.body

    def __call__(self, body: Signature | None = None, **options: Any) -> Any:
        """Send the chord; ``chord(header)(body)`` gives it its body first (Celery's spelling)."""
        if body is not None:
            self["kwargs"]["body"] = maybe_signature(body, self.app)
            self.app = self.app or self["kwargs"]["body"].app
        return self.apply_async((), None, **options)

    @property
    def tasks(self) -> list[Signature]:
        return self.header.tasks

    def link(self, callback: Signature) -> Signature:
        return self._body().link(callback)

    def link_error(self, errback: Signature) -> Signature:
        return self._body().link_error(errback)

    on_error = link_error

    def freeze(self, _id: str | None = None) -> ResultNode:
        """The body's result (``_id`` is the body's task id), with the header's ``GroupResult`` as parent."""
        return self._freeze(_id)[1]

    def _freeze(self, _id: str | None) -> tuple[GroupResult[Any], ResultNode]:
        from celeriac.result import GroupResult

        header_result = self._flat_header().freeze()
        assert isinstance(header_result, GroupResult)
        result = self._body().freeze(_id or self["options"].get("task_id"))
        _root(result).parent = header_result
        return header_result, result

    def _attach(self, membership: dict[str, Any]) -> None:
        body = self._body()
        if isinstance(body, group):
            body = self["kwargs"]["body"] = _gathered(body)
        body._attach(membership)

    def _flat_header(self) -> group:
        """The header with nested groups spliced in (each of their tasks counts as one part)."""
        head = self.header
        if any(isinstance(t, group) for t in head["kwargs"]["tasks"]):
            head["kwargs"]["tasks"] = list(_flatten(head["kwargs"]["tasks"]))
        return head

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        opts, membership, rest = self._split_options(options)
        if membership:
            self._attach(membership)
        body = self._body()
        if rest:
            body["options"]["chain"] = [*(body["options"].get("chain") or []), *rest]
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


class chunks(_Composite):
    """``task`` applied to ``it`` in ``n``-sized parts: a group of ``celery.starmap`` tasks."""

    kind = "celery.chunks"

    def __init__(self, task: Signature, it: Iterable[Any], n: int, *, app: Celeriac | None = None) -> None:
        if n < 1:
            raise ValueError(f"chunks need a size of at least 1, not {n}")
        sig = maybe_signature(task, app)
        super().__init__(
            self.kind,
            (),
            {"task": sig, "it": [list(item) for item in it], "n": n},
            subtask_type="chunks",
            app=app or sig.app,
        )

    @classmethod
    def _rebuild(cls, data: dict[str, Any], app: Celeriac | None) -> Signature:
        kwargs = data["kwargs"]
        return cls(maybe_signature(kwargs["task"], app), kwargs["it"], int(kwargs["n"]), app=app)._common(
            data
        )

    def group(self) -> group:
        """The group of starmap tasks this stands for."""
        kwargs = self["kwargs"]
        items, n = list(kwargs["it"]), int(kwargs["n"])
        parts = [items[i : i + n] for i in range(0, len(items), n)]
        made = group(*(xstarmap(kwargs["task"], part, app=self.app) for part in parts), app=self.app)
        made["options"].update(self["options"])
        return made

    def freeze(self, _id: str | None = None) -> ResultNode:
        raise TypeError("freeze the group of a chunks signature instead: chunks(...).group().freeze()")

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        return self.group()._plan(plan, args, kwargs, options)


class xmap(Signature):
    """``task`` called once per item of ``it``, in one worker task (``celery.map``); returns the list."""

    builtin = "celery.map"

    def __init__(self, task: Signature, it: Iterable[Any], *, app: Celeriac | None = None) -> None:
        sig = maybe_signature(task, app)
        super().__init__(self.builtin, (), {"task": sig, "it": list(it)}, immutable=True, app=app or sig.app)


class xstarmap(xmap):
    """``task(*item)`` for each item of ``it``, in one worker task (``celery.starmap``)."""

    builtin = "celery.starmap"


def unsent_tasks(sig: Signature, *, errbacks: bool) -> Iterator[tuple[Signature, bool]]:
    """The task signatures a workflow that will never be sent stands for, each with whether its errbacks
    run when it is failed (those of a chord's header do not: the chord's own errbacks are the body's)."""
    if isinstance(sig, chain):
        for step in sig._steps():
            yield from unsent_tasks(step, errbacks=errbacks)
    elif isinstance(sig, group):
        for task in sig.tasks:
            yield from unsent_tasks(task, errbacks=errbacks)
    elif isinstance(sig, chord):
        for task in sig.tasks:
            yield from unsent_tasks(task, errbacks=False)
        if sig.body is not None:
            yield from unsent_tasks(sig.body, errbacks=errbacks)
    elif not isinstance(sig, _Composite):
        yield sig, errbacks


def _gathered(members: group) -> chord:
    """A group made to give one result (the list of its results), as a chord with ``celery.accumulate``."""
    app = members.app
    return chord(members, Signature("celery.accumulate", kwargs={"index": 0}, app=app), app=app)


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


def listed(value: Any) -> list[Any]:
    """A ``link``/``link_error`` option as a list (it may hold one signature or several)."""
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def _copy(value: Any) -> Any:
    """A structural copy of a signature's dicts and lists (leaf values shared), as plain dicts."""
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_copy(v) for v in value)
    return value


_KINDS: dict[str, type[_Composite]] = {"chain": chain, "group": group, "chord": chord, "chunks": chunks}

__all__ = [
    "MEMBERSHIP",
    "Signature",
    "chain",
    "chord",
    "chunks",
    "group",
    "listed",
    "maybe_signature",
    "signature",
    "unsent_tasks",
    "xmap",
    "xstarmap",
]
