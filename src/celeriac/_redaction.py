"""Secrets in task arguments: the ``sensitive`` task option, and what is shown in their place.

``sensitive=True`` hides every argument; a list of parameter names hides those, whether they are
passed by position or by keyword. A hidden value is shown as ``'***'``: the client writes the
``argsrepr``/``kwargsrepr`` headers from the hidden values, and a worker or a CLI that knows the task
hides them again wherever it shows arguments (events, inspect, dead letters, extended results, error
messages), whatever the sender wrote. Only the task itself receives the real values.
"""

from __future__ import annotations

import inspect
from collections.abc import Collection, Sequence
from typing import Any

from celeriac.exceptions import ConfigurationError
from celeriac.protocol.codec import safe_repr

__all__ = ["HIDDEN", "Redaction", "checked"]

#: What stands in for a hidden argument.
HIDDEN = "***"


def checked(sensitive: Any, signature: inspect.Signature, task: str, bind: bool) -> bool | frozenset[str]:
    """The ``sensitive`` option, checked against the task's parameters.

    Raises:
        ConfigurationError: it is neither a boolean nor a collection of parameter names, or names a
            parameter the function does not have.
    """
    if isinstance(sensitive, bool):
        return sensitive
    if isinstance(sensitive, str) or not isinstance(sensitive, Collection):
        raise ConfigurationError(
            f"task {task!r}: sensitive must be True or a list of argument names, got {sensitive!r}"
        )
    names = frozenset(sensitive)
    params = list(signature.parameters.values())[1 if bind else 0 :]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    known = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    bad = sorted(name for name in names if not isinstance(name, str) or (name not in known and not takes_any))
    if bad:
        raise ConfigurationError(
            f"task {task!r}: sensitive names {bad}, which are not its parameters ({', '.join(sorted(known))})"
        )
    return names


class Redaction:
    """Hides the sensitive arguments of one task (``hidden``: True for all, or parameter names)."""

    def __init__(self, hidden: bool | frozenset[str], signature: inspect.Signature, bind: bool) -> None:
        self.hidden = hidden
        params = list(signature.parameters.values())[1 if bind else 0 :]
        self._positional = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]

    def __bool__(self) -> bool:
        return bool(self.hidden)

    def values(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """``args`` and ``kwargs`` with the sensitive values replaced by ``HIDDEN``."""
        hidden = self.hidden
        if hidden is True:
            return [HIDDEN] * len(args), dict.fromkeys(kwargs, HIDDEN)
        if not hidden:
            return list(args), dict(kwargs)
        names = self._positional
        shown_args = [
            HIDDEN if index < len(names) and names[index] in hidden else value
            for index, value in enumerate(args)
        ]
        return shown_args, {key: HIDDEN if key in hidden else value for key, value in kwargs.items()}

    def reprs(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[str, str]:
        """The ``argsrepr`` and ``kwargsrepr`` of the hidden values, as the client writes them."""
        shown_args, shown_kwargs = self.values(args, kwargs)
        return safe_repr(tuple(shown_args)), safe_repr(shown_kwargs)
