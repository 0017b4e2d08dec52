"""Remote-control commands by name: the only ones a worker runs (D9).

A command is a function ``fn(state, **arguments)`` (a coroutine function works too) returning what the
worker replies; ``state`` is the worker's ``celeriac.worker.control.ControlState``. The worker's own
commands are in one registry; each app has another, ``app.control.commands``, for its users' commands,
looked up first. ``args`` name the positional arguments ``celeriac control <command> ...`` takes, with
the type each is converted to.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

__all__ = ["Handler", "Registry"]

F = TypeVar("F", bound=Callable[..., Any])

Kind = Literal["inspect", "control"]


@dataclass(frozen=True, slots=True)
class Handler:
    """One command: its name, its kind (``inspect`` only reads, ``control`` changes the worker), its
    function, and the positional arguments the command line takes for it."""

    name: str
    kind: Kind
    fn: Callable[..., Any]
    args: tuple[tuple[str, type], ...] = ()
    variadic: str | None = None
    help: str = ""


class Registry:
    """Commands by name, added with the ``inspect_command`` and ``control_command`` decorators."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def inspect_command(
        self,
        name: str | None = None,
        *,
        args: Sequence[tuple[str, type]] = (),
        variadic: str | None = None,
        alias: str | None = None,
    ) -> Callable[[F], F]:
        """Register a command that reports on a worker without changing it."""
        return self._adder("inspect", name, args, variadic, alias)

    def control_command(
        self,
        name: str | None = None,
        *,
        args: Sequence[tuple[str, type]] = (),
        variadic: str | None = None,
        alias: str | None = None,
    ) -> Callable[[F], F]:
        """Register a command that changes a worker (its limits, its queues, its life)."""
        return self._adder("control", name, args, variadic, alias)

    def _adder(
        self,
        kind: Kind,
        name: str | None,
        args: Sequence[tuple[str, type]],
        variadic: str | None,
        alias: str | None,
    ) -> Callable[[F], F]:
        def add(fn: F) -> F:
            doc = (fn.__doc__ or "").strip().splitlines()
            handler = Handler(name or fn.__name__, kind, fn, tuple(args), variadic, doc[0] if doc else "")
            self._handlers[handler.name] = handler
            if alias:
                self._handlers[alias] = handler
            return fn

        return add

    def get(self, name: str) -> Handler | None:
        """The command called ``name``, or None."""
        return self._handlers.get(name)

    def __iter__(self) -> Iterator[Handler]:
        return iter(self._handlers.values())

    def __contains__(self, name: object) -> bool:
        return name in self._handlers
