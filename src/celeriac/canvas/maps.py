"""One task over many items: ``xmap`` and ``xstarmap`` (one message each), and ``chunks`` (starmaps of
``n`` items each, sent as a group)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from celeriac.canvas.primitives import group
from celeriac.canvas.signature import Signature, _Composite, _copy, maybe_signature
from celeriac.result import GroupResult

if TYPE_CHECKING:
    from celeriac.app import Celeriac
    from celeriac.canvas._plan import Plan
    from celeriac.result import ResultNode


class chunks(_Composite[GroupResult[Any]], subtask_type="chunks"):
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
        made["options"].update(_copy(self["options"]))
        return made

    def _step(self) -> Signature:
        return self.group()

    def freeze(self, _id: str | None = None) -> ResultNode:
        """Refused: a chunks signature has no id of its own, its group has (``group().freeze()``)."""
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
