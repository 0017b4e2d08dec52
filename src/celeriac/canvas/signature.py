"""A task call as data: ``Signature``, the dict every workflow primitive is made of.

A signature is Celery's embedded form, ``{"task", "args", "kwargs", "options", "subtask_type", "immutable"}``,
so it travels inside a message (``link``, ``link_error``, ``chain``, ``chord``) as it is. The primitives
built on it (``primitives.py``, ``maps.py``) enter themselves in ``from_dict`` by their ``subtask_type``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from celeriac.canvas._plan import Plan
from celeriac.canvas.stamping import StampingVisitor, stamp
from celeriac.result import AsyncResult, GroupResult, ResultNode

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas.primitives import chain

#: The result handle a composite primitive gives when it is sent: a group's ``GroupResult``, a chain's
#: last step's result, a chord's body's.
_ResultT = TypeVar("_ResultT", bound="AsyncResult[Any] | GroupResult[Any]")

#: The primitive each ``subtask_type`` stands for; a class enters itself with ``subtask_type=`` in its
#: class statement (the package imports every primitive, so ``from_dict`` knows them all).
_KINDS: dict[str, type[Signature]] = {}

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

    def __init_subclass__(cls, *, subtask_type: str | None = None, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if subtask_type is not None:
            _KINDS[subtask_type] = cls

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, app: Celeriac | None = None) -> Signature:
        """The signature a dict describes, as its primitive (a ``chain`` for ``subtask_type`` "chain"...)."""
        if app is None and isinstance(data, Signature):
            app = data.app
        return _KINDS.get(data.get("subtask_type") or "", Signature)._rebuild(data, app)

    @classmethod
    def _rebuild(cls, data: dict[str, Any], app: Celeriac | None) -> Signature:
        """The primitive of this class that ``data``, its embedded form, describes."""
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
        """The task's name (Celery's ``sig.name``)."""
        return str(self["task"])

    @property
    def task(self) -> str:
        """The task's name, as the embedded form keeps it under ``task``."""
        return str(self["task"])

    # The parts are the signature's own, not copies: task code changes them in place, as with Celery's
    # (``sig.args = ...``, ``sig.kwargs["x"] = 1``, ``sig.options["queue"] = ...``).
    @property
    def args(self) -> list[Any]:
        """The positional arguments it has so far (its own list: changes stay)."""
        args = self["args"]
        if not isinstance(args, list):
            args = self["args"] = list(args)
        return args

    @args.setter
    def args(self, value: Sequence[Any]) -> None:
        self["args"] = list(value)

    @property
    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments it has so far (its own dict: changes stay)."""
        return self["kwargs"]  # type: ignore[no-any-return]

    @kwargs.setter
    def kwargs(self, value: dict[str, Any]) -> None:
        self["kwargs"] = dict(value)

    @property
    def options(self) -> dict[str, Any]:
        """Its send options (``queue``, ``countdown``, ``link``, ``task_id``...; its own: changes stay)."""
        return self["options"]  # type: ignore[no-any-return]

    @options.setter
    def options(self, value: dict[str, Any]) -> None:
        self["options"] = dict(value)

    @property
    def immutable(self) -> bool:
        """Whether it ignores the arguments a parent passes (``.si()``, ``clone``)."""
        return bool(self["immutable"])

    @immutable.setter
    def immutable(self, value: bool) -> None:
        self["immutable"] = bool(value)

    @property
    def subtask_type(self) -> str | None:
        """The primitive it embeds as ("chain", "group", "chord", "chunks"), None for a task."""
        return self.get("subtask_type")

    @property
    def id(self) -> str | None:
        """The task id, once ``freeze`` (or ``set(task_id=...)``) gave it one."""
        task_id = self["options"].get("task_id")
        return str(task_id) if task_id is not None else None

    def as_dict(self) -> dict[str, Any]:
        """Its embedded form as plain dicts and lists, the signatures in it included (no app attached):
        what a message or a result record holds."""
        plain: dict[str, Any] = _copy(self)
        return plain

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
        """Make it ignore (or take) the arguments a parent passes, in place."""
        self["immutable"] = immutable

    def stamp(
        self, visitor: StampingVisitor | None = None, append_stamps: bool = False, **headers: Any
    ) -> Signature:
        """Stamp this signature and everything in it (Celery's canvas stamping: ``canvas/stamping.py``)
        with ``headers`` and what ``visitor`` says; returns it."""
        stamp(self, visitor, append_stamps, headers)
        return self

    def link(self, callback: Signature) -> Signature:
        """Run ``callback`` with this task's result when it succeeds; returns ``callback``."""
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        """Run ``errback`` with this task's id when it fails; returns ``errback``."""
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    on_error = link_error

    def __or__(self, other: Signature) -> chain:  # type: ignore[override]
        if not isinstance(other, Signature):
            return NotImplemented
        # The chain of the two, made from its embedded form: the primitives are built on this module.
        steps = {"task": "celery.chain", "kwargs": {"tasks": [self, other]}, "subtask_type": "chain"}
        return cast("chain", Signature.from_dict(steps, app=self.app or other.app))

    # -- ids and results --------------------------------------------------------------------------------
    def freeze(self, _id: str | None = None) -> ResultNode:
        """Give this signature its task id now (``_id``, or the one it has, or a new one); its result.

        Freezing changes the signature, as in Celery: the id (and the queue results come back to) are kept
        in its options, so sending it later uses them.
        """
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
    ) -> AsyncResult[Any]:
        """Send the task (with these arguments in front of its own); its result handle.

        A composite primitive gives its own kind of handle: a group its ``GroupResult``, a chord its
        body's result (whose ``parent`` is the header's ``GroupResult``), a chain its last step's.
        """
        return _one(self._send(args, kwargs, options))

    async def aapply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        """``apply_async`` for code running in an event loop."""
        return _one(await self._asend(args, kwargs, options))

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        """Send the task with these arguments in front of its own (``apply_async`` without options)."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        """``delay`` for code running in an event loop."""
        return await self.aapply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, with these arguments added."""
        merged = self.clone(args, kwargs)
        return self._app().get_task(self.name)(*merged.args, **merged.kwargs)

    def _send(
        self, args: Sequence[Any], kwargs: dict[str, Any] | None, options: dict[str, Any]
    ) -> ResultNode:
        plan = Plan()
        result = self._copy_for_send()._plan(plan, list(args), dict(kwargs or {}), options)
        self._app()._send_plan(plan, result)
        return result

    async def _asend(
        self,
        args: Sequence[Any],
        kwargs: dict[str, Any] | None,
        options: dict[str, Any],
        *,
        lenient: bool = False,
    ) -> ResultNode:
        plan = Plan(lenient=lenient)
        result = self._copy_for_send()._plan(plan, list(args), dict(kwargs or {}), options)
        await self._app()._asend_plan(plan, result)
        return result

    def _step(self) -> Signature:
        """What this signature runs as when it is a step of a chain."""
        return self

    def _copy_for_send(self) -> Signature:
        # Sending freezes ids into the copy: the same signature sent twice makes two sets of tasks, unless
        # the caller froze it first (then the ids it froze are kept, as in Celery).
        return Signature.from_dict(_copy(self), app=self.app)

    def _plan(
        self, plan: Plan, args: list[Any], kwargs: dict[str, Any], options: dict[str, Any]
    ) -> ResultNode:
        """Add this signature's messages to ``plan``; return its result handle.

        Called on a copy made for sending: the arguments are merged into it.
        """
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
    """``value`` as a Signature (dicts from messages become the right primitive).

    A signature is returned as it is, given ``app`` if it had none.
    """
    if isinstance(value, Signature):
        if app is not None and value.app is None:
            value.app = app
        return value
    if isinstance(value, dict):
        return Signature.from_dict(value, app=app)
    raise TypeError(f"expected a signature, got {type(value).__name__}: {value!r}")


async def asend_follow_up(sig: Signature, args: Sequence[Any] = (), **options: Any) -> ResultNode:
    """Send a signature that travelled inside a message (a callback, an errback, a chain's next step, a
    chord's body), as a worker does when a task ends; its result handle.

    Unlike ``apply_async``, which refuses an option it does not know (a typo in the caller's code), option
    names that Celery keeps in such signatures and celeriac has no use for (``immutable``, ``stamp``,
    ``on_signature``...) are ignored, as Celery ignores them.
    """
    return await sig._asend(args, None, options, lenient=True)


class _Composite(Signature, Generic[_ResultT]):
    """A primitive made of other signatures (kept in its kwargs), typed by the result handle it gives.

    Its sending faces promise that handle rather than a task's ``AsyncResult``: a group is a ``Signature``,
    as in Celery, but what sending it gives is a ``GroupResult``. (Code that holds a group as a plain
    ``Signature`` sees the task's type; that is the price of Celery's class tree.)
    """

    #: Celery's task name for the primitive, e.g. "celery.chain".
    kind = ""

    def _common(self, data: dict[str, Any]) -> Signature:
        self["options"].update(data.get("options") or {})
        self["args"] = list(data.get("args") or [])
        self["immutable"] = bool(data.get("immutable"))
        return self

    # The casts hold for the options a caller passes: each primitive's _plan gives the handle its class
    # names. (A chain's rest or a chord's membership, which the workflow's own sending passes to _plan,
    # can turn a group into a chord; they do not come through these faces.)
    def apply_async(  # type: ignore[override]
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> _ResultT:
        """Send every task of the workflow in one batch; the workflow's result handle."""
        return cast(_ResultT, self._send(args, kwargs, options))

    async def aapply_async(  # type: ignore[override]
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> _ResultT:
        """``apply_async`` for code running in an event loop."""
        return cast(_ResultT, await self._asend(args, kwargs, options))

    def delay(self, *args: Any, **kwargs: Any) -> _ResultT:  # type: ignore[override]
        """Send the workflow with these arguments for its first tasks (``apply_async`` without options)."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> _ResultT:  # type: ignore[override]
        """``delay`` for code running in an event loop."""
        return await self.aapply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> _ResultT:
        """Send it (as Celery does when a workflow is called)."""
        return self.apply_async(args, kwargs)

    def _take_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], list[Any]]:
        """Take this primitive's own options out of it (it is a copy made for sending), merged with
        ``options``: (send options, membership, chain rest)."""
        opts = {**self["options"], **options}
        self["options"] = {}
        membership = {k: opts.pop(k) for k in MEMBERSHIP if opts.get(k) is not None}
        for key in MEMBERSHIP:
            opts.pop(key, None)
        rest = list(opts.pop("chain", None) or [])
        return opts, membership, rest


def _one(result: ResultNode) -> AsyncResult[Any]:
    """A task's result handle (a plain signature's ``_plan`` gives nothing else)."""
    assert isinstance(result, AsyncResult), result
    return result


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
