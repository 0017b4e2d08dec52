"""A task call as data: ``Signature``, the dict every workflow primitive is made of.

A signature is Celery's embedded form, ``{"task", "args", "kwargs", "options", "subtask_type", "immutable"}``,
so it travels inside a message (``link``, ``link_error``, ``chain``, ``chord``) as it is. The primitives
built on it (``primitives.py``, ``maps.py``) enter themselves in ``from_dict`` by their ``subtask_type``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from celeriac.canvas._plan import Plan
from celeriac.result import AsyncResult

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import ResultNode

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
        # The chain of the two, made from its embedded form: the primitives are built on this module.
        steps = {"task": "celery.chain", "kwargs": {"tasks": [self, other]}, "subtask_type": "chain"}
        return Signature.from_dict(steps, app=self.app or other.app)

    # -- ids and results --------------------------------------------------------------------------------
    def freeze(self, _id: str | None = None) -> ResultNode:
        """Give this signature its task id now (``_id``, or the one it has, or a new one); its result."""

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
        self._app()._send_plan(plan, result)
        return result

    async def aapply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Any:
        """``apply_async`` for code running in an event loop."""
        plan = Plan()
        result = self._copy_for_send()._plan(plan, list(args), dict(kwargs or {}), options)
        await self._app()._asend_plan(plan, result)
        return result

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: Any, **kwargs: Any) -> Any:
        return await self.aapply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, with these arguments added."""
        merged = self.clone(args, kwargs)
        return self._app().get_task(self.name)(*merged.args, **merged.kwargs)

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
        """Add this signature's messages to ``plan``; return its result handle."""

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
