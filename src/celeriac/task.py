"""Tasks: functions made callable through the broker, with Celery's options, hooks and ``retry``."""

from __future__ import annotations

import inspect
import random
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar

from celeriac import canvas, states
from celeriac._exception_records import exception_to_dict
from celeriac._pydantic import Models
from celeriac._redaction import Redaction, checked
from celeriac._request import Context, current_request
from celeriac.backends.base import EXTENDED_FIELDS, ResultMeta
from celeriac.canvas import Signature
from celeriac.canvas.primitives import gathered
from celeriac.config import closest_of
from celeriac.exceptions import Ignore, ImproperlyConfigured, MaxRetriesExceededError, Retry
from celeriac.result import AsyncResult, ResultNode
from celeriac.worker.eager import apply_eagerly

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import EagerResult

P = ParamSpec("P")
R = TypeVar("R")

#: Options ``@app.task(...)`` accepts besides ``name``, ``bind``, ``base`` and ``typing``.
TASK_OPTIONS: dict[str, Any] = {
    "max_retries": 3,
    "default_retry_delay": 180.0,
    "autoretry_for": (),
    "dont_autoretry_for": (),
    "retry_kwargs": {},
    "retry_backoff": False,
    "retry_backoff_max": 600,
    "retry_jitter": True,
    "throws": (),
    "time_limit": None,
    "soft_time_limit": None,
    "acks_late": None,
    "reject_on_worker_lost": None,
    "ignore_result": None,
    "track_started": None,
    "serializer": None,
    "compression": None,
    "queue": None,
    "priority": None,
    "expires": None,
    "rate_limit": None,
    "store_errors_even_if_ignored": None,
    "unique_for": None,
    "unique_until": None,
    "sensitive": False,
    "pydantic": False,
    "pydantic_strict": False,
    "pydantic_context": None,
    "pydantic_dump_kwargs": None,
}


class Task(Generic[P, R]):
    """A registered task. Call it to run the function here; ``delay`` to send it to a worker.

    Subclass it (``@app.task(base=MyTask)``) to add ``on_success``, ``on_failure``, ``on_retry``,
    ``after_return`` or ``before_start``; they run in the worker, around each call.
    """

    def __init__(
        self,
        app: Celeriac,
        fn: Callable[..., Any],
        *,
        name: str,
        bind: bool = False,
        typing: bool | None = None,
        **options: Any,
    ) -> None:
        unknown = set(options) - set(TASK_OPTIONS)
        if unknown:
            raise TypeError(
                f"unknown task option(s) {sorted(unknown)} for {name!r}"
                + closest_of(sorted(unknown)[0], TASK_OPTIONS)
            )
        self.app = app
        self.fn = fn
        self.name = name
        self.bind = bind
        self.typing = app.conf.task_typing if typing is None else typing
        for key, default in TASK_OPTIONS.items():
            setattr(self, key, options.get(key, getattr(type(self), key, default)))
        if self.unique_for is not None or self.unique_until is not None:
            from celeriac.unique.keys import check_task_options

            check_task_options(name, self.unique_for, self.unique_until)
        self._models: Models | None = None
        if self.pydantic:
            self._models = Models(
                fn,
                task_name=name,
                app=app,
                strict=bool(self.pydantic_strict),
                context=self.pydantic_context,
                dump_kwargs=self.pydantic_dump_kwargs,
            )
            self.fn = self._models.wrap()
        self.is_async = inspect.iscoroutinefunction(fn)
        self._signature = inspect.signature(fn)
        self._arity = _plain_arity(self._signature, bind)
        #: Hides the arguments ``sensitive`` names wherever they are shown (a false value when none).
        self.redaction = Redaction(
            checked(self.sensitive, self._signature, name, bind), self._signature, bind
        )
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    # configuration a subclass may set as class attributes
    max_retries: int | None
    default_retry_delay: float
    autoretry_for: tuple[type[BaseException], ...]
    dont_autoretry_for: tuple[type[BaseException], ...]
    retry_kwargs: dict[str, Any]
    retry_backoff: bool | float
    retry_backoff_max: float
    retry_jitter: bool
    throws: tuple[type[BaseException], ...]
    time_limit: float | None
    soft_time_limit: float | None
    acks_late: bool | None
    reject_on_worker_lost: bool | None
    ignore_result: bool | None
    track_started: bool | None
    serializer: str | None
    compression: str | None
    queue: str | None
    priority: int | None
    expires: float | datetime | None
    rate_limit: str | float | None
    store_errors_even_if_ignored: bool | None
    unique_for: float | None
    unique_until: str | None
    sensitive: bool | Collection[str]
    pydantic: bool
    pydantic_strict: bool
    pydantic_context: dict[str, Any] | None
    pydantic_dump_kwargs: dict[str, Any] | None

    def __repr__(self) -> str:
        return f"<@task: {self.name}>"

    # -- running here -------------------------------------------------------------------------------
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function in this process, now, like a plain call."""
        result: R = self.run(*args, **kwargs)
        return result

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Call the function (with the task first when it is bound); what a worker runs."""
        return self.fn(self, *args, **kwargs) if self.bind else self.fn(*args, **kwargs)

    @property
    def request(self) -> Context:
        """The current call's context; an empty one outside a worker."""
        return current_request() or Context()

    def check_arguments(self, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        """Raise TypeError if ``args``/``kwargs`` do not fit the function's signature."""
        arity = self._arity
        if arity is not None and not kwargs and arity[0] <= len(args) <= arity[1]:
            return  # the common case, without binding (a worker checks every message)
        params = (None, *args) if self.bind else tuple(args)
        try:
            self._signature.bind(*params, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{self.name}() {exc}") from None

    # -- sending ------------------------------------------------------------------------------------
    def delay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """Send the task with these arguments; return a handle to its result."""
        return self.apply_async(args, kwargs)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> AsyncResult[R]:
        """``delay`` for code running in an event loop."""
        return await self.aapply_async(args, kwargs)

    def apply_async(
        self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[R]:
        """Send the task with Celery's options (countdown, eta, expires, queue, priority, ...)."""
        if self._models is not None:
            args, kwargs = self._models.dump_arguments(args or (), kwargs or {}, bound=self.bind)
        return self.app.send_task(self.name, args, kwargs, task=self, **options)

    async def aapply_async(
        self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[R]:
        """``apply_async`` for code running in an event loop."""
        if self._models is not None:
            args, kwargs = self._models.dump_arguments(args or (), kwargs or {}, bound=self.bind)
        return await self.app.asend_task(self.name, args, kwargs, task=self, **options)

    def apply(
        self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> EagerResult[R]:
        """Run the task here and now, as a worker would (retries included); return its result."""
        return apply_eagerly(self, list(args or ()), dict(kwargs or {}), options)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task with partial arguments."""
        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: parent results are not passed to it."""
        return Signature(self.name, args, kwargs, immutable=True, app=self.app)

    def signature(
        self, args: Sequence[Any] | None = None, kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A signature of this task with these arguments and send options (Celery's long form of ``s``)."""
        return Signature(self.name, tuple(args or ()), dict(kwargs or {}), options=options, app=self.app)

    def map(self, it: Iterable[Any]) -> canvas.xmap:
        """One message that calls this task for each item of ``it`` (Celery's ``celery.map``)."""
        return canvas.xmap(self.s(), it, app=self.app)

    def starmap(self, it: Iterable[Sequence[Any]]) -> canvas.xstarmap:
        """One message that calls this task with each item of ``it`` as its arguments."""
        return canvas.xstarmap(self.s(), it, app=self.app)

    def chunks(self, it: Iterable[Sequence[Any]], n: int) -> canvas.chunks:
        """``starmap`` over ``it`` split into messages of ``n`` items, sent as a group."""
        return canvas.chunks(self.s(), it, n, app=self.app)

    def AsyncResult(self, task_id: str) -> AsyncResult[R]:
        """The result handle of this task's run with id ``task_id``."""
        return AsyncResult(task_id, app=self.app)

    def replace(self, sig: Signature) -> NoReturn:
        """End this run by sending ``sig`` in its place.

        ``sig`` takes over this task's id (callers waiting on it get ``sig``'s result), its place in a
        chain (the rest of the chain follows ``sig``) and in a chord's header, and its callbacks and errbacks.
        This run stores no result of its own. A group is replaced by a chord that gathers its results.

        Raises:
            ImproperlyConfigured: ``sig`` is an empty chain, or already part of a chord (as Celery).
        """
        request = self.request
        if request.id is None or request.called_directly:
            raise RuntimeError(f"{self.name}.replace() can only be called by a task a worker runs")
        sig = canvas.maybe_signature(sig, self.app).clone()
        if "chord" in sig.options:
            raise ImproperlyConfigured("A signature replacing a task must not be part of a chord")
        if isinstance(sig, canvas.chain) and not sig.tasks:
            raise ImproperlyConfigured(
                "Cannot replace with an empty chain"
            )  # Celery's words: code matches them
        if isinstance(sig, canvas.group):
            sig = gathered(sig)
        elif isinstance(sig, canvas.chain) and isinstance(last := sig.tasks[-1], canvas.group):
            # The chain's result is its last step's: a group there must give one result, the list.
            sig = canvas.chain(*sig.tasks[:-1], gathered(last), app=self.app)
        sig.freeze(request.id)
        for callback in canvas.listed(request.callbacks):
            sig.link(canvas.maybe_signature(callback, self.app))
        for errback in canvas.listed(request.errbacks):
            sig.link_error(canvas.maybe_signature(errback, self.app))
        # How deep replacements go, as Celery counts it: on the replacement, its steps and the chain's rest.
        nesting = (request.replaced_task_nesting or 0) + 1
        for step in sig.tasks if isinstance(sig, canvas.chain) else [sig]:
            step.set(replaced_task_nesting=nesting)
        if request.chain:
            rest = [canvas.maybe_signature(step, self.app) for step in reversed(request.chain)]
            for step in rest:
                step.set(replaced_task_nesting=nesting)
            sig = canvas.chain(sig, *rest, app=self.app)
        if request.chord and request.group:
            sig._attach(
                {"group_id": request.group, "group_index": request.group_index, "chord": request.chord}
            )
        sig.apply_async(parent_id=request.id, root_id=request.root_id or request.id)
        raise Ignore(f"replaced by {sig!r}")

    def add_to_chord(self, sig: Signature, lazy: bool = False) -> Signature | ResultNode:
        """Add ``sig`` to the header of the chord this task is part of (Celery's ``add_to_chord``): the
        chord's body then waits for its result too, and gets it beside this task's.

        Sends it now and returns its result; with ``lazy``, returns the signature, ready to send.

        Raises:
            ValueError: this task is not part of a chord.
        """
        sig, group_id = self._chord_member(sig)
        self.app.run(self._grow_chord(group_id))
        return sig if lazy else sig.apply_async()

    async def aadd_to_chord(self, sig: Signature, lazy: bool = False) -> Signature | ResultNode:
        """``add_to_chord`` for ``async def`` tasks."""
        sig, group_id = self._chord_member(sig)
        await self._grow_chord(group_id)
        return sig if lazy else await sig.aapply_async()

    async def _grow_chord(self, group_id: str) -> None:
        await self.app.backend().chord_grow(group_id, 1)  # the backend of the loop this runs on

    def _chord_member(self, sig: Signature) -> tuple[Signature, str]:
        request = self.request
        if not request.chord or not request.group:
            raise ValueError(f"{self.name}: the running task is not part of any chord")
        sig = canvas.maybe_signature(sig, self.app).clone()
        sig.set(group_id=request.group, group_index=request.group_index, chord=request.chord)
        sig.set(root_id=request.root_id)
        sig.freeze()
        return sig, request.group

    # -- reporting progress -------------------------------------------------------------------------
    def update_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        *,
        traceback: str | None = None,
    ) -> None:
        """Store ``state`` with ``meta`` as the result record of ``task_id`` (default: the running task's),
        for clients to read while the task runs: ``AsyncResult.state`` is ``state`` and ``.info`` is
        ``meta`` (Celery's layout, e.g. ``state="PROGRESS", meta={"current": 3, "total": 10}``).

        The task's own end overwrites it. Stored from the process running the task, through the app's
        result backend, before this returns. In an ``async def`` task, ``await aupdate_state(...)``
        instead, so the worker's loop is not held up. Under eager mode (``apply``) nothing is stored.

        Raises:
            ValueError: no ``state``, or no ``task_id`` and no task running.
        """
        record = self._state_record(task_id, state, meta, traceback)
        if record is not None:
            self.app.run(self._store_state(record))

    async def aupdate_state(
        self,
        task_id: str | None = None,
        state: str | None = None,
        meta: Any = None,
        *,
        traceback: str | None = None,
    ) -> None:
        """``update_state`` for ``async def`` tasks and other code running in an event loop."""
        record = self._state_record(task_id, state, meta, traceback)
        if record is not None:
            await self._store_state(record)

    async def _store_state(self, record: ResultMeta) -> None:
        await self.app.backend().store([record])

    def _state_record(
        self, task_id: str | None, state: str | None, meta: Any, traceback: str | None
    ) -> ResultMeta | None:
        request = self.request
        task_id = task_id or request.id
        if not task_id:
            raise ValueError(
                f"{self.name}.update_state() needs a task id: pass task_id=, or call it from a task that "
                "a worker runs"
            )
        if not state:
            raise ValueError(f"{self.name}.update_state() needs a state, e.g. state='PROGRESS'")
        own = task_id == request.id
        if own and request.is_eager:
            return None  # no worker stores this run's result: the EagerResult holds it
        record = ResultMeta(
            task_id=task_id,
            status=state,
            result=exception_to_dict(meta) if isinstance(meta, BaseException) else meta,
            traceback=traceback,
            date_done=self.app.now() if state in states.READY_STATES else None,
            # rpc:// sends the record to the caller of the running task; of another task, to nobody
            reply_to=(request.reply_to or "") if own else "",
        )
        if own:
            record.parent_id, record.group_id = request.parent_id, request.group
            if self.app.conf.result_extended:
                queue = request.delivery_info.get("routing_key")
                args, kwargs = self.redaction.values(request.args or (), request.kwargs or {})
                values = (self.name, args, kwargs, request.hostname, request.retries, queue)
                record.extended = dict(zip(EXTENDED_FIELDS, values, strict=True))
        return record

    # -- retrying -----------------------------------------------------------------------------------
    def retry(
        self,
        args: Sequence[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        exc: BaseException | None = None,
        throw: bool = True,
        eta: datetime | None = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Retry:
        """End this run and send the task again, later.

        Raises ``Retry`` (the worker re-sends the message with ``retries + 1``, then acks this one). When
        the task has used up ``max_retries``, raises ``exc`` if given, else ``MaxRetriesExceededError``.
        """
        request = self.request
        limit = self.max_retries if max_retries is None else max_retries
        if limit is not None and request.retries >= limit:
            if exc is not None:
                raise exc
            args, kwargs = self.redaction.values(request.args or (), request.kwargs or {})
            raise MaxRetriesExceededError(
                f"Can't retry {self.name}[{request.id}] args:{args} kwargs:{kwargs}"
            )
        when: float | datetime = (
            eta if eta is not None else (countdown if countdown is not None else self.default_retry_delay)
        )
        if args is not None:
            options["args"] = list(args)
        if kwargs is not None:
            options["kwargs"] = dict(kwargs)
        error = Retry(exc=exc, when=when, **options)
        if throw:
            raise error
        return error

    def backoff_countdown(self, retries: int) -> float:
        """The countdown ``autoretry_for`` uses for retry number ``retries`` (Celery's formula)."""
        if not self.retry_backoff:
            return float(self.retry_kwargs.get("countdown", self.default_retry_delay))
        factor = 1 if self.retry_backoff is True else float(self.retry_backoff)
        countdown: float = min(float(self.retry_backoff_max), factor * (2**retries))
        if self.retry_jitter:
            countdown = random.uniform(0, countdown)
        return max(0.0, countdown)

    # -- hooks, run by the worker around each call ---------------------------------------------------
    def before_start(self, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Called before the function runs."""

    def on_success(self, retval: Any, task_id: str, args: list[Any], kwargs: dict[str, Any]) -> None:
        """Called after the function returned."""

    def on_failure(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: str
    ) -> None:
        """Called after the function raised (retries excepted)."""

    def on_retry(
        self, exc: BaseException, task_id: str, args: list[Any], kwargs: dict[str, Any], einfo: str
    ) -> None:
        """Called when the run ends with a retry."""

    def after_return(
        self,
        status: str,
        retval: Any,
        task_id: str,
        args: list[Any],
        kwargs: dict[str, Any],
        einfo: str | None,
    ) -> None:
        """Called after every run, whatever its end."""


def _plain_arity(signature: inspect.Signature, bind: bool) -> tuple[int, int] | None:
    """(fewest, most) positional arguments a call may pass when it passes no keywords, for a function
    whose parameters are all plain positional ones; None when only binding can tell."""
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    params = list(signature.parameters.values())
    if any(p.kind not in plain for p in params) or (bind and not params):
        return None
    params = params[1:] if bind else params
    return sum(1 for p in params if p.default is inspect.Parameter.empty), len(params)


__all__ = ["TASK_OPTIONS", "Context", "Task", "current_request", "states"]
