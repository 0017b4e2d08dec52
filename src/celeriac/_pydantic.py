"""``@app.task(pydantic=True)``: arguments validated into pydantic models, models returned as plain data.

Celery 5.5's option, with its behaviour: in the worker, each argument whose parameter is annotated with a
``BaseModel`` subclass (or ``Optional`` of one) is validated into that model (``pydantic_strict``,
``pydantic_context``); a returned model of the annotated return class is dumped (``model_dump`` with
``mode="json"`` and ``pydantic_dump_kwargs``). On the caller's side a model passed for such a parameter is
sent as its dump, so callers may pass models or dicts.

pydantic is an optional dependency (``pip install 'celeriac[pydantic]'``), imported only by tasks that
ask for it.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

from celeriac.exceptions import MissingDependency

__all__ = ["Models"]


def _model_of(annotation: Any, base: type) -> type | None:
    """The model class ``annotation`` names, directly or as ``Optional[...]``; None otherwise."""
    if isinstance(annotation, type) and issubclass(annotation, base):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return _model_of(members[0], base)
    return None


class Models:
    """The models a task function's annotations name, and the wrapping that validates and dumps them."""

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        task_name: str,
        app: object,
        strict: bool = False,
        context: dict[str, Any] | None = None,
        dump_kwargs: dict[str, Any] | None = None,
    ) -> None:
        try:
            import pydantic  # deferred: an optional dependency, for the tasks that ask for it
        except ModuleNotFoundError:
            raise MissingDependency("pydantic=True", "pydantic") from None
        base = pydantic.BaseModel
        self.base = base
        self.fn = fn
        self.signature = inspect.signature(fn)
        try:
            hints = typing.get_type_hints(fn)
        except (NameError, AttributeError, TypeError):  # a forward reference it cannot resolve
            hints = {name: p.annotation for name, p in self.signature.parameters.items()}
            hints["return"] = self.signature.return_annotation
        self.params = {
            name: model
            for name in self.signature.parameters
            if (model := _model_of(hints.get(name), base)) is not None
        }
        self.returns = _model_of(hints.get("return"), base)
        self.strict = strict
        # Celery's context keys, so that validators written for Celery find what they read.
        self.context = {**(context or {}), "celery_app": app, "celery_task_name": task_name}
        self.dump_kwargs = {"mode": "json", **(dump_kwargs or {})}

    def wrap(self) -> Callable[..., Any]:
        """The task function with its model arguments validated and a returned model dumped."""
        fn = self.fn
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                args, kwargs = self._validated(args, kwargs)
                return self._dumped(await fn(*args, **kwargs))

            return run_async

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = self._validated(args, kwargs)
            return self._dumped(fn(*args, **kwargs))

        return run

    def dump_arguments(
        self, args: Sequence[Any], kwargs: dict[str, Any], *, bound: bool
    ) -> tuple[list[Any], dict[str, Any]]:
        """A caller's arguments with the models passed for model parameters dumped to plain data."""
        names = [
            name
            for name, p in self.signature.parameters.items()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ][1 if bound else 0 :]
        dumped = [self._dump_for(names[i] if i < len(names) else None, v) for i, v in enumerate(args)]
        return dumped, {name: self._dump_for(name, value) for name, value in kwargs.items()}

    def _dump_for(self, name: str | None, value: Any) -> Any:
        if name in self.params and isinstance(value, self.base):
            return value.model_dump(**self.dump_kwargs)
        return value

    def _validated(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        bound = self.signature.bind(*args, **kwargs)
        for name, model in self.params.items():
            if name in bound.arguments and bound.arguments[name] is not None:
                bound.arguments[name] = model.model_validate(  # type: ignore[attr-defined]
                    bound.arguments[name], strict=self.strict, context=self.context
                )
        return bound.args, bound.kwargs

    def _dumped(self, value: Any) -> Any:
        if self.returns is not None and isinstance(value, self.returns):
            return value.model_dump(**self.dump_kwargs)  # type: ignore[attr-defined]
        return value
