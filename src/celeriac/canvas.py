"""Signatures: a task call as data, in Celery's embedded form, and ``chain``.

A signature serialises as Celery does: ``{"task", "args", "kwargs", "options", "subtask_type",
"immutable"}``; that is how ``link``, ``link_error`` and chains travel inside a message.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.result import AsyncResult


class Signature(dict[str, Any]):
    """A task name with (partial) arguments and send options; a dict, as in Celery, so it embeds as is."""

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
        if data.get("subtask_type") == "chain":
            return chain(*(cls.from_dict(t, app=app) for t in data["kwargs"]["tasks"]), app=app)
        return cls(
            str(data["task"]),
            data.get("args") or (),
            data.get("kwargs") or {},
            options=data.get("options") or {},
            immutable=bool(data.get("immutable")),
            subtask_type=data.get("subtask_type"),
            app=app,
        )

    @property
    def name(self) -> str:
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

    def __repr__(self) -> str:
        args = ", ".join([*map(repr, self["args"]), *(f"{k}={v!r}" for k, v in self["kwargs"].items())])
        return f"{self.name}({args})"

    def clone(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> Signature:
        """A copy with more arguments and options; an immutable signature ignores the new arguments."""
        new_args = self.args if self.immutable else [*args, *self.args]
        new_kwargs = self.kwargs if self.immutable else {**self.kwargs, **(kwargs or {})}
        return Signature(
            self.name,
            new_args,
            new_kwargs,
            options={**self.options, **options},
            immutable=self.immutable,
            subtask_type=self["subtask_type"],
            app=self.app,
        )

    def set(self, immutable: bool | None = None, **options: Any) -> Signature:
        if immutable is not None:
            self["immutable"] = immutable
        self["options"].update(options)
        return self

    def link(self, callback: Signature) -> Signature:
        self["options"].setdefault("link", []).append(callback)
        return callback

    def link_error(self, errback: Signature) -> Signature:
        self["options"].setdefault("link_error", []).append(errback)
        return errback

    def __or__(self, other: Signature) -> chain:  # type: ignore[override]
        return chain(self, other, app=self.app or other.app)

    def _app(self) -> Celeriac:
        if self.app is None:
            raise RuntimeError(f"signature {self!r} has no app: make it with task.s() or app.signature()")
        return self.app

    def _send_args(
        self, args: Sequence[Any], kwargs: dict[str, Any] | None, options: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any], dict[str, Any]]:
        merged = self.clone(args, kwargs)
        opts = {**merged.options, **options}
        opts.pop("subtask_type", None)
        return merged.args, merged.kwargs, opts

    def apply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        app = self._app()
        a, k, opts = self._send_args(args, kwargs, options)
        return app.send_task(self.name, a, k, task=app.tasks.get(self.name), **opts)

    async def aapply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        app = self._app()
        a, k, opts = self._send_args(args, kwargs, options)
        return await app.asend_task(self.name, a, k, task=app.tasks.get(self.name), **opts)

    def delay(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        return self.apply_async(args, kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task here, now, with these arguments added."""
        merged = self.clone(args, kwargs)
        return self._app().get_task(self.name)(*merged.args, **merged.kwargs)


signature = Signature


class chain(Signature):
    """Tasks run one after another, each getting the previous result as its first argument."""

    def __init__(self, *tasks: Signature, app: Celeriac | None = None) -> None:
        flat: list[Signature] = []
        for task in tasks:
            flat.extend(task.tasks if isinstance(task, chain) else [task])
        super().__init__(
            "celery.chain",
            (),
            {"tasks": flat},
            subtask_type="chain",
            app=app or next((t.app for t in flat if t.app), None),
        )

    @property
    def tasks(self) -> list[Signature]:
        return list(self["kwargs"]["tasks"])

    def __or__(self, other: Signature) -> chain:  # type: ignore[override]
        return chain(*self.tasks, other, app=self.app)

    def apply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        first, rest, results = self._split()
        first.apply_async(args, kwargs, chain=rest, **options)
        return results

    async def aapply_async(
        self, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None, **options: Any
    ) -> AsyncResult[Any]:
        first, rest, results = self._split()
        await first.aapply_async(args, kwargs, chain=rest, **options)
        return results

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncResult[Any]:
        """Send the chain (as Celery does when a chain is called)."""
        return self.apply_async(args, kwargs or None)

    def _split(self) -> tuple[Signature, list[dict[str, Any]] | None, AsyncResult[Any]]:
        """The first task, the rest as it travels, and the last task's result (parents linked)."""
        from celeriac.result import AsyncResult

        tasks = [t.clone() for t in self.tasks]
        if not tasks:
            raise ValueError("an empty chain has nothing to run")
        result: AsyncResult[Any] | None = None
        for task in tasks:
            task["options"].setdefault("task_id", str(uuid.uuid4()))
            result = AsyncResult(
                task["options"]["task_id"], app=self._app(), task_name=task.name, parent=result
            )
        assert result is not None
        # On the wire the rest of a chain is reversed: the next task is the last item.
        rest = [dict(t) for t in reversed(tasks[1:])]
        return tasks[0], rest or None, result
